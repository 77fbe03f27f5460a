/*
 * The stress command, short runs: it must exit 0 and print its PASS line.
 */
import { spawn } from "node:child_process";
import assert from "node:assert/strict";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const script = fileURLToPath(new URL("../../tools/stress/stress.js", import.meta.url));

function runStress(args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`stress ${args.join(" ")} did not finish within ${timeoutMs} ms; output so far:\n${out}`));
    }, timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

test("stress: 2 workers, 3 s, seed 42 passes", async () => {
  const { code, out } = await runStress(["--workers", "2", "--seconds", "3", "--seed", "42"], 60_000);
  assert.equal(code, 0, out);
  assert.match(out, /^PASS: 2 workers, 3 s, seed 42: /m, out);
  assert.match(out, /seed 42/);
});

test("stress: 4 workers, 2 s passes", async () => {
  const { code, out } = await runStress(["--workers", "4", "--seconds", "2", "--seed", "7"], 60_000);
  assert.equal(code, 0, out);
  assert.match(out, /^PASS: 4 workers, 2 s, seed 7: /m, out);
});

test("stress: --help explains the flags; a bad flag exits 2", async () => {
  const help = await runStress(["--help"], 20_000);
  assert.equal(help.code, 0, help.out);
  for (const flag of ["--workers", "--seconds", "--seed", "--fault-rate", "--size", "--no-debug"]) assert.ok(help.out.includes(flag), `--help mentions ${flag}`);
  const bad = await runStress(["--workers", "zero"], 20_000);
  assert.equal(bad.code, 2, bad.out);
});
