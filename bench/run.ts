/*
 * shmalloc's benchmark suite: `npm run bench` (build, then node dist/bench/run.js).
 *
 *   node dist/bench/run.js              the full suite (two to three minutes on two cores)
 *   node dist/bench/run.js --quick      a much shorter pass (about 20 s)
 *   node dist/bench/run.js --smoke      every run once, as short as it can be (the test suite's smoke
 *                                       test, a few seconds; no files unless --out)
 *   node dist/bench/run.js --json       one JSON document of all results on stdout instead of tables
 *   node dist/bench/run.js --out DIR    write latest.json / latest.md to DIR instead of bench/results
 *   node dist/bench/run.js --only P,Q   only the runs whose id starts with P or Q, e.g.
 *                                       --only pages,glibc-simple/shmalloc (files written only with --out)
 *   node dist/bench/run.js --peers DIR  also run the Wasm peers (mimalloc, dlmalloc) from DIR, the folder
 *                                       of their loader wasm-peers.mjs (e.g. ../shared/peers)
 *   node dist/bench/run.js --help       the options (a bad one exits with status 2)
 *
 * The suite starts many workers over a few minutes, each loading the compiled allocator. So that a
 * rebuild of dist/ during a run cannot mix two versions of the heap layout in one run, this
 * launcher copies the compiled src/ and bench/ (and the demo's and tests' shared modules they
 * import) into a private directory and runs everything from
 * there; the copy is removed at exit.
 */
import { cpSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = resolve(here, "..");
const repo = resolve(dist, "..");
const snap = mkdtempSync(join(tmpdir(), "shmalloc-bench-"));
process.on("exit", () => rmSync(snap, { recursive: true, force: true }));
const jsOnly = (p: string): boolean => !/\.(d\.ts|map)$/.test(p);
cpSync(join(dist, "src"), join(snap, "src"), { recursive: true, filter: jsOnly });
cpSync(here, join(snap, "bench"), { recursive: true, filter: jsOnly });
// The command-line parser the suite shares with the demo and the stress command.
cpSync(join(dist, "demo", "args.js"), join(snap, "demo", "args.js"));
// The seeded generator the suite shares with the tests and the demo.
cpSync(join(dist, "test", "support", "common.js"), join(snap, "test", "support", "common.js"));
symlinkSync(join(repo, "node_modules"), join(snap, "node_modules"), "dir");
process.env.SHMALLOC_BENCH_REPO = repo;
await import(pathToFileURL(join(snap, "bench", "suite.js")).href);
