/*
 * The one command-line parser (demo/args.ts) of the demo, the stress command and the benchmarks:
 * every flag they document, one size reader for all, and a bad command line is exit status 2 with
 * a message naming the flag.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { parseCommandLine, parseSize, UsageError } from "../../demo/args.js";
import { DEMO_OPTIONS, parseArgs as parseDemoArgs } from "../../demo/cli.js";

const MiB = 1 << 20;

function usage(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof UsageError, `expected a UsageError, got ${String(e)}`);
    return e.message;
  }
  assert.fail("expected a UsageError");
}

test("one size reader: bytes or a binary unit", () => {
  const CASES: [string, number][] = [
    ["67108864", 64 * MiB],
    ["64m", 64 * MiB],
    ["64M", 64 * MiB],
    ["64MiB", 64 * MiB],
    ["4M", 4 * MiB],
    ["512k", 512 * 1024],
    ["1g", 1024 * MiB],
    ["1.5m", 1.5 * MiB],
    [" 2m ", 2 * MiB],
    ["4096b", 4096],
  ];
  for (const [text, bytes] of CASES) assert.equal(parseSize(text), bytes, text);
  assert.equal(usage(() => parseSize("lots")), '--size: cannot read "lots" as a size (try 64m, 256MiB, 4M or a number of bytes)');
  assert.equal(usage(() => parseSize("0")), '--size: "0" is not a positive size');
  assert.equal(usage(() => parseSize("2g")), "--size: 2g is larger than the largest heap, 2147479552 bytes (2 GiB - 4 KiB)");
  assert.equal(usage(() => parseSize("-4m")), '--size: cannot read "-4m" as a size (try 64m, 256MiB, 4M or a number of bytes)');
  // A fraction of a byte is refused; a fraction with a unit is fine when it gives whole bytes.
  assert.equal(usage(() => parseSize("1.5")), '--size: "1.5" is not a whole number of bytes (1.5)');
  assert.equal(usage(() => parseSize("0.3k")), '--size: "0.3k" is not a whole number of bytes (307.2)');
  assert.equal(parseSize("0.5k"), 512);
  // SI spellings mean powers of 1000 elsewhere: refused with the binary spelling to use.
  assert.equal(usage(() => parseSize("4MB")), '--size: "4MB" is ambiguous: sizes here are binary, so write 4m or 4MiB (4 × 1024² bytes), not MB');
  assert.equal(usage(() => parseSize("512kb")), '--size: "512kb" is ambiguous: sizes here are binary, so write 512k or 512KiB (512 × 1024 bytes), not KB');
  assert.equal(usage(() => parseSize("1GB")), '--size: "1GB" is ambiguous: sizes here are binary, so write 1g or 1GiB (1 × 1024³ bytes), not GB');
});

test("a flag given twice is refused, naming it", () => {
  assert.equal(usage(() => parseCommandLine(["--size", "4m", "--size=8m"], DEMO_OPTIONS)), "--size is given twice (--size 4m, then --size 8m): give it once");
  assert.equal(usage(() => parseCommandLine(["--web", "--web"], DEMO_OPTIONS)), "--web is given twice (--web, then --web): give it once");
  assert.equal(usage(() => parseCommandLine(["-h", "--help"], DEMO_OPTIONS)), "--help is given twice (-h, then --help): give it once");
});

test("parseArgs of node:util under one table: values, switches, and what it refuses", () => {
  assert.deepEqual({ ...parseCommandLine(["--workers", "3", "--size=8m", "-h"], DEMO_OPTIONS) }, { workers: "3", size: "8m", help: true });
  assert.equal(usage(() => parseCommandLine(["--wrokers", "3"], DEMO_OPTIONS)), 'unknown option "--wrokers"; did you mean "--workers"?');
  assert.equal(usage(() => parseCommandLine(["--xyzzy"], DEMO_OPTIONS)), 'unknown option "--xyzzy"');
  assert.equal(usage(() => parseCommandLine(["--workers"], DEMO_OPTIONS)), "--workers needs a value");
  assert.equal(usage(() => parseCommandLine(["--seconds", "-1"], DEMO_OPTIONS)), '--seconds needs a value (a value that starts with "-" is written --seconds=-VALUE)');
  assert.equal(usage(() => parseCommandLine(["--help=yes"], DEMO_OPTIONS)), "--help takes no value");
  assert.equal(usage(() => parseCommandLine(["7"], DEMO_OPTIONS)), 'unexpected argument "7": every argument is an --option');
});

test("the demo's flags keep their meaning", () => {
  const o = parseDemoArgs(["--workers", "4", "--seconds", "2.5", "--size", "8m", "--seed", "0x10"]);
  assert.deepEqual({ ...o }, { workers: 4, seconds: 2.5, size: 8 * MiB, seed: 16, seedGiven: true, help: false, web: false, port: 0 });
  assert.deepEqual({ ...parseDemoArgs(["--web", "--port", "8080"]) }, { ...parseDemoArgs([]), web: true, port: 8080, seconds: Infinity });
  assert.equal(parseDemoArgs(["--web", "--seconds", "3"]).seconds, 3);
  assert.equal(usage(() => parseDemoArgs(["--port", "65536"])), '--port: "65536" is not a whole number in 0..65535');
  assert.equal(usage(() => parseDemoArgs(["--port", "8080"])), "--port is the inspector's port and needs --web (add --web, or drop --port)");
  assert.equal(parseDemoArgs(["--seed", "hello"]).seed, parseDemoArgs(["--seed=hello"]).seed);
  assert.equal(usage(() => parseDemoArgs(["--workers", "257"])), '--workers: "257" is not a whole number in 1..256');
  assert.equal(usage(() => parseDemoArgs(["--seconds", "0"])), '--seconds: "0" is not a number of seconds in (0, 86400]');
  assert.equal(usage(() => parseDemoArgs(["--seed="])), "--seed needs a value");
});

for (const [prog, script, args, message] of [
  ["demo", "../../demo/main.js", ["--size", "lots"], /--size: cannot read "lots"/],
  ["demo", "../../demo/main.js", ["--port", "8089", "--seconds", "0.3"], /--port is the inspector's port and needs --web/],
  ["stress", "../../tools/stress/stress.js", ["--fault-rate", "2"], /--fault-rate: "2" is not a number in 0\.\.1/],
  ["stress", "../../tools/stress/stress.js", ["--nodebug"], /unknown option "--nodebug"; did you mean "--no-debug"\?/],
  ["bench", "../../bench/run.js", ["--quik"], /unknown option "--quik"; did you mean "--quick"\?/],
  ["bench", "../../bench/run.js", ["--out"], /--out needs a value/],
  ["demo", "../../demo/main.js", ["--size", "4MB"], /--size: "4MB" is ambiguous/],
  ["demo", "../../demo/main.js", ["--seconds", "1", "--seconds", "2"], /--seconds is given twice \(--seconds 1, then --seconds 2\): give it once/],
  ["stress", "../../tools/stress/stress.js", ["--size", "1.5"], /--size: "1\.5" is not a whole number of bytes/],
  ["stress", "../../tools/stress/stress.js", ["--debug", "--no-debug"], /--debug and --no-debug contradict each other/],
  ["bench", "../../bench/run.js", ["--quick", "--smoke"], /--quick and --smoke are two lengths of pass: give one of them/],
  ["bench", "../../bench/run.js", ["--only", "nosuchrun"], /--only "nosuchrun" matches no run; run ids start with one of pages, machine, kmalloc, nolock, storm, rcu, glibc-simple, pair-64, larson, xmalloc-test, mstress, cache-scratch, alloc-test \(e\.g\. /],
  ["bench", "../../bench/run.js", ["--only", ","], /--only "," names no run/],
  ["bench", "../../bench/run.js", ["--peers", " "], /--peers needs a value/],
] as const) {
  test(`${prog} ${args.join(" ")}: exit status 2 and a message`, () => {
    const r = spawnSync(process.execPath, [fileURLToPath(new URL(script, import.meta.url)), ...args], { encoding: "utf8", timeout: 30_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, message);
    // The same shape for every command: `<command>: <message>`, then one line pointing at --help.
    const how = prog === "demo" ? "npm start --" : `npm run ${prog} --`;
    assert.match(r.stderr, new RegExp(`^${prog}: [^\\n]+\\nRun "${how} --help" for the options\\.\\n$`));
    assert.equal(r.stdout, "");
  });
}
