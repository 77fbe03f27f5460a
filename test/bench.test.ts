/*
 * Smoke test of the benchmark suite: `node dist/bench/run.js --smoke --json` (every run once, as
 * short as it can be: a few seconds) must exit 0, print one JSON document with every section, and
 * pass its own leak checks (validate() and every page
 * free after each shmalloc run). Speed targets are never asserted here: timed tests on a shared
 * machine would be flaky, and the figures are the benchmark's report, not a test.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../..");

const SECTIONS = [
  "machine",
  "pages",
  "kmalloc",
  "nolock",
  "storm",
  "rcu",
  "glibc-simple",
  "larson",
  "xmalloc-test",
  "mstress",
  "cache-scratch",
  "alloc-test",
];

interface BenchDoc {
  meta: { node: string; v8: string; cpu: string; cores: number; quick: boolean; smoke: boolean };
  sections: Record<string, { title: string; data: unknown }>;
  targets: { pass: boolean | null }[];
  leakChecks: { run: string; ok: boolean; detail: string; validate: string }[];
  leaksOk: boolean;
  errors: string[];
}

function runBench(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [join(repo, "dist", "bench", "run.js"), ...args], { cwd: repo });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolvePromise({ code, stdout, stderr }));
  });
}

test("bench --smoke --json runs every section and passes its leak checks", { timeout: 180_000 }, async () => {
  const { code, stdout, stderr } = await runBench(["--smoke", "--json"]);
  assert.equal(code, 0, `the bench exited with ${code}; stderr:\n${stderr.slice(-4000)}`);
  let doc: BenchDoc;
  try {
    doc = JSON.parse(stdout) as BenchDoc;
  } catch (e) {
    assert.fail(`stdout is not one JSON document (${(e as Error).message}):\n${stdout.slice(0, 2000)}`);
  }
  assert.equal(doc.meta.quick, true);
  assert.equal(doc.meta.smoke, true);
  assert.equal(typeof doc.meta.v8, "string");
  assert.equal(typeof doc.meta.cpu, "string");
  for (const s of SECTIONS) {
    assert.ok(doc.sections[s] !== undefined, `section ${s} is missing`);
    assert.ok(doc.sections[s]!.data !== null && doc.sections[s]!.data !== undefined, `section ${s} has no data`);
  }
  assert.deepEqual(doc.errors, [], "benchmark runs failed");
  assert.ok(doc.leakChecks.length > 0, "no leak checks were run");
  for (const l of doc.leakChecks) {
    assert.ok(l.ok, `leak check of ${l.run} failed: validate: ${l.validate}; ${l.detail}`);
  }
  assert.equal(doc.leaksOk, true);
});
