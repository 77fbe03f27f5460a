/*
 * A seeded model-based fuzzer over the whole public API of one agent (two handles on the heap,
 * so that blocks cross slots): random sequences of allocations, frees, reallocations, nolock
 * calls from reentry hooks, kfreeRcu and read sections, named caches and their lifecycle, page
 * blocks of every order, bulk calls, shrink, grow, detach and attach, and misuse that must be
 * refused with the heap unchanged. A shadow model holds every live range with a signature:
 * after every operation no two live ranges overlap and the touched blocks are intact; every
 * `validateEvery` operations every block is checked and validate() runs.
 *
 * Short form: test/fuzz.test.ts (npm test). Long form:
 *   node dist/test/agents/fuzz.js [--seed N] [--ops N] [--runs N] [--config NAME]
 * which prints every seed, a summary table and the command that repeats a failure.
 */
import { writeSync } from "node:fs";
import { type OptionTable, parseCommandLine, parseWhole, UsageError, usageMessage } from "../../demo/args.js";
import { pathToFileURL } from "node:url";
import { GFP, Heap, HeapError, type KmemCache } from "../../src/index.js";
import { checkPattern, fillPattern, patternWord, Prng, signature } from "../support/util.js";
import { WA } from "../support/wasm.js";

export interface FuzzConfig {
  name: string;
  size: number;
  maxSize: number;
  debug: boolean;
  faultRate: number;
  /** Where the heap lives: a buffer of its own (the default), at an offset of a caller's growable
   * SharedArrayBuffer, or at an offset of a shared WebAssembly.Memory. */
  placement?: "offset" | "wasm";
}

/** Offset of a placed heap in its buffer: four WebAssembly pages, below which the caller's bytes lie. */
const PLACED_OFFSET = 4 * 65536;

export const CONFIGS: readonly FuzzConfig[] = [
  { name: "plain", size: 4 << 20, maxSize: 4 << 20, debug: false, faultRate: 0 },
  { name: "debug", size: 4 << 20, maxSize: 4 << 20, debug: true, faultRate: 0 },
  { name: "faults", size: 4 << 20, maxSize: 4 << 20, debug: false, faultRate: 0.05 },
  { name: "debug-faults", size: 4 << 20, maxSize: 4 << 20, debug: true, faultRate: 0.05 },
  { name: "small", size: 768 << 10, maxSize: 768 << 10, debug: false, faultRate: 0 },
  { name: "small-growing", size: 768 << 10, maxSize: 6 << 20, debug: true, faultRate: 0.02 },
  { name: "offset-growing", size: 768 << 10, maxSize: 6 << 20, debug: false, faultRate: 0.02, placement: "offset" },
  { name: "wasm-growing", size: 1 << 20, maxSize: 6 << 20, debug: true, faultRate: 0, placement: "wasm" },
];

/** The heap of configuration `cfg`, placed as it says. */
function createHeap(cfg: FuzzConfig, seed: number): Heap {
  const common = {
    maxSize: cfg.maxSize,
    cpus: 4,
    debug: cfg.debug,
    ...(cfg.faultRate > 0 ? { faultInjection: { rate: cfg.faultRate, seed } } : {}),
  };
  if (cfg.placement === "offset") {
    const Sab = SharedArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => SharedArrayBuffer;
    const buffer = new Sab(PLACED_OFFSET + cfg.size, { maxByteLength: PLACED_OFFSET + cfg.maxSize });
    return Heap.create({ ...common, buffer, offset: PLACED_OFFSET, size: cfg.size });
  }
  if (cfg.placement === "wasm") {
    const pages = (PLACED_OFFSET + cfg.size) / 65536;
    const memory = new WA.Memory({ initial: pages, maximum: (PLACED_OFFSET + cfg.maxSize) / 65536, shared: true });
    return Heap.create({ ...common, memory, offset: PLACED_OFFSET });
  }
  return Heap.create({ ...common, size: cfg.size });
}

/** Another handle on `heap`, as a second agent would attach it (the Memory for a heap on one). */
function attachTo(heap: Heap): Heap {
  return Heap.attach(heap.memory ?? heap.buffer, { offset: heap.offset });
}

export interface FuzzResult {
  config: string;
  seed: number;
  ops: number;
  counts: Record<string, number>;
  failure: string | null;
}

const K_OBJ = 0; // kmalloc family
const K_CACHE = 1;
const K_PAGES = 2;

interface Live {
  addr: number;
  /** Bytes the caller may use (the range the model owns). */
  size: number;
  sig: number;
  kind: number;
  order: number;
  cache: number;
}

const CHECK_BYTES = 512;
/** SHMALLOC_FUZZ_TRACE=1 prints every operation as it is done (to find a hang). */
const TRACE = process.env.SHMALLOC_FUZZ_TRACE === "1";
const SIZES = [1, 8, 13, 16, 24, 32, 64, 96, 100, 128, 192, 256, 300, 512, 1000, 1024, 2048, 3000, 4096, 8000, 8192, 9000, 20000, 70000];

export function runFuzz(cfg: FuzzConfig, seed: number, ops: number, validateEvery = 200): FuzzResult {
  const rng = new Prng(seed);
  const counts: Record<string, number> = {};
  const count = (k: string): void => {
    counts[k] = (counts[k] ?? 0) + 1;
  };
  const heap = createHeap(cfg, seed);
  const reported: string[] = [];
  heap.onError = (e) => {
    reported.push(e.message);
  };
  let other: Heap = attachTo(heap);
  other.onError = heap.onError;
  const live = new Map<number, Live>();
  const caches: Array<{ name: string; size: number; handle: KmemCache; gen: number }> = [];
  let cacheSerial = 0;
  let serial = 0;
  let reading = 0;
  let op = 0;
  let last = "";

  const fail = (msg: string): never => {
    throw new Error(`op ${op} (${last}): ${msg}`);
  };
  const pick = <T>(xs: readonly T[]): T => xs[rng.range(0, xs.length - 1)]!;
  const h = (): Heap => (rng.chance(0.25) ? other : heap);
  // A handle's views cover the heap as that handle last saw it: read through the one that saw most.
  const views = (): Heap => (other.u8.length > heap.u8.length ? other : heap);
  const span = (l: Live): number => (l.kind === K_PAGES ? 4096 << l.order : l.size);

  const add = (addr: number, size: number, kind: number, order: number, cache: number, zeroed: boolean, by: Heap): void => {
    if (addr === 0) return;
    const l: Live = { addr, size, sig: signature(7, serial++), kind, order, cache };
    const end = addr + span(l);
    if (addr < by.offset + 4096 || end > by.size || end > by.u8.length) fail(`${addr} (+${span(l)}) lies outside the heap (${by.offset}..${by.size}, views ${by.u8.length} B)`);
    for (const o of live.values()) {
      if (addr < o.addr + span(o) && o.addr < end) fail(`${addr} (+${span(l)}) overlaps live ${o.addr} (+${span(o)}): handed out twice`);
    }
    const n = Math.min(l.size, CHECK_BYTES);
    if (zeroed) for (let k = 0; k < n; k++) if (by.u8[addr + k] !== 0) fail(`zeroed block ${addr}: byte ${k} is ${by.u8[addr + k]}`);
    fillPattern(by.i32, by.u8, addr, n, l.sig);
    live.set(addr, l);
  };
  const check = (l: Live): void => {
    const v = views();
    const bad = checkPattern(v.i32, v.u8, l.addr, Math.min(l.size, CHECK_BYTES), l.sig);
    if (bad !== null) fail(`a live block was overwritten: ${bad}`);
  };
  const anyLive = (kind = -1): Live | null => {
    if (live.size === 0) return null;
    const all = [...live.values()].filter((l) => kind < 0 || l.kind === kind);
    return all.length === 0 ? null : pick(all);
  };
  const take = (l: Live): void => {
    check(l);
    live.delete(l.addr);
  };
  /** `fn` must throw HeapError `code` and leave the figures as they were. */
  const refused = (code: string | string[], fn: () => unknown, strict = true): void => {
    const codes = typeof code === "string" ? [code] : code;
    const before = strict ? figures(heap) : holdings(heap);
    try {
      fn();
    } catch (e) {
      if (!(e instanceof HeapError)) throw e;
      if (!codes.includes(e.code)) fail(`expected ${codes.join(" or ")}, got ${e.message}`);
      const after = strict ? figures(heap) : holdings(heap);
      if (after !== before) fail(`a refused call (${e.code}) changed the heap: ${diff(before, after)}`);
      count(`refused ${code}`);
      return;
    }
    fail(`expected ${codes.join(" or ")}, nothing was thrown`);
  };
  const checkAll = (): void => {
    for (const l of live.values()) check(l);
  };

  try {
    for (op = 0; op < ops; op++) {
      const which = rng.weighted([14, 4, 4, 4, 10, 4, 4, 3, 6, 3, 3, 4, 2, 2, 2, 2, 2, 1, 1, 2, 2, 1]);
      last = String(which);
      const by = h();
      if (TRACE) writeSync(2, `op ${op}: starts ${which} on cpu ${by.cpu}\n`);
      switch (which) {
        case 0: {
          last = "kmalloc";
          const size = pick(SIZES);
          add(by.kmalloc(size, rng.chance(0.1) ? GFP.NOWAIT : GFP.KERNEL), size, K_OBJ, 0, -1, false, by);
          break;
        }
        case 1: {
          last = "kzalloc";
          const size = pick(SIZES);
          add(by.kzalloc(size), size, K_OBJ, 0, -1, true, by);
          break;
        }
        case 2: {
          last = "kmallocNolock";
          const size = pick(SIZES.filter((s) => s <= 8192));
          add(by.kmallocNolock(size), size, K_OBJ, 0, -1, false, by);
          break;
        }
        case 3: {
          last = "krealloc";
          const l = anyLive(K_OBJ);
          if (l === null) break;
          const size = pick(SIZES);
          check(l);
          const n = by.krealloc(l.addr, size);
          if (n === 0) break;
          const keep = Math.min(l.size, size, CHECK_BYTES);
          const bad = prefixDiffers(views().u8, n, keep, l.sig, Math.min(l.size, CHECK_BYTES));
          if (bad !== null) fail(`krealloc(${l.addr}, ${size}) of a ${l.size}-byte block gave ${n}, which lost the contents: ${bad}`);
          live.delete(l.addr);
          add(n, size, K_OBJ, 0, -1, false, by);
          break;
        }
        case 4: {
          last = "kfree";
          const l = anyLive();
          if (l === null || l.kind === K_PAGES) break;
          take(l);
          if (rng.chance(0.2)) by.kfreeNolock(l.addr);
          else by.kfree(l.addr);
          break;
        }
        case 5: {
          last = "kfreeRcu";
          const l = anyLive(rng.chance(0.5) ? K_OBJ : K_CACHE);
          if (l === null) break;
          take(l);
          by.kfreeRcu(l.addr);
          break;
        }
        case 6: {
          last = "allocPages";
          const order = rng.range(0, 5);
          add(by.allocPages(order, rng.chance(0.3) ? GFP.ZERO : 0), 4096 << order, K_PAGES, order, -1, false, by);
          break;
        }
        case 7: {
          last = "allocPagesNolock/Bulk";
          if (rng.chance(0.5)) {
            const order = rng.range(0, 3);
            add(by.allocPagesNolock(order), 4096 << order, K_PAGES, order, -1, false, by);
          } else {
            const out: number[] = [];
            const n = by.allocPagesBulk(rng.range(1, 6), out);
            for (let k = 0; k < n; k++) add(out[k]!, 4096, K_PAGES, 0, -1, false, by);
          }
          break;
        }
        case 8: {
          last = "freePages";
          const l = anyLive(K_PAGES);
          if (l === null) break;
          take(l);
          if (l.order <= 3 && rng.chance(0.3)) by.freePagesNolock(l.addr, l.order);
          else by.freePages(l.addr, l.order);
          break;
        }
        case 9: {
          last = "createCache";
          if (caches.length >= 4) break;
          const size = rng.range(1, 3000);
          const name = `fuzz-${cacheSerial++}`;
          const handle = heap.createCache(name, size, { align: pick([8, 8, 16, 64]) });
          caches.push({ name, size, handle, gen: 0 });
          break;
        }
        case 10: {
          last = "cache.alloc";
          if (caches.length === 0) break;
          const k = rng.range(0, caches.length - 1);
          const c = caches[k]!;
          const handle = by === heap ? c.handle : other.findCache(c.name);
          if (handle === null) fail(`findCache(${c.name}) found nothing`);
          if (rng.chance(0.3)) {
            const out: number[] = [];
            if (handle!.allocBulk(rng.range(1, 5), out) > 0) for (const a of out) add(a, c.size, K_CACHE, 0, k, false, by);
          } else {
            add(handle!.alloc(), c.size, K_CACHE, 0, k, false, by);
          }
          break;
        }
        case 11: {
          last = "cache.free";
          const l = anyLive(K_CACHE);
          if (l === null) break;
          take(l);
          const c = caches[l.cache]!;
          if (rng.chance(0.5)) c.handle.free(l.addr);
          else heap.kfree(l.addr);
          break;
        }
        case 12: {
          last = "cache.destroy";
          if (caches.length === 0) break;
          const k = rng.range(0, caches.length - 1);
          const c = caches[k]!;
          const mine = [...live.values()].filter((l) => l.kind === K_CACHE && l.cache === k);
          if (reading > 0 && heap.stats().rcu.waitingObjects > 0) {
            refused("EDEADLK", () => c.handle.destroy()); // it would wait for the kfreeRcu objects
            break;
          }
          if (mine.length > 0) {
            // destroy first frees the kfreeRcu objects waiting (rcuBarrier): the figures move then.
            // Its slow-path housekeeping (deferred frees drained) may run first: compare what callers hold.
            if (heap.stats().rcu.waitingObjects === 0) refused("EBUSY", () => c.handle.destroy(), false);
            break;
          }
          c.handle.destroy();
          if (heap.findCache(c.name) !== null) fail(`${c.name} still found after destroy`);
          refused("EINVAL", () => c.handle.alloc());
          // Renumber the model's caches: later ones move down.
          caches.splice(k, 1);
          for (const l of live.values()) if (l.kind === K_CACHE && l.cache > k) l.cache--;
          break;
        }
        case 13: {
          last = "kfreeBulk/freeBulk";
          const ls = [...live.values()].filter((l) => l.kind !== K_PAGES).slice(0, rng.range(1, 6));
          if (ls.length === 0) break;
          for (const l of ls) take(l);
          by.kfreeBulk(ls.map((l) => l.addr));
          break;
        }
        case 14: {
          last = "read section";
          if (reading > 0 && rng.chance(0.6)) {
            heap.rcuReadUnlock();
            reading--;
          } else if (reading < 3) {
            heap.rcuReadLock();
            reading++;
          }
          break;
        }
        case 15: {
          last = "synchronizeRcu/rcuBarrier";
          if (reading > 0) {
            refused("EDEADLK", () => heap.synchronizeRcu());
            break;
          }
          if (rng.chance(0.5)) heap.synchronizeRcu();
          else heap.rcuBarrier();
          break;
        }
        case 16: {
          last = "shrink";
          const pickOne = rng.range(0, 2);
          if (pickOne === 0) heap.shrink();
          else if (pickOne === 1) other.shrink();
          else if (caches.length > 0) pick(caches).handle.shrink();
          break;
        }
        case 17: {
          last = "grow";
          if (heap.size < heap.maxSize) heap.grow(Math.min(heap.maxSize, heap.size + rng.range(1, 64) * 4096));
          break;
        }
        case 18: {
          last = "detach/attach";
          if (reading > 0) {
            // It may have kfreeRcu objects to wait for, which this agent's own section holds up.
            try {
              other.detach();
            } catch (e) {
              if (!(e instanceof HeapError) || e.code !== "EDEADLK") throw e;
              count("refused EDEADLK");
              break;
            }
          } else {
            other.detach();
          }
          refused("EDETACHED", () => other.kmalloc(8));
          other = attachTo(heap);
          other.onError = heap.onError;
          break;
        }
        case 19: {
          last = "misuse";
          const l = anyLive();
          if (l === null) break;
          const m = rng.range(0, 3);
          if (m === 0 && l.kind !== K_PAGES && l.size >= 16) refused("EINVAL", () => heap.kfree(l.addr + 8));
          else if (m === 1 && l.kind === K_PAGES) refused("EINVAL", () => heap.freePages(l.addr, l.order === 0 ? 1 : l.order - 1));
          else if (m === 2 && l.kind === K_OBJ) {
            // Free it, then free it again at once (still in this slot's sheaf or on its slab): EDOUBLEFREE.
            take(l);
            heap.kfree(l.addr);
            // A large block went back to the pages: kfree of a free page is EINVAL (README); an
            // object whose slab was released with it, too.
            refused(l.size > 8192 ? "EINVAL" : ["EDOUBLEFREE", "EINVAL"], () => heap.kfree(l.addr));
          } else if (m === 3) refused("EINVAL", () => heap.kmalloc(-1));
          break;
        }
        case 20: {
          last = "hook";
          // A reentry hook making nolock calls at every lock point of the next few operations' calls.
          const mine: number[] = [];
          let k = 0;
          heap.setReentryHook((point) => {
            if (TRACE) writeSync(2, `  hook at ${point}\n`);
            k++;
            if ((k & 1) === 1) {
              const size = pick([8, 64, 256, 1024]);
              const a = heap.kmallocNolock(size);
              if (a !== 0) {
                add(a, size, K_OBJ, 0, -1, false, heap);
                mine.push(a);
              }
            } else if (mine.length > 0) {
              const a = mine.pop()!;
              take(live.get(a)!);
              heap.kfreeNolock(a);
            }
          });
          try {
            const pickOne = rng.range(0, 3);
            if (TRACE) writeSync(2, `  hooked call ${pickOne}, reading ${reading}\n`);
            if (pickOne === 0) heap.shrink();
            else if (pickOne === 1 && reading === 0) heap.rcuBarrier();
            else {
              const size = pick(SIZES);
              add(heap.kmalloc(size), size, K_OBJ, 0, -1, false, heap);
            }
          } finally {
            heap.setReentryHook(null);
          }
          count(`hook points`);
          break;
        }
        case 21: {
          last = "stats";
          const s = heap.stats();
          if (s.freePages < 0 || s.freePages > s.totalPages) fail(`freePages ${s.freePages} of ${s.totalPages}`);
          break;
        }
      }
      count(last);
      if (reported.length > 0) fail(`deferred work reported an error the model did not cause: ${reported[0]}`);
      if (TRACE) writeSync(2, `op ${op}: ${last}\n`);
      if (op % validateEvery === validateEvery - 1) {
        checkAll();
        heap.validate();
      }
    }
    last = "teardown";
    while (reading > 0) {
      heap.rcuReadUnlock();
      reading--;
    }
    checkAll();
    heap.validate();
    for (const l of [...live.values()]) {
      take(l);
      if (l.kind === K_PAGES) heap.freePages(l.addr, l.order);
      else heap.kfree(l.addr);
    }
    heap.rcuBarrier();
    for (const c of caches) c.handle.destroy();
    other.detach();
    heap.shrink();
    heap.validate();
    const s = heap.stats();
    if (s.freePages !== s.totalPages) fail(`${s.totalPages - s.freePages} pages were lost`);
    return { config: cfg.name, seed, ops, counts, failure: null };
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    return { config: cfg.name, seed, ops, counts, failure: `${err.message.startsWith("op ") ? "" : `op ${op} (${last}): `}${err.message}` };
  }
}

/** The first top-level figures that differ, for a failure message. */
function diff(before: string, after: string): string {
  const x = JSON.parse(before) as Record<string, unknown>;
  const y = JSON.parse(after) as Record<string, unknown>;
  const out: string[] = [];
  for (const k of Object.keys(x)) {
    const a = JSON.stringify(x[k]);
    const b = JSON.stringify(y[k]);
    if (a !== b) out.push(`${k}: ${a.slice(0, 200)} -> ${b.slice(0, 200)}`);
  }
  return out.join("; ");
}

/** The first of `keep` bytes at `addr` that differs from the pattern fillPattern wrote over `size` bytes, or null. */
function prefixDiffers(u8: Uint8Array, addr: number, keep: number, sig: number, size: number): string | null {
  for (let b = 0; b < keep; b++) {
    const want = b < (size & ~3) ? (patternWord(sig, b >> 2) >>> ((b & 3) << 3)) & 0xff : (sig >>> ((b & 3) << 3)) & 0xff;
    if (u8[addr + b] !== want) return `byte ${b} is ${u8[addr + b]}, want ${want}`;
  }
  return null;
}

/** What callers hold: every cache's live objects and name, the kfreeRcu objects waiting. */
function holdings(h: Heap): string {
  const s = h.stats();
  return JSON.stringify({ slabs: s.slabs.filter((c) => c.name !== "kmem_cache_sheaf").map((c) => [c.name, c.activeObjects]), rcu: s.rcu.waitingObjects });
}

function figures(h: Heap): string {
  return JSON.stringify({ ...h.stats(), vmstat: undefined });
}

export function repeatCommand(r: FuzzResult): string {
  return `node dist/test/agents/fuzz.js --config ${r.config} --seed ${r.seed} --ops ${r.ops}`;
}

/* ================================================================= the long form */

const FUZZ_OPTIONS = {
  seed: { type: "string" },
  ops: { type: "string" },
  runs: { type: "string" },
  config: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies OptionTable;

const FUZZ_HELP = `Usage: npm run fuzz -- [options]      (or: node dist/test/agents/fuzz.js [options])

Random sequences over the whole public API against a shadow model of every live range; after every
operation no two live ranges overlap and every block's contents are intact; validate() every few
operations. Prints one line per run, a repeat command for each failure, and exits 1 on any.

Options:
  --ops N        operations per run (default 20000, at most 10000000)
  --runs R       runs of each configuration, seeds seed, seed+1, ... (default 1, at most 100000)
  --seed X       the first seed, a whole number (default random; printed)
  --config NAME  one configuration: ${CONFIGS.map((c) => c.name).join(", ")} (default all)
  --help, -h     show this help`;

function main(): void {
  let o: { ops: number; runs: number; seed: number | undefined; configs: typeof CONFIGS };
  try {
    const v = parseCommandLine(process.argv.slice(2), FUZZ_OPTIONS);
    if (v.help === true) {
      console.log(FUZZ_HELP);
      return;
    }
    const configs = v.config === undefined ? CONFIGS : CONFIGS.filter((c) => c.name === v.config);
    if (configs.length === 0) throw new UsageError(`--config: no configuration "${v.config}"; the configurations are ${CONFIGS.map((c) => c.name).join(", ")}`);
    o = {
      ops: v.ops === undefined ? 20000 : parseWhole(v.ops, "--ops", 1, 10_000_000),
      runs: v.runs === undefined ? 1 : parseWhole(v.runs, "--runs", 1, 100_000),
      seed: v.seed === undefined ? undefined : parseWhole(v.seed, "--seed", 0, 0xffffffff),
      configs,
    };
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(usageMessage("fuzz", "npm run fuzz --", e));
    process.exitCode = 2;
    return;
  }
  const { configs, ops, runs } = o;
  const first = o.seed !== undefined ? o.seed >>> 0 : (Date.now() ^ (Math.random() * 0x100000000)) >>> 0;
  const rows: string[] = [];
  let failures = 0;
  for (let r = 0; r < runs; r++) {
    for (const cfg of configs) {
      const seed = (first + r) >>> 0;
      const t0 = Date.now();
      const res = runFuzz(cfg, seed, ops);
      const ms = Date.now() - t0;
      const line = `${cfg.name.padEnd(14)} seed ${String(seed).padStart(10)}  ${String(ops).padStart(7)} ops  ${String(ms).padStart(6)} ms  ${res.failure === null ? "ok" : "FAILED"}`;
      console.log(line);
      rows.push(line);
      if (res.failure !== null) {
        failures++;
        console.log(`  ${res.failure}\n  repeat: ${repeatCommand(res)}`);
      }
    }
  }
  console.log(`\nfuzz: ${rows.length} runs, ${failures} failed`);
  process.exitCode = failures === 0 ? 0 : 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) main();
