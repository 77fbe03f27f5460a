/*
 * The kill harness's shared words (test/kill.ts, test/workers/kill-host.ts, test/workers/killee.ts).
 *
 * ctrl (Int32Array over its own SharedArrayBuffer):
 *   G_STOP, G_PAUSE, G_BEAT (the host's heartbeat, watched by the main thread), then one block of
 *   W_WORDS per worker: its slot (-1 while it has none: before attach, inside detach/attach), its
 *   pause acknowledgement, its operation count, its pending record (what it is doing now, written
 *   before the call and cleared after the result is recorded) and the hook's pending record.
 *
 * entries (Int32Array): E_WORDS per entry, ENTRIES_PER_WORKER entries per worker, in the worker's own
 *   range. Word E_OWNER says who owns the block: 0 none (free entry), worker id + 1, or HANDOFF (put
 *   out for any worker to adopt and free: a cross-agent free). A worker fills E_KIND..E_SIG first and
 *   stores E_OWNER last; whoever frees it stores 0 in E_OWNER after the free.
 */
export const G_STOP = 0;
export const G_PAUSE = 1;
export const G_BEAT = 2;
/** What the host is doing (an index into HOST_PHASES), for the report of a hang. */
export const G_PHASE = 3;
/** Churn caches of dead workers that can never be destroyed (host-written while workers are paused). */
export const G_STUCK = 4;
export const HOST_PHASES = ["start", "sleep", "terminate", "reclaimSlot", "orphans", "pause", "rcuBarrier", "settle", "validate", "spawn", "finish", "final checks"] as const;
export const G_WORDS = 16;

export const W_CPU = 0;
export const W_ACK = 1;
export const W_OPS = 2;
/** Pending record of the main loop: op, entry, kind, size (or order, or count). */
export const W_POP = 3;
export const W_PENTRY = 4;
export const W_PKIND = 5;
export const W_PSIZE = 6;
/** Pending record of the reentry hook: op, kind, size. */
export const W_HOP = 7;
export const W_HKIND = 8;
export const W_HSIZE = 9;
/** The worker's incarnation (host-written before it starts), for cache names. */
export const W_INCARN = 10;
/** Kills that hit this worker id, reentry hook actions, growths, drains (detach + attach, shrink). */
export const W_HOOKS = 11;
export const W_GROWS = 12;
export const W_DRAINS = 13;
export const W_CHURN = 14;
/** 1 while the worker is inside a drain (shrink, cache.shrink, detach + attach, rcuBarrier). */
export const W_INDRAIN = 15;
/** 1 from just before Heap.attach until its slot is in W_CPU (the slot it claims is unknown meanwhile). */
export const W_ATTACHING = 16;
/** What the worker is doing in a drain: 1 shrink, 2 cache.shrink, 3 detach + attach, 4 rcuBarrier. */
export const W_DRAINOP = 17;
/** createCache calls refused because every named cache slot was in use (each one accounted for). */
export const W_SLOTSFULL = 18;
export const W_WORDS = 20;

export function wBase(id: number): number {
  return G_WORDS + id * W_WORDS;
}

/** Pending ops. */
export const OP = {
  none: 0,
  alloc: 1,
  free: 2,
  rcuFree: 3,
  realloc: 4,
  bulkPages: 5,
  createCache: 6,
  destroyCache: 7,
  cacheBulk: 8,
} as const;

/** Entry kinds. */
export const KIND = {
  /** kmalloc / kmallocNolock object (slab), freed with kfree. */
  obj: 1,
  /** kmalloc above the size classes: pages, freed with kfree. */
  large: 2,
  /** allocPages block: E_SIZE is its order. */
  pages: 3,
  /** An object of a named cache; E_SIZE is its size, freed with kfree. */
  cobj: 4,
  /** A churn cache this worker created: E_ADDR is its name number, E_SIZE its object size. */
  cache: 5,
} as const;

export const E_OWNER = 0;
export const E_KIND = 1;
export const E_ADDR = 2;
export const E_SIZE = 3;
export const E_SIG = 4;
/** For cache objects: the entry of their churn cache, or -1 for a shared cache. */
export const E_CACHE = 5;
export const E_WORDS = 6;
export const ENTRIES_PER_WORKER = 48;
export const HANDOFF = -1;

/** The name of churn cache `n` of worker `id`, incarnation `incarn`. */
export function churnName(id: number, incarn: number, n: number): string {
  return `w${id}.${incarn}-${n}`;
}

/** The worker id and incarnation of a churn cache's name, or null for another name. */
export function churnOwner(name: string): { id: number; incarn: number } | null {
  const m = /^w(\d+)\.(\d+)-\d+$/.exec(name);
  return m === null ? null : { id: Number(m[1]), incarn: Number(m[2]) };
}

/** Shared caches the host creates for every worker. */
export const SHARED_CACHES = [
  { name: "kill-24", size: 24, align: 8 },
  { name: "kill-700", size: 700, align: 64 },
] as const;

export interface KilleeData {
  buffer: SharedArrayBuffer;
  ctrl: SharedArrayBuffer;
  entries: SharedArrayBuffer;
  id: number;
  seed: number;
  reentry: boolean;
  growth: boolean;
  debug: boolean;
  maxSize: number;
}

export interface KillOptions {
  seconds: number;
  workers: number;
  growth: boolean;
  kills: boolean;
  reentry: boolean;
  debug: boolean;
  seed: number;
  /** Print a line per kill. */
  verbose: boolean;
  /** Objects left beyond the one-object windows are a failure (default); false: a note in the output. */
  strictObjects?: boolean;
}

export interface KillSummary {
  seed: number;
  seconds: number;
  workers: number;
  kills: number;
  doubleKills: number;
  killsInDrain: number;
  spawned: number;
  ops: number;
  hookActions: number;
  grows: number;
  drains: number;
  churn: number;
  validates: number;
  /** Blocks of the dead workers the host freed after reclaimSlot (recorded allocations). */
  hostFreed: number;
  /** Page blocks in flight (allocated, not yet recorded by the dead worker) found by owner and freed. */
  inFlightRecovered: number;
  /** Pending frees of the dead found already done (or redone by the host). */
  pendingResolved: number;
  /** Kills that landed between an object allocation and its recording (the caller's window): the most objects that can stay allocated. */
  objectWindow: number;
  /** Kills of a worker that was freeing a kfreeRcu batch (it may leak the one object it was freeing). */
  rcuBatchKills: number;
  /** What reclaimSlot reported, summed. */
  reclaimLocks: number;
  reclaimRebuilt: number;
  reclaimPages: number;
  reclaimObjects: number;
  reclaimInHand: number;
  /** Objects still allocated at the end (at most objectWindow + rcuBatchKills). */
  leftObjects: number;
  /** Objects left in a dead worker's churn caches by its allocation window, freed by the host so the caches could be destroyed (they count against objectWindow too). */
  windowFreed: number;
  /** Debug mode: pending frees of the dead whose object the host's kfree found marked free (done, or the object left in kfree's window). */
  freeWindow: number;
  /** Churn caches of dead workers kept for the run: an object whose debug state says free but that is on no list (an allocation or a kfree the kill cut short), which no kfree accepts. */
  stuckCaches: number;
  /** createCache calls refused (EINVAL) with every named cache slot accounted for: shared, live workers' churn caches, stuck ones. */
  slotsFull: number;
  /** The allocator's own sheaf objects still allocated at the end (at most one a kill). */
  leftSheaves: number;
  startPages: number;
  endPages: number;
  failures: string[];
}
