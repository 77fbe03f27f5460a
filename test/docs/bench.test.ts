/*
 * Smoke test of the benchmark suite: `node dist/bench/run.js --smoke --json` (every run once, as
 * short as it can be: a few seconds) must exit 0, print one JSON document with every section, and
 * pass its own leak checks (validate() and every page
 * free after each shmalloc run). Speed targets are never asserted here: timed tests on a shared
 * machine would be flaky, and the figures are the benchmark's report, not a test.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../../..");

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
  "peers",
];

interface BenchDoc {
  meta: { node: string; v8: string; cpu: string; cores: number; quick: boolean; smoke: boolean; peers: { ran: boolean; note: string } };
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
  // No --peers: the Wasm peers are skipped, with a note saying how to run them.
  assert.equal(doc.meta.peers.ran, false);
  assert.match(doc.meta.peers.note, /not run: give --peers DIR/);
  assert.deepEqual((doc.sections.peers!.data as { ran: boolean }).ran, false);
});

/** The Wasm peers' folder: SHMALLOC_PEERS, or ../shared/peers beside the repository or one level up. */
function peersDir(): string | null {
  const candidates = [process.env.SHMALLOC_PEERS, resolve(repo, "../shared/peers"), resolve(repo, "../../shared/peers")];
  for (const c of candidates) if (c !== undefined && c !== "" && existsSync(join(c, "wasm-peers.mjs"))) return c;
  return null;
}

interface WorkloadRows {
  rows: { workers: number; opsPerSec: Record<string, { value: number } | null> }[];
}

test("bench --peers DIR: with the loader there, mimalloc and dlmalloc run every workload; without it, a note", { timeout: 180_000 }, async (t) => {
  // A folder without the loader: the peers are skipped with a note naming it, the rest runs.
  const empty = mkdtempSync(join(tmpdir(), "shmalloc-no-peers-"));
  try {
    const r = await runBench(["--smoke", "--json", "--only", "pair-64", "--peers", empty]);
    assert.equal(r.code, 0, r.stderr.slice(-2000));
    const doc = JSON.parse(r.stdout) as BenchDoc;
    assert.equal(doc.meta.peers.ran, false);
    assert.equal(doc.meta.peers.note, `Wasm peers not run: ${empty} has no wasm-peers.mjs`);
    const rows = (doc.sections["pair-64"]!.data as WorkloadRows).rows;
    assert.equal(rows[0]!.opsPerSec.mimalloc, undefined, "no mimalloc column without the peers");
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
  const dir = peersDir();
  if (dir === null) {
    t.skip("no Wasm peers folder here (set SHMALLOC_PEERS to the folder of wasm-peers.mjs)");
    return;
  }
  const r = await runBench(["--smoke", "--json", "--only", "pair-64,cache-scratch,glibc-simple", "--peers", dir]);
  assert.equal(r.code, 0, r.stderr.slice(-4000));
  const doc = JSON.parse(r.stdout) as BenchDoc;
  assert.deepEqual(doc.errors, []);
  assert.equal(doc.meta.peers.ran, true);
  for (const section of ["pair-64", "cache-scratch"]) {
    const rows = (doc.sections[section]!.data as WorkloadRows).rows;
    assert.deepEqual(rows.map((x) => x.workers), [1, 2], `${section}: 1 and 2 workers`);
    for (const row of rows) {
      for (const kind of ["shmalloc", "mimalloc", "dlmalloc"]) {
        const v = row.opsPerSec[kind]?.value;
        assert.ok(typeof v === "number" && v > 0, `${section}, ${row.workers} worker(s): ${kind} measured (${String(v)})`);
      }
    }
  }
  const peers = doc.sections.peers!.data as { ran: boolean; rows: { workload: string; workers: number; nsPerOpPerWorker: Record<string, number> }[] };
  assert.equal(peers.ran, true);
  const pair2 = peers.rows.find((x) => x.workload === "pair-64" && x.workers === 2)!;
  assert.deepEqual(Object.keys(pair2.nsPerOpPerWorker), ["shmalloc", "thing", "js", "mimalloc", "dlmalloc"]);
});
