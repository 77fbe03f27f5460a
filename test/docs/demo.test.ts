/* The demo (`npm start`) as a child process: a short run must end with validate() passing. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";

const MAIN = fileURLToPath(new URL("../../demo/main.js", import.meta.url));

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function runDemo(args: string[], timeoutMs: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

const VALIDATE_OK = /^validate: ok — (\d+)\/(\d+) pages free, 0 leaked$/m;

describe("demo (npm start)", () => {
  test("--seconds 2 --workers 2 runs, empties the heap and validates", { timeout: 120_000 }, async () => {
    const r = await runDemo(["--seconds", "2", "--workers", "2", "--seed", "0x5eed"], 110_000);
    const why = `exit ${r.code} ${r.signal ?? ""}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
    assert.equal(r.code, 0, why);
    const m = VALIDATE_OK.exec(r.stdout);
    assert.ok(m !== null, `no validate line\n${why}`);
    assert.equal(m[1], m[2], "every page free");
    assert.match(r.stdout, /seed 0x00005eed/);
    // Not a terminal: the live view is plain lines, without cursor movement.
    assert.match(r.stdout, /^\[\s*[0-9.]+s\] ops\/s /m);
    assert.doesNotMatch(r.stdout, /\x1b\[/);
    assert.equal(r.stderr, "");
  });

  test("--help explains every flag and exits 0", { timeout: 30_000 }, async () => {
    const r = await runDemo(["--help"], 25_000);
    assert.equal(r.code, 0, r.stderr);
    for (const flag of ["--workers", "--seconds", "--size", "--seed", "--help"]) assert.match(r.stdout, new RegExp(flag));
    assert.doesNotMatch(r.stdout, /validate:/, "--help runs nothing");
  });

  test("a --size too small for --workers speaks of the demo's flags, not of cpus or maxSize", { timeout: 30_000 }, async () => {
    const r = await runDemo(["--size", "100k", "--workers", "2"], 25_000);
    assert.equal(r.code, 2);
    assert.equal(
      r.stderr,
      "demo: --size 102400 bytes is too small for --workers 2: the heap's own metadata (per worker, and one for the main thread) would leave too few pages; give --size 262144 or more (256 KiB), or fewer --workers\n" +
        'Run "npm start -- --help" for the options.\n',
    );
    assert.doesNotMatch(r.stderr, /cpus|maxSize/);
    assert.equal((await runDemo(["--size", "256k", "--workers", "2", "--seconds", "0.2"], 25_000)).code, 0);
  });

  test("a bad option exits 2 with a message", { timeout: 30_000 }, async () => {
    const r = await runDemo(["--size", "lots"], 25_000);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--size/);
  });
});
