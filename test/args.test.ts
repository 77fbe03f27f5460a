/*
 * The one command-line parser (demo/args.ts) of the demo, the stress command and the benchmarks:
 * every flag they document, one size reader for all, and a bad command line is exit status 2 with
 * a message naming the flag.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { parseCommandLine, parseSize, UsageError } from "../demo/args.js";
import { DEMO_OPTIONS, parseArgs as parseDemoArgs } from "../demo/cli.js";

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
    ["64MB", 64 * MiB],
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
  ["demo", "../demo/main.js", ["--size", "lots"], /--size: cannot read "lots"/],
  ["demo", "../demo/main.js", ["--port", "8089", "--seconds", "0.3"], /--port is the inspector's port and needs --web/],
  ["stress", "../demo/stress.js", ["--fault-rate", "2"], /--fault-rate: "2" is not a number in 0\.\.1/],
  ["stress", "../demo/stress.js", ["--nodebug"], /unknown option "--nodebug"; did you mean "--no-debug"\?/],
  ["bench", "../bench/run.js", ["--quik"], /unknown option "--quik"; did you mean "--quick"\?/],
  ["bench", "../bench/run.js", ["--out"], /--out needs a value/],
] as const) {
  test(`${prog} ${args.join(" ")}: exit status 2 and a message`, () => {
    const r = spawnSync(process.execPath, [fileURLToPath(new URL(script, import.meta.url)), ...args], { encoding: "utf8", timeout: 30_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, message);
  });
}
