/*
 * The host of the kill harness (test/kill.ts runs it in a worker and watches its heartbeat, so a
 * hang anywhere, the host's own calls included, is caught by a deadline): it creates the heap,
 * starts the workers, terminates them at seeded random instants (one, or two at once), and after
 * each kill reclaims the dead slots, pauses the survivors at an operation boundary, checks that
 * every page is accounted for and every live block is intact and alone, frees what the dead held,
 * runs validate(), and starts replacements.
 */
import { parentPort, Worker, workerData } from "node:worker_threads";
import { Heap, HeapError, type KmemCache, type TraceRecord } from "../../../src/index.js";
import { C_RCU_INFLIGHT, PD_CACHE, PD_FLAGS, PD_FREELIST, PD_HEAD, PD_OWNER, H_CACHE_BYTES, H_CACHE_OFF, H_DESC_OFF, K_OBJS, K_SIZE, O_NEXT, H_PCPU_OFF, C_WORDS, H_ZONE_START, Z_NR_PAGES, PG_ORDER_MASK, PG_ORDER_SHIFT, PD_WORDS, PG_BUDDY, PG_DEFERRED, PG_HEAD, PG_LARGE, PG_PCP, PG_RCU_BLOCK, PG_SLAB } from "../../../src/core/layout.js";
import { checkPattern, deriveSeed, Prng } from "../../support/util.js";
import { heldLockWords } from "../kill-locks.js";
import {
  churnName,
  E_ADDR,
  E_KIND,
  E_OWNER,
  E_SIG,
  E_SIZE,
  E_WORDS,
  ENTRIES_PER_WORKER,
  G_BEAT,
  G_PHASE,
  G_STUCK,
  HOST_PHASES,
  G_PAUSE,
  G_STOP,
  HANDOFF,
  KIND,
  OP,
  SHARED_CACHES,
  W_ACK,
  W_ATTACHING,
  W_DRAINOP,
  W_CHURN,
  W_SLOTSFULL,
  W_CPU,
  W_DRAINS,
  W_GROWS,
  W_HKIND,
  W_HOOKS,
  W_HOP,
  W_INCARN,
  W_INDRAIN,
  W_OPS,
  W_PENTRY,
  W_PKIND,
  W_POP,
  W_PSIZE,
  W_WORDS,
  wBase,
  type KilleeData,
  type KillOptions,
  type KillSummary,
} from "../kill-proto.js";

const { opts, ctrlBuf } = workerData as { opts: KillOptions; ctrlBuf: SharedArrayBuffer };
const ctrl = new Int32Array(ctrlBuf);
const say = (line: string): void => parentPort!.postMessage({ type: "line", line });
const beat = (): void => void Atomics.add(ctrl, G_BEAT, 1);
const phase = (p: (typeof HOST_PHASES)[number]): void => {
  Atomics.store(ctrl, G_PHASE, HOST_PHASES.indexOf(p));
  beat();
};

const MiB = 1 << 20;
const size = opts.growth ? 3 * MiB : 32 * MiB;
const maxSize = opts.growth ? 48 * MiB : size;
const heap = Heap.create({ size, maxSize, cpus: 24, debug: opts.debug });
const buffer = heap.buffer;
const entriesBuf = new SharedArrayBuffer(opts.workers * ENTRIES_PER_WORKER * E_WORDS * 4);
const E = new Int32Array(entriesBuf);
parentPort!.postMessage({ type: "buffer", buffer });
const caches = SHARED_CACHES.map((c) => heap.createCache(c.name, c.size, { align: c.align }));
const rng = new Prng(opts.seed);
const totalStart = heap.stats().totalPages;

const sum: KillSummary = {
  seed: opts.seed,
  seconds: opts.seconds,
  workers: opts.workers,
  kills: 0,
  doubleKills: 0,
  killsInDrain: 0,
  spawned: 0,
  ops: 0,
  hookActions: 0,
  grows: 0,
  drains: 0,
  churn: 0,
  validates: 0,
  hostFreed: 0,
  inFlightRecovered: 0,
  pendingResolved: 0,
  objectWindow: 0,
  rcuBatchKills: 0,
  reclaimLocks: 0,
  reclaimRebuilt: 0,
  reclaimPages: 0,
  reclaimObjects: 0,
  reclaimInHand: 0,
  leftObjects: 0,
  windowFreed: 0,
  freeWindow: 0,
  stuckCaches: 0,
  slotsFull: 0,
  leftSheaves: 0,
  startPages: totalStart,
  endPages: 0,
  failures: [],
};

interface Live {
  id: number;
  worker: Worker;
  exited: Promise<number>;
  failed: string | null;
  done: boolean;
}
const live: (Live | null)[] = new Array(opts.workers).fill(null);
const incarn: number[] = new Array(opts.workers).fill(0);
const workerUrl = new URL("./killee.js", import.meta.url);

function fail(msg: string): void {
  if (sum.failures.length < 20) say(`failure: ${msg}`);
  sum.failures.push(msg);
}

function spawn(id: number): Promise<void> {
  const wb = wBase(id);
  for (let k = 0; k < W_WORDS; k++) if (k !== W_OPS && k !== W_HOOKS && k !== W_GROWS && k !== W_DRAINS && k !== W_CHURN && k !== W_SLOTSFULL) ctrl[wb + k] = 0;
  ctrl[wb + W_CPU] = -1;
  ctrl[wb + W_INCARN] = ++incarn[id]!;
  const data: KilleeData = {
    buffer,
    ctrl: ctrlBuf,
    entries: entriesBuf,
    id,
    seed: deriveSeed(opts.seed, id * 100_003 + incarn[id]!),
    reentry: opts.reentry,
    growth: opts.growth,
    debug: opts.debug,
    maxSize,
  };
  const worker = new Worker(workerUrl, { workerData: data });
  const rec: Live = { id, worker, exited: new Promise((r) => worker.once("exit", r)), failed: null, done: false };
  live[id] = rec;
  sum.spawned++;
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`worker ${id} did not start within 20 s`)), 20_000);
    worker.on("message", (m: { type: string; message?: string }) => {
      if (m.type === "up") {
        clearTimeout(t);
        resolve();
      } else if (m.type === "done") rec.done = true;
      else if (m.type === "error") {
        rec.failed = m.message ?? "error";
        fail(`worker ${id} (incarnation ${incarn[id]}): ${m.message}`);
        clearTimeout(t);
        resolve();
      }
    });
    worker.once("error", (e) => {
      fail(`worker ${id} crashed: ${e.message}`);
      clearTimeout(t);
      resolve();
    });
  });
}

function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Pause every live worker at an operation boundary; a deadline on each. */
let pauseRound = 0;
async function pauseAll(): Promise<void> {
  const round = ++pauseRound;
  Atomics.store(ctrl, G_PAUSE, round);
  const end = Date.now() + 30_000;
  for (const w of live) {
    if (w === null || w.failed !== null) continue;
    while (Atomics.load(ctrl, wBase(w.id) + W_ACK) !== round) {
      if (w.failed !== null) break;
      if (Date.now() > end) {
        const wb = wBase(w.id);
        throw new Error(`worker ${w.id} (cpu ${ctrl[wb + W_CPU]}) did not reach an operation boundary within 30 s (hang?): pending op ${ctrl[wb + W_POP]}, in drain ${ctrl[wb + W_INDRAIN]} (drain op ${ctrl[wb + W_DRAINOP]}), attaching ${ctrl[wb + W_ATTACHING]}; attached slots ${heap.attachedSlots().join(",")}; held lock words: ${heldLocks()}`);
      }
      beat();
      await sleep(1);
    }
  }
}

function heldLocks(): string {
  return heldLockWords(heap.buffer);
}

function resumeAll(): void {
  Atomics.store(ctrl, G_PAUSE, 0);
  Atomics.notify(ctrl, G_PAUSE);
}

interface Block {
  addr: number;
  end: number;
  entry: number;
}

function bytesOf(kind: number, sizeOrOrder: number): number {
  return kind === KIND.pages ? 4096 << sizeOrOrder : sizeOrOrder;
}

function orderOfBytes(bytes: number): number {
  let o = 0;
  while (4096 << o < bytes) o++;
  return o;
}

interface HeadInfo {
  order: number;
  large: boolean;
  owner: number;
  flags: number;
}

interface Census {
  heads: Map<number, HeadInfo>;
  free: number;
  pcp: number;
  deferred: number;
  slab: number;
  rcu: number;
  allocated: number;
  total: number;
}

/** Walk the page descriptors (the heap is quiet: survivors paused, the dead reclaimed). */
function census(): Census {
  heap.refreshViews();
  const u32 = heap.u32;
  const descW = u32[H_DESC_OFF]! >>> 2;
  const nr = u32[Z_NR_PAGES]!;
  const zs = u32[H_ZONE_START]!;
  const c: Census = { heads: new Map(), free: 0, pcp: 0, deferred: 0, slab: 0, rcu: 0, allocated: 0, total: nr - zs };
  for (let pfn = zs; pfn < nr; ) {
    const d = descW + pfn * PD_WORDS;
    const f = u32[d + PD_FLAGS]!;
    if ((f & PG_SLAB) !== 0) {
      c.slab++;
      pfn++;
      continue;
    }
    const order = (f & PG_ORDER_MASK) >>> PG_ORDER_SHIFT;
    const n = 1 << order;
    if ((f & PG_BUDDY) !== 0) c.free += n;
    else if ((f & PG_PCP) !== 0) c.pcp += n;
    else if ((f & PG_DEFERRED) !== 0) c.deferred += n;
    else if ((f & PG_RCU_BLOCK) !== 0) c.rcu += n;
    else if ((f & (PG_HEAD | PG_LARGE)) !== 0) {
      c.allocated += n;
      c.heads.set(pfn * 4096, { order, large: (f & PG_LARGE) !== 0, owner: u32[d + PD_OWNER]!, flags: f });
    } else {
      let prev = "";
      for (let q = Math.max(zs, pfn - 4); q < pfn; q++) prev += ` ${q}:0x${u32[descW + q * PD_WORDS + PD_FLAGS]!.toString(16)}`;
      fail(`page ${pfn} (0x${(pfn * 4096).toString(16)}) belongs to nothing: flags 0x${f.toString(16)} (before it:${prev})`);
      return c;
      pfn++;
      continue;
    }
    pfn += n;
  }
  return c;
}

/** The kfreeRcu objects slot `cpu` had taken off a slot to free and had not freed yet. */
function inFlightOf(cpu: number): number {
  return heap.i32[(heap.u32[H_PCPU_OFF]! >>> 2) + cpu * C_WORDS + C_RCU_INFLIGHT]!;
}

function isPageKind(kind: number): boolean {
  return kind === KIND.pages || kind === KIND.large;
}

/** A dead worker: its id, slot and what it was doing when it died. */
interface Dead {
  id: number;
  cpu: number;
  incarn: number;
  op: number;
  entry: number;
  kind: number;
  size: number;
  hop: number;
  hkind: number;
  /** It died freeing a kfreeRcu batch: the one object it was freeing (a large kmalloc too) may be left. */
  rcuBatch: boolean;
}

function pendingEntryOf(d: Dead): number {
  return d.op === OP.free || d.op === OP.rcuFree || d.op === OP.realloc ? d.entry : -1;
}

/** Ranges of every recorded block but the dead's pending ones; overlap and placement checks. */
function checkRecorded(c: Census, dead: Dead[], skip: Set<number>): Block[] {
  const blocks: Block[] = [];
  const total = E.length / E_WORDS;
  for (let e = 0; e < total; e++) {
    const w = e * E_WORDS;
    const owner = Atomics.load(E, w + E_OWNER);
    if (owner === 0 || skip.has(e)) continue;
    const kind = E[w + E_KIND]!;
    if (kind === KIND.cache) continue;
    const addr = E[w + E_ADDR]!;
    const bytes = bytesOf(kind, E[w + E_SIZE]!);
    blocks.push({ addr, end: addr + bytes, entry: e });
    const bad = checkPattern(heap.i32, heap.u8, addr, bytes, E[w + E_SIG]!);
    if (bad !== null) fail(`entry ${e} (owner ${owner}): a live block's contents changed: ${bad}`);
    if (isPageKind(kind)) {
      const h = c.heads.get(addr);
      const order = kind === KIND.pages ? E[w + E_SIZE]! : orderOfBytes(bytes);
      if (h === undefined) fail(`entry ${e} (owner ${owner}): live ${kind === KIND.pages ? "page block" : "large kmalloc"} 0x${addr.toString(16)} is not an allocated block in the descriptors`);
      else if ((kind === KIND.pages ? h.order !== order : h.order < order) || h.large !== (kind === KIND.large)) fail(`entry ${e}: block 0x${addr.toString(16)} has order ${h.order}${h.large ? " (large)" : ""}, want ${order}`);
    }
  }
  blocks.sort((a, b) => a.addr - b.addr);
  for (let k = 1; k < blocks.length; k++) {
    if (blocks[k]!.addr < blocks[k - 1]!.end) fail(`live blocks overlap: entry ${blocks[k - 1]!.entry} 0x${blocks[k - 1]!.addr.toString(16)}..0x${blocks[k - 1]!.end.toString(16)} and entry ${blocks[k]!.entry} at 0x${blocks[k]!.addr.toString(16)}`);
  }
  void dead;
  return blocks;
}

function inside(blocks: Block[], addr: number, exceptEntry: number): boolean {
  for (const b of blocks) if (b.entry !== exceptEntry && addr >= b.addr && addr < b.end) return true;
  return false;
}

/** What the host did with each address in this settle (for a failure's message). */
const hostTrail = new Map<number, string>();

/** Free entry e's block (kind by E_KIND): false when it was free already (the dead's free had happened). */
function hostRelease(e: number): boolean {
  const w = e * E_WORDS;
  const kind = E[w + E_KIND]!;
  const addr = E[w + E_ADDR]!;
  try {
    if (kind === KIND.pages) heap.freePages(addr, E[w + E_SIZE]!);
    else heap.kfree(addr);
    hostTrail.set(addr, `${hostTrail.get(addr) ?? ""} entry ${e} (kind ${kind}, size ${E[w + E_SIZE]}) freed;`);
    return true;
  } catch (err) {
    if (err instanceof HeapError && (err.code === "EDOUBLEFREE" || err.code === "EINVAL")) {
      hostTrail.set(addr, `${hostTrail.get(addr) ?? ""} entry ${e} (kind ${kind}, size ${E[w + E_SIZE]}) refused ${err.code}: ${err.message};`);
      return false;
    }
    throw err;
  }
}

function reclaimReport(r: unknown): void {
  if (r === null || typeof r !== "object") return;
  const o = r as { locks?: unknown[]; rebuilt?: unknown[]; pages?: number; objects?: number; inHand?: number };
  sum.reclaimLocks += o.locks?.length ?? 0;
  sum.reclaimRebuilt += o.rebuilt?.length ?? 0;
  sum.reclaimPages += o.pages ?? 0;
  sum.reclaimObjects += o.objects ?? 0;
  sum.reclaimInHand += o.inHand ?? 0;
  if (opts.verbose && ((o.locks?.length ?? 0) > 0 || (o.inHand ?? 0) > 0)) say(`  reclaimSlot: ${JSON.stringify(r)}`);
}

/** After a kill: everything of the dead, checked and freed; survivors paused. */
function settle(dead: Dead[]): void {
  const deadCpus = new Set(dead.map((d) => d.cpu).filter((c) => c >= 0));
  const skip = new Set<number>();
  for (const d of dead) {
    const pe = pendingEntryOf(d);
    if (pe >= 0) skip.add(pe);
    if (d.op === OP.destroyCache) skip.add(d.entry);
  }
  hostTrail.clear();
  let c = census();
  const blocks = checkRecorded(c, dead, skip);
  // Allocated blocks nobody recorded: only a dead worker's allocation in flight may be one.
  let allowance = 0;
  for (const d of dead) {
    if (d.op === OP.alloc && isPageKind(d.kind)) allowance++;
    if (d.op === OP.bulkPages) allowance += d.size;
    if (d.op === OP.realloc) allowance++;
    if (d.hop === OP.alloc && d.hkind === KIND.pages) allowance++;
  }
  const recorded = new Set(blocks.map((b) => b.addr));
  for (const d of dead) {
    const pe = pendingEntryOf(d);
    if (pe >= 0 && Atomics.load(E, pe * E_WORDS + E_OWNER) !== 0) recorded.add(E[pe * E_WORDS + E_ADDR]!);
  }
  let rcuLarge = dead.filter((d) => d.rcuBatch).length;
  for (const [addr, h] of c.heads) {
    if (recorded.has(addr)) continue;
    if (h.large && rcuLarge > 0) {
      // The large kmalloc a dead worker was freeing from a kfreeRcu batch: it was given to
      // kfreeRcu, so the host frees it (counted in rcuBatchKills).
      rcuLarge--;
      heap.kfree(addr);
      hostTrail.set(addr, "a dead worker's kfreeRcu large block, freed;");
      sum.inFlightRecovered++;
      continue;
    }
    if (deadCpus.has(h.owner) && allowance > 0) {
      allowance--;
      if (h.large) heap.kfree(addr);
      else heap.freePages(addr, h.order);
      hostTrail.set(addr, "in flight of a dead slot, freed;");
      sum.inFlightRecovered++;
      continue;
    }
    fail(`page block 0x${addr.toString(16)} (order ${h.order}${h.large ? ", large kmalloc" : ""}, owner slot ${h.owner}${deadCpus.has(h.owner) ? ", a dead slot" : ""}) is allocated but nobody holds it: lost`);
  }
  // The dead's pending frees: done or not? A block a survivor holds now was freed (and reused).
  for (const d of dead) {
    const pe = pendingEntryOf(d);
    if (pe >= 0 && Atomics.load(E, pe * E_WORDS + E_OWNER) === d.id + 1) {
      const w = pe * E_WORDS;
      const kind = E[w + E_KIND]!;
      if (inside(blocks, E[w + E_ADDR]!, pe)) {
        /* freed, and someone has it now */
      } else if (!opts.debug && (kind === KIND.obj || kind === KIND.cobj)) {
        sum.objectWindow++; // without debug mode a second kfree of an object is not always caught: leave it
      } else if (!hostRelease(pe) && (kind === KIND.obj || kind === KIND.cobj)) {
        // Marked free already: the free was done, or it died inside kfree after the debug state
        // was set free and before the object reached a sheaf or freelist (kfree's window), where
        // it stays allocated and no kfree accepts it.
        sum.freeWindow++;
      }
      Atomics.store(E, w + E_OWNER, 0);
      sum.pendingResolved++;
    }
    if ((d.op === OP.alloc && (d.kind === KIND.obj || d.kind === KIND.cobj)) || d.op === OP.cacheBulk) sum.objectWindow += d.op === OP.cacheBulk ? d.size : 1;
    if (d.op === OP.realloc && d.kind === KIND.obj) sum.objectWindow++;
    if (d.hop === OP.alloc && d.hkind === KIND.obj) sum.objectWindow++;
  }
  // Everything else the dead held: checked above, freed now; then their caches.
  const total = E.length / E_WORDS;
  for (const d of dead) {
    for (let e = 0; e < total; e++) {
      const w = e * E_WORDS;
      if (Atomics.load(E, w + E_OWNER) !== d.id + 1 || E[w + E_KIND] === KIND.cache) continue;
      if (!hostRelease(e)) fail(`entry ${e} of dead worker ${d.id}: its block 0x${E[w + E_ADDR]!.toString(16)} was already free`);
      Atomics.store(E, w + E_OWNER, 0);
      sum.hostFreed++;
    }
    const names = new Set<number>();
    for (let e = d.id * ENTRIES_PER_WORKER; e < (d.id + 1) * ENTRIES_PER_WORKER; e++) {
      const w = e * E_WORDS;
      if (Atomics.load(E, w + E_OWNER) === d.id + 1 && E[w + E_KIND] === KIND.cache) {
        names.add(E[w + E_ADDR]!);
        Atomics.store(E, w + E_OWNER, 0);
      }
    }
    if (d.op === OP.createCache) names.add(d.size);
    if (d.op === OP.destroyCache) names.add(E[d.entry * E_WORDS + E_ADDR]!);
    // Its churn caches: no survivor uses them (a worker allocates only from its own churn caches
    // and the shared ones, and never hands a churn object off or gives it to kfreeRcu), so an
    // object still live in one after the frees above is one the dead worker had not recorded: an
    // allocation's caller window (one object, or a bulk's count), or a pending
    // free (kfree's window: in debug mode the object is marked free before it reaches a sheaf or
    // freelist). More than that is a failure. Each is given to kfree, and the cache destroyed; in
    // debug mode one whose state still says free (taken for the call and not yet handed out, or
    // marked free by the dead kfree: destroy() does not list it) is refused (EDOUBLEFREE), so its
    // cache stays for the run, a stuck cache.
    let windows = d.op === OP.alloc && d.kind === KIND.cobj ? 1 : d.op === OP.cacheBulk ? d.size : 0;
    if (d.op === OP.free && d.kind === KIND.cobj) windows++;
    for (const n of names) {
      const name = churnName(d.id, d.incarn, n);
      const cache = heap.findCache(name);
      if (cache === null) continue;
      const listed: number[] = [];
      const leaked = tryDestroyChurn(cache, listed);
      if (leaked.length === 0) continue;
      for (const a of leaked) if (inside(blocks, a, -1)) fail(`cache ${name} of dead worker ${d.id}: live object 0x${a.toString(16)} lies inside a block a survivor holds`);
      if (leaked.length > windows) {
        fail(`cache ${name} of dead worker ${d.id} (pending op ${d.op}) keeps ${leaked.length} objects nobody recorded (${leaked.map((a) => `0x${a.toString(16)}`).join(", ")}), more than the ${windows} its allocation window allows`);
        continue;
      }
      windows -= leaked.length;
      let kept = 0;
      for (const a of leaked) {
        try {
          heap.kfree(a);
          sum.windowFreed++;
        } catch (err) {
          if (!(err instanceof HeapError && err.code === "EDOUBLEFREE")) throw err;
          // Debug mode: its state says free (taken for the call and not yet handed out, or marked
          // free by a kfree that died before the object reached a list), so destroy() does not list it.
          if (listed.includes(a)) fail(`cache ${name}: destroy() listed 0x${a.toString(16)} as live, but kfree says: ${err.message}`);
          kept++;
        }
      }
      if (kept === 0) cache.destroy();
      else {
        stuckCaches.add(name);
        sum.stuckCaches++;
        Atomics.store(ctrl, G_STUCK, stuckCaches.size);
        if (opts.verbose) say(`  cache ${name} stays: ${kept} object${kept === 1 ? "" : "s"} marked free but on no list (an allocation or a kfree the kill cut short)`);
      }
    }
  }
  checkCacheSlots(new Set(dead.map((d) => d.id)));
  phase("validate");
  heap.validate();
  sum.validates++;
  phase("settle");
  // The sum: every page is free, cached, or held by a live worker (or the handoff pool).
  c = census();
  const after = checkRecorded(c, [], new Set());
  const held = new Set(after.map((b) => b.addr));
  for (const [addr, h] of c.heads) {
    if (held.has(addr)) continue;
    const deadOps = dead.map((d) => `worker ${d.id} slot ${d.cpu} op ${d.op} kind ${d.kind} size ${d.size} entry ${d.entry}${d.entry >= 0 ? ` at 0x${E[d.entry * E_WORDS + E_ADDR]!.toString(16)}` : ""} hop ${d.hop}${d.rcuBatch ? " (in a kfreeRcu batch)" : ""}`).join("; ");
    const entries: string[] = [];
    for (let e = 0; e < E.length / E_WORDS; e++) {
      const a = E[e * E_WORDS + E_ADDR]!;
      if (E[e * E_WORDS + E_KIND] !== KIND.cache && a >= addr && a < addr + (4096 << h.order)) entries.push(`entry ${e}: owner ${E[e * E_WORDS + E_OWNER]} kind ${E[e * E_WORDS + E_KIND]} size ${E[e * E_WORDS + E_SIZE]} at 0x${a.toString(16)}`);
    }
    say(`  entries inside 0x${addr.toString(16)}: ${entries.join("; ") || "none"}`);
    fail(`after the host freed the dead workers' blocks, block 0x${addr.toString(16)} (order ${h.order}, owner ${h.owner}, flags 0x${h.flags.toString(16)}) is held by nobody; the host: ${hostTrail.get(addr) ?? "nothing"}; the dead: ${deadOps}`);
  }
  const sumPages = c.free + c.pcp + c.deferred + c.slab + c.rcu + c.allocated;
  if (sumPages !== c.total) fail(`pages: free ${c.free} + pcp ${c.pcp} + deferred ${c.deferred} + slab ${c.slab} + rcu blocks ${c.rcu} + held ${c.allocated} = ${sumPages}, not the ${c.total} the zone manages`);
}

/**
 * Try to destroy a dead worker's churn cache: [] when it is gone, or the addresses of the live
 * objects that made destroy() refuse (EBUSY), the cache still working: every object of its slabs
 * on no freelist once cache.shrink() returned the barn (the heap is quiet: the dead slot's sheaves
 * were returned by reclaimSlot, and no survivor ever cached one of its objects). In debug mode
 * destroy() also lists, to the slab_error tracepoint, those it sees allocated: `listed`.
 */
function tryDestroyChurn(cache: KmemCache, listed: number[]): number[] {
  const onError = (r: TraceRecord): void => {
    if (r.cache === cache.name && r.addr !== undefined) listed.push(r.addr);
  };
  heap.trace.on("slab_error", onError);
  try {
    cache.destroy();
    return [];
  } catch (err) {
    if (!(err instanceof HeapError && err.code === "EBUSY")) throw err;
    const want = Number(/ still has (\d+) live object/.exec(err.message)?.[1] ?? -1);
    const live = liveByWalk(cache);
    if (live.length !== want) fail(`destroy() of ${cache.name} counted ${want} live objects, but ${live.length} of its objects are on no freelist: ${err.message}`);
    for (const a of listed) if (!live.includes(a)) fail(`destroy() of ${cache.name} listed 0x${a.toString(16)}, which is on a freelist`);
    return live;
  } finally {
    heap.trace.off("slab_error", onError);
  }
}

/** The objects of `cache` on no slab freelist (its barn and the host's sheaves emptied first). */
function liveByWalk(cache: KmemCache): number[] {
  cache.shrink();
  heap.refreshViews();
  const id = heap.cacheNames().indexOf(cache.name);
  const i32 = heap.i32;
  const u32 = heap.u32;
  const kw = (u32[H_CACHE_OFF]! >>> 2) + id * (u32[H_CACHE_BYTES]! >>> 2);
  const stride = i32[kw + K_SIZE]!;
  const objs = i32[kw + K_OBJS]!;
  const descW = u32[H_DESC_OFF]! >>> 2;
  const out: number[] = [];
  for (let pfn = u32[H_ZONE_START]!; pfn < u32[Z_NR_PAGES]!; pfn++) {
    const d = descW + pfn * PD_WORDS;
    if (u32[d + PD_FLAGS] !== PG_SLAB || i32[d + PD_HEAD] !== pfn || i32[d + PD_CACHE] !== id) continue;
    const free = new Set<number>();
    for (let o = i32[d + PD_FREELIST]!, n = 0; o !== 0 && n < objs; o = i32[(o >> 2) + O_NEXT]!, n++) free.add(o);
    for (let k = 0; k < objs; k++) {
      const o = pfn * 4096 + k * stride;
      if (!free.has(o)) out.push(o);
    }
  }
  return out;
}

/** Names of the churn caches that can never be destroyed (an object no kfree accepts), kept for the run. */
const stuckCaches = new Set<string>();

/**
 * Every named cache is a shared one, a churn cache a live worker recorded, or a stuck one: a
 * descriptor nobody accounts for is lost (the slots would run out). A dying cache (destroyed,
 * released once every slot has flushed it) may still hold its descriptor here; the end checks it.
 */
function checkCacheSlots(deadIds: Set<number>): void {
  const known = new Set<string>(SHARED_CACHES.map((c) => c.name));
  for (const n of stuckCaches) known.add(n);
  for (let id = 0; id < opts.workers; id++) {
    if (deadIds.has(id) || live[id] === null) continue;
    for (let e = id * ENTRIES_PER_WORKER; e < (id + 1) * ENTRIES_PER_WORKER; e++) {
      const w = e * E_WORDS;
      if (Atomics.load(E, w + E_OWNER) === id + 1 && E[w + E_KIND] === KIND.cache) known.add(churnName(id, incarn[id]!, E[w + E_ADDR]!));
    }
  }
  for (const n of heap.cacheNames()) {
    if (n === null || n.startsWith("kmalloc") || n === "kmem_cache_sheaf" || known.has(n)) continue;
    if (heap.findCache(n) === null) continue; // dying
    fail(`named cache ${n} is held by no live worker, is not stuck and is not shared: its descriptor is lost`);
  }
}

/**
 * The attached slots no survivor names, read when no survivor is inside Heap.attach: the slots
 * list is read first, so a survivor that claims a slot after it was read names a slot not in it.
 */
async function deadSlots(): Promise<Set<number>> {
  const end = Date.now() + 20_000;
  for (;;) {
    const slots = heap.attachedSlots();
    let attaching = false;
    for (const w of live) if (w !== null && Atomics.load(ctrl, wBase(w.id) + W_ATTACHING) !== 0) attaching = true;
    if (!attaching) {
      const known = new Set<number>([heap.cpu]);
      for (const w of live) if (w !== null) known.add(Atomics.load(ctrl, wBase(w.id) + W_CPU));
      return new Set(slots.filter((cpu) => !known.has(cpu)));
    }
    if (Date.now() > end) throw new Error("a survivor stayed inside Heap.attach for 20 s");
    await sleep(1);
  }
}

async function killRound(): Promise<void> {
  const alive = live.filter((w): w is Live => w !== null && w.failed === null);
  if (alive.length === 0) return;
  const two = alive.length >= 2 && rng.chance(0.2);
  const victims: Live[] = [];
  const first = alive[rng.range(0, alive.length - 1)]!;
  victims.push(first);
  if (two) {
    const rest = alive.filter((w) => w !== first);
    victims.push(rest[rng.range(0, rest.length - 1)]!);
  }
  let inDrain = false;
  for (const w of alive) if (!victims.includes(w) && Atomics.load(ctrl, wBase(w.id) + W_INDRAIN) !== 0) inDrain = true;
  phase("terminate");
  await deadline(Promise.all(victims.map((v) => v.worker.terminate())), 20_000, "terminate()");
  await deadline(Promise.all(victims.map((v) => v.exited)), 20_000, "the killed workers' exit");
  sum.kills += victims.length;
  if (two) sum.doubleKills++;
  if (inDrain) sum.killsInDrain++;
  const dead: Dead[] = victims.map((v) => {
    const wb = wBase(v.id);
    return {
      id: v.id,
      cpu: ctrl[wb + W_CPU]!,
      incarn: incarn[v.id]!,
      op: ctrl[wb + W_POP]!,
      entry: ctrl[wb + W_PENTRY]!,
      kind: ctrl[wb + W_PKIND]!,
      size: ctrl[wb + W_PSIZE]!,
      hop: ctrl[wb + W_HOP]!,
      hkind: ctrl[wb + W_HKIND]!,
      rcuBatch: false,
    };
  });
  for (const v of victims) live[v.id] = null;
  // A dead worker that was freeing a kfreeRcu batch may leak the one object it was freeing.
  for (const d of dead) if (d.cpu >= 0 && inFlightOf(d.cpu) > 0) {
    sum.rcuBatchKills++;
    d.rcuBatch = true;
  }
  // reclaimSlot with the survivors running, as a host would.
  phase("reclaimSlot");
  // Two killed at once are reclaimed together: neither reclaim may wait on a lock the other holds.
  // A worker killed inside its own detach() after the slot was freed still names that slot (its
  // W_CPU is cleared after detach returns): such a slot is no longer attached, or a survivor has
  // attached to it since. Only slots still attached and named by no survivor are the dead's.
  const held = await deadSlots();
  for (const d of dead) if (d.cpu >= 0 && !held.has(d.cpu)) d.cpu = -1;
  const cpus = dead.filter((d) => d.cpu >= 0).map((d) => d.cpu);
  if (cpus.length === 1) reclaimReport(heap.reclaimSlot(cpus[0]!));
  else if (cpus.length > 1) for (const r of heap.reclaimSlot(cpus)) reclaimReport(r);
  phase("orphans");
  // A worker killed inside Heap.attach claimed a slot it had not published: once no survivor is
  // attaching, that slot is the one no live worker names (a host's attachedSlots() check).
  if (dead.some((d) => d.cpu < 0)) {
    const end = Date.now() + 20_000;
    for (;;) {
      let attaching = false;
      for (const w of live) if (w !== null && Atomics.load(ctrl, wBase(w.id) + W_ATTACHING) !== 0) attaching = true;
      if (!attaching) {
        const known = new Set<number>([heap.cpu]);
        for (const w of live) if (w !== null) known.add(Atomics.load(ctrl, wBase(w.id) + W_CPU));
        let again = false;
        for (const w of live) if (w !== null && Atomics.load(ctrl, wBase(w.id) + W_ATTACHING) !== 0) again = true;
        if (!again) {
          for (const cpu of heap.attachedSlots()) {
            if (known.has(cpu)) continue;
            reclaimReport(heap.reclaimSlot(cpu));
            for (const d of dead) if (d.cpu < 0) d.cpu = cpu;
          }
          break;
        }
      }
      if (Date.now() > end) throw new Error("a survivor stayed inside Heap.attach for 20 s");
      await sleep(1);
    }
  }
  phase("pause");
  await pauseAll();
  // The dead's kfreeRcu objects are freed for good before their entries are looked at.
  phase("rcuBarrier");
  heap.rcuBarrier();
  phase("settle");
  if (opts.verbose) say(`kill ${sum.kills}: ${dead.map((d) => `worker ${d.id} (cpu ${d.cpu}, op ${d.op}, hook ${d.hop})`).join(", ")}${inDrain ? ", during another's drain" : ""}`);
  settle(dead);
  beat();
  // The dead incarnations end here: a churn cache of theirs still named now is a stuck one (G_STUCK).
  for (const d of dead) ctrl[wBase(d.id) + W_INCARN] = incarn[d.id]! + 1;
  resumeAll();
  phase("spawn");
  for (const d of dead) await spawn(d.id);
}

async function main(): Promise<void> {
  for (let id = 0; id < opts.workers; id++) await spawn(id);
  const t0 = Date.now();
  const endAt = t0 + opts.seconds * 1000;
  let nextReport = t0 + 30_000;
  while (Date.now() < endAt && sum.failures.length === 0) {
    beat();
    phase("sleep");
    await sleep(rng.range(3, 60));
    if (opts.kills) await killRound();
    else {
      phase("pause");
      await pauseAll();
      // Blocks given to kfreeRcu are allocated until their grace period ends: freed first.
      phase("rcuBarrier");
      heap.rcuBarrier();
      phase("settle");
      settle([]);
      resumeAll();
    }
    if (Date.now() >= nextReport) {
      nextReport += 30_000;
      say(`  ${Math.round((Date.now() - t0) / 1000)} s: ${sum.kills} kills, ${sum.validates} validates, heap ${(heap.size / MiB).toFixed(0)} MiB`);
    }
  }
  // The end: every worker frees what it holds and detaches.
  phase("finish");
  Atomics.store(ctrl, G_STOP, 1);
  resumeAll();
  for (const w of live) {
    if (w === null) continue;
    try {
      await deadline(w.exited, 60_000, `worker ${w.id} to finish`);
    } catch (e) {
      fail((e as Error).message);
      await w.worker.terminate();
    }
    if (!w.done && w.failed === null) fail(`worker ${w.id} exited without finishing`);
  }
  for (let id = 0; id < opts.workers; id++) {
    const wb = wBase(id);
    sum.ops += ctrl[wb + W_OPS]!;
    sum.hookActions += ctrl[wb + W_HOOKS]!;
    sum.grows += ctrl[wb + W_GROWS]!;
    sum.drains += ctrl[wb + W_DRAINS]!;
    sum.churn += ctrl[wb + W_CHURN]!;
    sum.slotsFull += ctrl[wb + W_SLOTSFULL]!;
  }
  phase("final checks");
  // Slots left by workers that failed.
  for (const cpu of heap.attachedSlots()) if (cpu !== heap.cpu) reclaimReport(heap.reclaimSlot(cpu));
  const total = E.length / E_WORDS;
  for (let e = 0; e < total; e++) {
    const w = e * E_WORDS;
    const owner = Atomics.load(E, w + E_OWNER);
    if (owner === 0) continue;
    if (owner !== HANDOFF && sum.failures.length === 0) fail(`entry ${e} still owned by worker ${owner - 1} after it finished`);
    if (E[w + E_KIND] !== KIND.cache) {
      const bad = checkPattern(heap.i32, heap.u8, E[w + E_ADDR]!, bytesOf(E[w + E_KIND]!, E[w + E_SIZE]!), E[w + E_SIG]!);
      if (bad !== null) fail(`handed-off entry ${e}: ${bad}`);
      hostRelease(e);
    }
    Atomics.store(E, w + E_OWNER, 0);
  }
  heap.rcuBarrier();
  const busyShared = new Set<string>();
  for (const c of caches) {
    try {
      c.destroy();
    } catch (err) {
      if (!(err instanceof HeapError && err.code === "EBUSY")) throw err;
      busyShared.add(c.name);
    }
  }
  heap.shrink();
  heap.validate();
  sum.validates++;
  const st = heap.stats();
  let active = 0;
  for (const s of st.slabs) {
    if (s.name === "kmem_cache_sheaf") sum.leftSheaves += s.activeObjects;
    else active += s.activeObjects;
  }
  sum.leftObjects = active;
  // A sheaf object (the allocator's own) leaves with a kill between its last use and its free.
  if (sum.leftSheaves > sum.kills) fail(`${sum.leftSheaves} sheaf objects still allocated at the end, more than the ${sum.kills} kills`);
  sum.endPages = st.totalPages;
  // The window objects the host freed from dead workers' churn caches count against the same windows.
  const leaked = active + sum.windowFreed;
  const budget = sum.objectWindow + sum.freeWindow + sum.rcuBatchKills;
  if (leaked > budget && opts.strictObjects === false) say(`note: ${active} objects still allocated at the end and ${sum.windowFreed} freed from dead workers' churn caches, more than the ${sum.objectWindow} kills in an object allocation's window, ${sum.freeWindow} inside a kfree found marked free and ${sum.rcuBatchKills} inside a kfreeRcu batch free (an open finding: a window that holds more than one object)`);
  else if (leaked > budget) fail(`${active} objects still allocated at the end and ${sum.windowFreed} freed from dead workers' churn caches, but only ${sum.objectWindow} kills landed in an object allocation's window, ${sum.freeWindow} inside a kfree found marked free and ${sum.rcuBatchKills} inside a kfreeRcu batch free`);
  const c = census();
  if (c.allocated !== 0 || c.pcp !== 0 || c.deferred !== 0 || c.rcu !== 0) fail(`at the end: ${c.allocated} pages still allocated, ${c.pcp} on pcp lists, ${c.deferred} deferred, ${c.rcu} in kfreeRcu blocks`);
  if (active + sum.leftSheaves === 0 && st.freePages !== st.totalPages) fail(`at the end ${st.freePages} of ${st.totalPages} pages are free`);
  if (active + sum.leftSheaves === 0 && c.slab !== 0) fail(`at the end ${c.slab} slab pages are left with no object allocated`);
  const names = heap.cacheNames().filter((n) => n !== null && !n.startsWith("kmalloc") && n !== "kmem_cache_sheaf" && !stuckCaches.has(n) && !busyShared.has(n));
  if (names.length > 0) fail(`named caches left: ${names.join(", ")}${stuckCaches.size > 0 ? ` (besides the ${stuckCaches.size} stuck ones)` : ""}`);
}

main()
  .catch((e: unknown) => fail(`host: ${(e as Error).stack ?? String(e)}`))
  .finally(() => {
    for (const w of live) if (w !== null) void w.worker.terminate();
    parentPort!.postMessage({ type: "summary", summary: sum });
  });
