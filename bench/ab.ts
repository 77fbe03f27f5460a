/*
 * A/B of the fast paths: this build against another build of shmalloc, in one run.
 *
 *   npm run bench:ab -- --against DIR [--rounds N]
 *
 * DIR is another checkout of shmalloc, built (DIR/dist/src/index.js), e.g. a git worktree of an
 * earlier commit: `git worktree add ../old v0.1.0 && (cd ../old && npm ci && npm run build)`.
 * Each round runs every case once in a fresh process of each build, the two builds alternating,
 * so that both see the same load of a shared machine; a case's figure is its best over all rounds
 * (the least disturbed). The last column is this build against DIR: +3.0% is 3% slower.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const N = 1_000_000;

/** The cases, over the public API only, so that any build of the package can run them. */
const CASES: Record<string, string> = {
  "kmalloc/kfree 64 B": "for (let i = 0; i < N; i++) h.kfree(h.kmalloc(64));",
  "kmalloc/kfree 8 B x4 LIFO": "for (let i = 0; i < N / 4; i++) { const a = h.kmalloc(8), b = h.kmalloc(8), d = h.kmalloc(8), e = h.kmalloc(8); h.kfree(e); h.kfree(d); h.kfree(b); h.kfree(a); }",
  "cache alloc/free 48 B": "for (let i = 0; i < N; i++) c.free(c.alloc());",
  "allocPages/freePages 0": "for (let i = 0; i < N; i++) h.freePages(h.allocPages(0), 0);",
  "kmallocNolock pair 64 B": "for (let i = 0; i < N; i++) h.kfreeNolock(h.kmallocNolock(64));",
  "rcuReadLock pair": "for (let i = 0; i < N; i++) { h.rcuReadLock(); h.rcuReadUnlock(); }",
};

/** One build's cases in this (fresh) process: warm-up, then best of 5 runs each; JSON on stdout. */
async function child(index: string): Promise<void> {
  const M = (await import(pathToFileURL(index).href)) as typeof import("../src/index.js");
  const h = M.Heap.create({ size: 64 << 20, cpus: 4 });
  const c = h.createCache("ab_obj", 48);
  const out: Record<string, number> = {};
  for (const [name, body] of Object.entries(CASES)) {
    const f = new Function("h", "c", "N", body) as (h: unknown, c: unknown, n: number) => void;
    f(h, c, N);
    let best = Infinity;
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      f(h, c, N);
      best = Math.min(best, ((performance.now() - t0) * 1e6) / N);
    }
    out[name] = best;
  }
  h.validate();
  process.stdout.write(JSON.stringify(out));
}

function main(): void {
  const { values } = parseArgs({
    options: { against: { type: "string" }, rounds: { type: "string", default: "6" }, child: { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  if (values.child !== undefined) return void child(values.child);
  if (values.help || values.against === undefined) {
    console.log("usage: npm run bench:ab -- --against DIR [--rounds N]   (DIR: another built checkout of shmalloc)");
    process.exitCode = values.help ? 0 : 2;
    return;
  }
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds: "${values.rounds}" is not a whole number of at least 1`);
  const self = fileURLToPath(import.meta.url);
  const builds = [resolve(values.against, "dist/src/index.js"), fileURLToPath(new URL("../src/index.js", import.meta.url))];
  if (!existsSync(builds[0]!)) throw new Error(`--against: ${builds[0]} not found: build that checkout first (npm run build there)`);
  const best: Array<Record<string, number>> = [{}, {}];
  for (let r = 0; r < rounds; r++) {
    for (let b = 0; b < 2; b++) {
      const o = JSON.parse(execFileSync(process.execPath, [self, "--child", builds[b]!], { encoding: "utf8" })) as Record<string, number>;
      for (const [k, v] of Object.entries(o)) best[b]![k] = Math.min(best[b]![k] ?? Infinity, v);
    }
  }
  console.log(`${"case".padEnd(28)} ${"against".padStart(10)} ${"this".padStart(10)}   change   (best of ${rounds} alternating rounds)`);
  for (const k of Object.keys(CASES)) {
    const a = best[0]![k]!;
    const t = best[1]![k]!;
    console.log(`${k.padEnd(28)} ${a.toFixed(2).padStart(7)} ns ${t.toFixed(2).padStart(7)} ns ${`${((t / a - 1) * 100).toFixed(1)}%`.padStart(8)}`);
  }
}

main();
