/*
 * The memory layout of a shmalloc heap: every piece of allocator state lives in the
 * SharedArrayBuffer, and this module names each word of it. Offsets are 32-bit word indices (into
 * Int32Array/Uint32Array views) unless a name ends in _OFF, a byte offset.
 *
 * HOT SPACING. Node places a SharedArrayBuffer 16 bytes past a 64-byte boundary (a write-conflict
 * sweep finds the hardware lines of a 64 MiB buffer starting at offset 48), and the base of a
 * buffer cannot be known from JavaScript, so a 64-byte "line" of this layout may straddle two
 * hardware lines. Every group of words that one agent writes often (a slot's pcs line, its pcp
 * lock and lists, its deferred list and vmstat, its RCU read-side words, its krcp lock and
 * kfreeRcu state, a sheaf) is therefore followed and preceded by at least one 64-byte line that
 * no other agent writes: groups of at most 64 bytes start HOT_SPAN_BYTES (128) apart, the
 * x86-64 choice of crossbeam's CachePadded. Whatever the base, two such groups never share a
 * hardware line of 64 bytes. Page 0's words are shared by all agents and keep their own lines.
 *
 *   page 0            header, zone, deferred-page llist, cache table lock, RCU state
 *   per-CPU blocks    cpus x C_BYTES: slot state, pcp lock, pcp lists, deferred objects, vmstat,
 *                     RCU reader snapshot, kfreeRcu blocks and emergency array
 *   cache descriptors maxCaches x cacheBytes: config, list lock, partial list, barn, one pcs span a slot
 *   page descriptors  one PD_WORDS record per page of the heap (struct page)
 *   ...               the zone: every page from zoneStart to nrPages, managed by the buddy allocator
 * The metadata pages in front of the zone are reserved (PG_RESERVED): never handed out.
 *
 * WORDS (NAMES): each structure has one prefix, for its words, its size and the values its words
 * hold (a value of word X_Y is named X_Y_VALUE); its writer (each module's contract says more):
 *   H_    the header (page 0, line 0 and its read-only words)     writer: create; H_EMPTY_SHEAF never
 *   Z_    the zone: buddy lists, counts, watermarks, deferred pages   writer: zone lock holder;
 *         Z_DEFER_HEAD and Z_DEFER_PAGES: any agent, atomics (the lock-free llist)
 *   CT_   the cache table: its lock, count, dying caches                writer: CT_LOCK holder
 *   R_    the global RCU state: grace-period counters, in-flight count  writer: any agent, atomics
 *   C_    a CPU slot (C_BYTES each): state (C_STATE_*), flags (C_FLAG_*), pcp lists (C_PCP_*),
 *         deferred objects, the debug object hand (C_DEBUG_HAND), vmstat, RCU reader and kfreeRcu
 *         words (C_RCU_*, C_KRCP_LOCK)
 *         writer: the slot's agent, unless noted (C_STATE: attach, reclaimSlot; C_PCP_*: the pcp
 *         lock holder, C_PCP_REQ any drainer; the kfreeRcu state: the krcp lock holder)
 *   RB_   a kfreeRcu block page                 writer: the krcp lock holder, or the slot holding it
 *   K_    a cache descriptor: config, state (K_STATE_*), flags (K_FLAG_*), list lock and lists,
 *         barn (K_BARN_*), K_HDR_WORDS in all before its pcs lines      writer: per word, below
 *   PCS_  a slot's line of a cache (PCS_WORDS): its sheaves, local lock, users, hand
 *                                                              writer: the slot's agent
 *   S_    a sheaf (S_BYTES): size, capacity, next, cache, objects   writer: whoever holds it
 *   PD_   a page descriptor (PD_WORDS); PG_ are the flags in PD_FLAGS (the kernel's page flags)
 *         writer: the lock holder of its list, else its block's owner (PD_OWNER, in hand)
 *   O_    a free object's words                     writer: whoever frees it, then its list's lock
 *   M_    a debug object's metadata after its redzone (M_BYTES)  writer: its allocator or freer
 * FAST PATHS. Modules read these as their own module consts (`const { PD_FLAGS } = layout`), not
 *   named imports (a module cell load at each use). The build (tools/build.mjs) writes each use in
 *   src/ as its number: V8 inlines into a caller's loop within a bytecode budget, and a const costs
 *   a context load and a hole check there (the page pair: 14.4 -> 9.7 ns; layers.test.ts).
 * LOCKS: none; LOCK names the classes in their order (core/lock.ts). NO LOCK: constants. STALE: none.
 */

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
/** The largest end (offset + size) of a heap in its buffer, and so the largest heap and allocation:
 * addresses stay positive 32-bit integers. */
export const MAX_HEAP_END = 2 ** 31 - PAGE_SIZE;
/** Highest buddy order: blocks of 2^0 .. 2^10 pages (4 KiB .. 4 MiB). */
export const MAX_ORDER = 10;
export const NR_ORDERS = MAX_ORDER + 1;
/** PAGE_ALLOC_COSTLY_ORDER: the nolock page calls serve orders 0..3, and slabs are at most order 3. */
export const PCP_MAX_ORDER = 3;
/** The pcp lists serve orders 0..PCP_LIST_MAX_ORDER (4 KiB .. 128 KiB): the costly orders too, as
 * the kernel keeps a pcp list for the pageblock order, so that pairs of order 4 and 5 (large
 * kmalloc sizes, page buffers) do not take the zone lock each time. A slot's lists still hold at
 * most about `high` pages in all (Z_PCP_HIGH), whatever the orders. */
export const PCP_LIST_MAX_ORDER = 5;
export const NR_PCP_ORDERS = PCP_LIST_MAX_ORDER + 1;
/** A cache line, in bytes and in 32-bit words. */
export const LINE_BYTES = 64;
export const LINE_WORDS = 16;
/** The span of one agent's hot word group: two lines, so that whatever the buffer's base, no
 * hardware line holds words of two such groups (see HOT SPACING above). */
export const HOT_SPAN_BYTES = 128;
export const HOT_SPAN_WORDS = HOT_SPAN_BYTES >> 2;

/** "SHMA" */
export const HEAP_MAGIC = 0x414d4853;
/** Bumped whenever any offset in this file changes meaning. */
export const LAYOUT_VERSION = 16;

/* ---------------------------------------------------------------- header: page 0, line 0 */
/** Magic number HEAP_MAGIC. */
export const H_MAGIC = 0;
/** LAYOUT_VERSION of the creator. */
export const H_VERSION = 1;
/** The largest size in bytes the heap may grow to (maxSize): the metadata is laid out for it.
 * The size now is Z_SIZE. */
export const H_SIZE = 2;
/** log2 of the page size. */
export const H_PAGE_SHIFT = 3;
/** Pages of a heap of H_SIZE bytes, metadata included: one page descriptor each. */
export const H_NR_PAGES = 4;
/** Number of CPU slots. */
export const H_CPUS = 5;
/** Number of cache descriptors. */
export const H_MAX_CACHES = 6;
/** First page frame number managed by the zone; the pages before it hold metadata. */
export const H_ZONE_START = 7;
/** Byte offset of the per-CPU blocks. */
export const H_PCPU_OFF = 8;
/** Byte offset of the cache descriptors. */
export const H_CACHE_OFF = 9;
/** Bytes of one cache descriptor. */
export const H_CACHE_BYTES = 10;
/** Byte offset of the page descriptors. */
export const H_DESC_OFF = 11;
/** Debug flags the heap was created with (DEBUG_* bits). */
export const H_DEBUG = 12;
/** Fault-injection rate for page allocations and slab refills, in parts per 2^16 (0 = off). */
export const H_FAIL_RATE = 13;
/** Fault-injection seed (xorshift32 state, advanced under no lock; races only perturb the sequence). */
export const H_FAIL_SEED = 14;
/** Checksum over words H_MAGIC..H_DEBUG, so a random buffer is not taken for a heap. */
export const H_CHECKSUM = 15;
/** Number of header words covered by H_CHECKSUM. */
export const H_CHECKED_WORDS = 13;

/* ---------------------------------------------------------------- zone: page 0, lines 1..6 */
/** The zone lock (a spinlock word, see lock.ts). Alone on its line. */
export const Z_LOCK = 16;
/* Lines 2..4 hold the zone's data; all of it is protected by Z_LOCK. */
/** Pages free in the buddy lists (NR_FREE_PAGES). */
export const Z_FREE_PAGES = 32;
/** Pages managed by the zone. */
export const Z_MANAGED = 33;
/** Watermarks in pages. */
export const Z_WMARK_MIN = 34;
export const Z_WMARK_LOW = 35;
export const Z_WMARK_HIGH = 36;
/** pcp batch and high for every slot, in pages. */
export const Z_PCP_BATCH = 37;
export const Z_PCP_HIGH = 38;
/** The heap's size now in bytes and in pages (memory hotplug grows them under Z_LOCK; handles
 * read them with Atomics.load to rebuild their views). */
export const Z_SIZE = 39;
export const Z_NR_PAGES = 40;
/** free_area[order].free_list heads: pfn of the first free block, 0 for none (NR_ORDERS words). */
export const Z_FREE_HEAD = 48;
/** free_area[order].nr_free (NR_ORDERS words). */
export const Z_NR_FREE = 64;
/** Deferred-free llist: head pfn of pages freed by freePagesNolock when no lock could be had.
 * With Z_DEFER_PAGES, the low half of one 64-bit word (8-byte aligned, little-endian): CAS of the
 * whole word from any agent (a push), exchange with 0 by a zone-lock holder (a drain). */
export const Z_DEFER_HEAD = 80;
/** Pages on the deferred llist: the high half of Z_DEFER_HEAD's 64-bit word, changed with it only. */
export const Z_DEFER_PAGES = 81;

/* ---------------------------------------------------------------- cache table: page 0, lines 7..8 */
/** Lock serialising createCache, destroy and findCache's view of the table. */
export const CT_LOCK = 112;
/** Number of descriptor slots ever used (high-water mark). */
export const CT_NR = 128;

/* ---------------------------------------------------------------- RCU: page 0, lines 9..10 */
/** Grace-period counter G: bumped (compareExchange c -> c + 1) when a waiter for cookie c starts a
 * period. Readers copy G + 1 into their slot at the outermost rcuReadLock. Own line. */
export const R_GP_SEQ = 144;
/** Highest cookie + 1 known complete (compareExchange-max by whoever saw it complete). Own line. */
export const R_GP_DONE = 160;

/* ---------------------------------------------------------------- page 0, line 11: read-only words */
/** A sheaf with size 0 and capacity 0 that every unused pcs main points at: the fast paths find it
 * both empty and full and go to the slow path, which installs a real sheaf. Never written. */
export const H_EMPTY_SHEAF = 176;
/** Caches in the K_STATE_DYING state (the slow paths of every slot flush their sheaves of them). */
export const CT_NR_DYING = 192;
/** kfreeRcu objects taken off a slot for freeing, not yet freed, all agents (Atomics.add/sub). */
export const R_INFLIGHT = 208;

/** Words of page 0 in use. */
export const H_WORDS = 224;

/* ---------------------------------------------------------------- per-CPU block */
/** Bytes per CPU slot block: 22 lines. Groups that another agent reads or writes (line 0, the pcp
 * lock and lists, the RCU read side, the krcp lock and state) are kept a free line away from the
 * groups the owner writes on its own (deferred list, vmstat) and from each other (HOT SPACING):
 * lines 1, 4, 8, 10, 20 and 21 hold nothing. */
export const C_BYTES = 1408;
export const C_WORDS = C_BYTES >> 2;
/* line 0: slot state; read by other agents when they attach, written by the owner otherwise. */
/** C_STATE_FREE, C_STATE_ATTACHED, C_STATE_RECLAIMING (with its claimant, slotReclaimingBy) or C_STATE_DEAD; claimed by CAS. */
export const C_STATE = 0;
/** Incremented at every attach and every reclaimSlot, so a stale handle of an earlier attach can be
 * recognised: its slow paths compare it with the value it claimed and throw EDETACHED. */
export const C_GEN = 1;
/** Slot flags (CPUF_*). */
export const C_FLAGS = 2;
/** freeArray's probe: the slot's handle stores a new value and reads it back through a view's
 * buffer to tell the same memory from a copy or another heap. Owner only. */
export const C_VIEW_PROBE = 3;
/** Locks this slot holds, by class (LOCK_CLASSES words); plain words, owner only (lockdep's held_locks).
 * C_HELD_MASK and C_FAIL_STATE follow them (defined after LOCK_CLASSES, below). */
export const C_HELD = 4;
/** pcp lock (biased): the owner keeps it between calls; a remote drainer takes it when it is 0. Line 2. */
export const C_PCP_LOCK = 32;
/** Remote agents waiting for the pcp lock (Atomics.add/sub): the owner hands the lock over when non-zero. */
export const C_PCP_REQ = 33;
/* line 3: the pcp lists, protected by C_PCP_LOCK. */
/** Pages on this slot's pcp lists, all orders. */
export const C_PCP_COUNT = 48;
/** List heads, one per pcp order (NR_PCP_ORDERS): pfn of the first block, 0 for none. */
export const C_PCP_HEAD = 49;
/** 1 while the owner is inside a pcp section (the local trylock that re-entry finds held). Owner only. */
export const C_PCP_BUSY = C_PCP_HEAD + NR_PCP_ORDERS;
/** The slot + 1 whose C_PCP_REQ this slot has raised as a remote drainer (pcpLockRemote), 0 for
 * none. Owner only; reclaimSlot lowers that request for a slot that died waiting, so the other
 * slot keeps its fast path. */
export const C_PCP_REQ_AT = C_PCP_BUSY + 1;
/* line 5: the deferred object list of kfreeNolock, and the bulk hands. Owner only (re-entry is
 * synchronous); reclaimSlot drains and frees them for a dead owner. */
/** Head address of the deferred object llist (linked through each object's first word); objects on it. */
export const C_DEFER_HEAD = 80;
export const C_DEFER_NR = 81;
/** The bulk hand: the pages allocPagesBulk is handing over (first pfn, chained through PD_NEXT) until
 * its last statement, else 0. Owner only; reclaimSlot frees a dead owner's (freeBlocksInHand). */
export const C_BULK_PAGES = 82;
/** The objects cache.allocBulk has taken (the last, chained through O_NEXT) and how many, until its
 * last statement (slab/bulk.ts). Owner only; reclaimSlot frees a dead owner's. */
export const C_BULK_OBJ = 83;
export const C_BULK_NR = 84;
/** Debug caches only: the object this slot is allocating (from before it leaves its sheaf or
 * freelist until its state says allocated) or freeing (C_DEBUG_HAND_FREE set: from before its state
 * says free until a sheaf, freelist or deferred list has it), 0 for none. Owner only, plain;
 * reclaimSlot returns a dead slot's (slab/debug_hand.ts). */
export const C_DEBUG_HAND = 85;
export const C_DEBUG_HAND_FREE = 1; // C_DEBUG_HAND's low bit (objects are 8-byte aligned): being freed
/** The object this slot's kfree slow path or deferred drain is freeing (tagged, in no list yet), or
 * (| C_FREEING_TAKING) one an allocation popped, else 0. Owner only; searches, destroy, reclaimSlot read it. */
export const C_FREEING = 86;
export const C_FREEING_TAKING = 1; // its low bit (objects are 8-byte aligned): being allocated
/* lines 6..7: vmstat event counters, VM_* indices; owner only, plain increments. */
export const C_VMSTAT = 96;
/* line 9: RCU read side. Written by the owner only; read by grace-period waiters with Atomics.load. */
/** Read-side nesting depth (rcu_read_lock_nesting); plain, owner only. */
export const C_RCU_NEST = 144;
/** G + 1 as read at the outermost rcuReadLock, 0 outside any section (Atomics.store by the owner). */
export const C_RCU_SNAP = 145;
/** line 11: the krcp lock (class rcu), next to line 12 and the emergency array that it guards. */
export const C_KRCP_LOCK = 176;
/* line 12: kfreeRcu state (kfree_rcu_cpu), protected by C_KRCP_LOCK */
/** Address of the block page being filled, 0 for none. */
export const C_RCU_BLOCK = 192;
/** First and last block page waiting for its grace period (chained through the block's RB_NEXT). */
export const C_RCU_WAIT = 193;
export const C_RCU_WAIT_TAIL = 194;
/** Objects waiting in this slot's blocks and emergency array. */
export const C_RCU_PENDING = 195;
/** Block pages this slot holds. */
export const C_RCU_BLOCKS = 196;
/** Entries in the emergency array, and the cookie they wait for. */
export const C_RCU_EMERG_NR = 197;
export const C_RCU_EMERG_GP = 198;
/** Spare block pages (chained through RB_NEXT) and their number: the kernel's bkvcache, refilled
 * outside kfreeRcu so that a new block rarely needs the pcp list. */
export const C_RCU_SPARE = 199;
export const C_RCU_NR_SPARE = 200;
/** Objects this slot took off some slot (takeExpired) and has not freed yet: its share of
 * R_INFLIGHT, which reclaimSlot gives back when the slot died holding them. Owner only. */
export const C_RCU_INFLIGHT = 201;
export const C_RCU_SPARE_MAX = 4;
/** lines 13..19: the emergency array: objects queued when no block page could be had. */
export const C_RCU_EMERG = 208;
export const C_RCU_EMERG_MAX = 112;

/* kfree_rcu block page: a header and the addresses waiting for one grace period */
/** Addresses in the block. */
export const RB_COUNT = 0;
/** The cookie (value of G) of the newest address: the block is freed once that period is over. */
export const RB_GP = 1;
/** Next block on the slot's wait chain. */
export const RB_NEXT = 2;
export const RB_ADDRS = 4;
export const RB_CAP = (4096 >> 2) - RB_ADDRS;

export const C_STATE_FREE = 0;
export const C_STATE_ATTACHED = 1;
/** A slot reclaimSlot has claimed. The claimant's slot + 1 is stored above C_STATE_RECLAIMER_SHIFT in
 * the same word (slotReclaimingBy), so that a reclaimer killed mid-reclaim is known: reclaimSlot
 * of the claimant finishes the job. Read the state with C_STATE_MASK. */
export const C_STATE_RECLAIMING = 2;
export const C_STATE_RECLAIMER_SHIFT = 8;
export const C_STATE_MASK = (1 << C_STATE_RECLAIMER_SHIFT) - 1;
/** C_STATE of a slot that slot `by` is reclaiming. */
export function slotReclaimingBy(by: number): number {
  return C_STATE_RECLAIMING | ((by + 1) << C_STATE_RECLAIMER_SHIFT);
}
/** The slot reclaiming a slot of state `state`: -1 when none is recorded (an earlier release's
 * plain C_STATE_RECLAIMING), or when the slot is not being reclaimed (then also see the state). */
export function slotReclaimer(state: number): number {
  return (state & C_STATE_MASK) === C_STATE_RECLAIMING ? (state >>> C_STATE_RECLAIMER_SHIFT) - 1 : -1;
}
/** A slot an earlier release marked dead (its agent died holding a lock; waiters on its locks get
 * EOWNERDEAD). reclaimSlot now takes such locks over and reclaims the slot instead; kept so that a
 * heap marked by the earlier release can still be reclaimed. */
export const C_STATE_DEAD = 3;

/** The slot's agent must never block: GFP.KERNEL spins instead of Atomics.wait. */
export const C_FLAG_NOBLOCK = 1;

/* ---------------------------------------------------------------- vmstat counters (per slot) */
export const VM = {
  pgalloc: 0, // pages handed out by the page allocator (in pages)
  pgfree: 1, // pages returned to it (in pages)
  pcpRefill: 2, // pcp list refills from the zone (one zone-lock hold each)
  pcpDrain: 3, // pcp drains back to the zone
  pcpTrylockFail: 4, // pcp trylock found the lock held: went to the buddy lists
  zoneContended: 5, // the zone lock was held when wanted: spun or waited
  zoneTrylockFail: 6, // a nolock call found the zone lock held
  allocFail: 7, // allocations (pages, kmalloc, cache) that returned 0, GFP.NOWARN ones excepted
  pagesDeferred: 8, // pages parked on the zone's deferred llist
  pagesUndeferred: 9, // pages drained from it into the buddy lists
  directReclaim: 10, // GFP.KERNEL drained every slot's pcp lists before giving up
  fastTryFail: 11, // GFP.FAST_TRY found no page on this slot's pcp list
  sheafRefill: 12, // a sheaf was refilled from the slabs
  sheafFlush: 13, // a sheaf was flushed to the slabs
  barnGet: 14, // a full sheaf taken from the barn
  barnPut: 15, // a full sheaf handed to the barn
  slabAlloc: 16, // new slabs
  slabFree: 17, // slabs returned to the page allocator
  nolockFail: 18, // kmallocNolock / allocPagesNolock calls that returned 0
  nolockNextClass: 19, // kmallocNolock retried in the next size class
  objectsDeferred: 20, // kfreeNolock could not take the sheaf: object deferred
  objectsUndeferred: 21, // deferred objects freed on a later normal call
  hookErrors: 22, // exceptions thrown by hooks or trace handlers, caught by the allocator
  failInjected: 23, // allocations failed on purpose by fault injection
  kmallocLarge: 24, // kmalloc requests served straight from the page allocator
  rcuQueued: 25, // objects given to kfreeRcu
  rcuFreed: 26, // objects freed after their grace period
  rcuEmergency: 27, // kfreeRcu calls that found no block page
  rcuSyncFallback: 28, // kfreeRcu waited for a grace period inline
  heapGrow: 29, // the heap grew (memory hotplug)
  lockGiveUp: 30, // an agent that must not block gave up on a lock held past NOBLOCK_BOUND_MS
} as const;
export const NR_VM = 31;
export type VmItem = keyof typeof VM;

/* ---------------------------------------------------------------- lock classes */
/** Lock classes, in lock order: a lock may be taken while holding only classes listed before it. */
export const LOCK = {
  rcu: 0, // a slot's C_KRCP_LOCK
  ctable: 1, // CT_LOCK
  sheaf: 2, // a slot's per-cache local lock (pcs PCS_LOCKED): plain flag, owner only
  barn: 3, // a cache's K_BARN_LOCK
  list: 4, // a cache's K_LIST_LOCK (kmem_cache_node.list_lock)
  pcp: 5, // a slot's C_PCP_LOCK
  zone: 6, // Z_LOCK
} as const;
export const LOCK_CLASSES = 7;
/* Per-CPU line 0 again (after C_HELD, defined here because they count LOCK_CLASSES words). */
/** Word after the per-class held counts: a bitmask of the classes held. Owner only, plain. */
export const C_HELD_MASK = C_HELD + LOCK_CLASSES;
/** Per-slot xorshift32 state for fault injection. Owner only, plain. */
export const C_FAIL_STATE = C_HELD_MASK + 1;
export const LOCK_NAMES = Object.freeze(["rcu", "ctable", "sheaf", "barn", "list", "pcp", "zone"] as const);

/* ---------------------------------------------------------------- cache descriptor */
/** Header lines before the per-slot pcs lines: configuration, name, list lock and lists, a free
 * line, barn lock and barn, a free line (HOT SPACING: the list and barn groups are written by any
 * slot, each pcs line by its slot alone, the configuration line read by every fast path). */
export const K_HDR_LINES = 8;
export const K_HDR_WORDS = K_HDR_LINES * LINE_WORDS;
/** Stride of the per-slot pcs lines: one line of words and one free line (HOT SPACING). */
export const PCS_WORDS = HOT_SPAN_WORDS;
/* line 0: configuration, written once at createCache under CT_LOCK, read-only afterwards. */
/** K_STATE_FREE, K_STATE_ACTIVE or K_STATE_DYING. */
export const K_STATE = 0;
/** The object size the creator asked for. */
export const K_OBJ_SIZE = 1;
/** Stride between objects: K_OBJ_SIZE rounded up to the alignment. */
export const K_SIZE = 2;
/** Alignment of every object. */
export const K_ALIGN = 3;
/** Slab order. */
export const K_ORDER = 4;
/** Objects per slab. */
export const K_OBJS = 5;
/** Sheaf capacity (0 = the cache has no sheaves, as the sheaf cache itself). */
export const K_SHEAF_CAP = 6;
/** K_FLAG_* flags. */
export const K_FLAGS = 7;
/** Bytes of the UTF-8 name in line 1. */
export const K_NAME_LEN = 8;
/** Empty slabs the slab decay keeps on the partial list (min_partial); shrink keeps none. */
export const K_MIN_PARTIAL = 9;
/** Incremented at every createCache in this descriptor, so stale KmemCache handles are refused. */
export const K_GEN = 10;
/** Most empty slabs the partial list keeps (at least K_MIN_PARTIAL): an empty slab beyond it goes
 * back to the page allocator at once; the slab decay brings the count back to K_MIN_PARTIAL. */
export const K_MAX_EMPTY = 11;
/** 1 / K_SIZE rounded up (invSize in slab/sizes.ts) as a float64 at this (even) word: the fast free path divides with a multiply. */
export const K_INV_SIZE = 12;
/** Debug heaps: byte offset, inside each object's stride, of its two metadata words (0: none). */
export const K_META = 14;
/** Debug heaps: bytes of each object that poisoning covers (the object size rounded up to 8). */
export const K_INUSE = 15;
/** Line 1: the name, up to K_NAME_MAX UTF-8 bytes. */
export const K_NAME = 16;
export const K_NAME_MAX = 64;
/** Line 2: the list lock (kmem_cache_node.list_lock). */
export const K_LIST_LOCK = 32;

/* line 3: slab lists and counts, protected by K_LIST_LOCK */
/** Head pfn of the partial list (slabs with at least one free object, empty ones included). */
export const K_PARTIAL = 48;
export const K_NR_PARTIAL = 49;
/** Slabs of this cache. */
export const K_NR_SLABS = 50;
/** Objects in those slabs. */
export const K_TOTAL_OBJS = 51;
/** Objects free on the slabs' own freelists. */
export const K_FREE_OBJS = 52;
/** Empty slabs on the partial list. */
export const K_NR_EMPTY = 53;
/** Head pfn of the full list (slabs with no free object) and its length. */
export const K_FULL = 54;
export const K_NR_FULL = 55;
/** Slab decay: the fewest empty slabs the cache had since the last decay step. Those were not
 * needed by any allocation during the whole period: the next step releases half of them above
 * K_MIN_PARTIAL (jemalloc's and mimalloc's decay, in steps of list-lock holds instead of time). */
export const K_EMPTY_LOW = 56;
/** Frees to the slabs (list-lock holds that put objects back) since the last decay step. */
export const K_DECAY_TICKS = 57;
/** Line 5: the barn lock (line 4 holds nothing). */
export const K_BARN_LOCK = 80;
/* line 6: the barn, protected by K_BARN_LOCK; each list's count is the word after its head */
/** Head address of the full sheaves (linked through S_NEXT). */
export const K_BARN_FULL = 96;
export const K_BARN_NR_FULL = 97;
/** Head address of the empty sheaves. */
export const K_BARN_EMPTY = 98;
export const K_BARN_NR_EMPTY = 99;
/** Most full (and most empty) sheaves the barn keeps: configuration (slab/sizes.ts barnCapacity). */
export const K_BARN_CAP = 100;
/** Full sheaves the barn took since the last decay step it started (slab/decay.ts barnDecay). */
export const K_BARN_TICKS = 101;
/** Bound of every barn's lists: no K_BARN_CAP is larger. */
export const K_BARN_MAX = 64;

/* pcs: a line a slot after the header, PCS_WORDS apart; owner only but when the slot is reclaimed */
/** Address of the main sheaf (0 before first use). */
export const PCS_MAIN = 0;
/** Address of the spare sheaf (0 for none). */
export const PCS_SPARE = 1;
/** The local lock: 1 while a slow path of this slot works on these sheaves. */
export const PCS_LOCKED = 2;
/** Slow paths of this slot inside this named cache (Atomics.add/sub by the slot, Atomics.load by a
 * releaser; reclaimSlot clears a dead slot's): a dying cache is not released while any is non-zero,
 * so no slow path works on a descriptor that is being reused. */
export const PCS_USERS = 3;
/** A sheaf this slot has in its hands, off the barn or leaving the pcs line for it (0: none). Owner
 * only; reclaimSlot flushes a dead slot's unless the pcs line or a barn list has it by then.
 * On the sheaf cache's lines (it has no sheaves): the sheaf object this slot is allocating or
 * freeing (slab/sheaf_hand.ts), which reclaimSlot frees unless something else holds it. */
export const PCS_HAND = 4;
/** On the sheaf cache's lines only: SHEAF_HANDS_NESTED more sheaf hands, for the sheaf object of a
 * path that re-entered (a reentry hook, a trace handler; at most one of each at a time) while the
 * words before were taken (slab/sheaf_hand.ts). Owner only; reclaimSlot frees a dead slot's. */
export const PCS_HANDS_NESTED = 5;
export const SHEAF_HANDS_NESTED = 2;
/** Address of the remote sheaf: objects of slabs another slot owns (PD_OWNER of a slab page) that
 * this slot freed; never allocated from here, it goes to the barn whole (the placeholder for none). */
export const PCS_REMOTE = 7;
/** The pcs words that hold a sheaf of free objects (a placeholder or 0 for none). */
export const PCS_SHEAVES: readonly number[] = Object.freeze([PCS_MAIN, PCS_SPARE, PCS_REMOTE]);

export const K_STATE_FREE = 0;
export const K_STATE_ACTIVE = 1;
export const K_STATE_DYING = 2;

/** A kmalloc size-class cache. */
export const K_FLAG_KMALLOC = 1;
/** The cache that sheaves themselves come from. */
export const K_FLAG_SHEAF_CACHE = 2;

/* ---------------------------------------------------------------- a free object's words */
/** Word 0 of every free object (in a slab freelist, a sheaf, the barn or a deferred list) holds
 * its address xor O_FREE_TAG: kfree of an object that still carries it is checked for a double free. */
export const O_FREE_TAG = 0x6b6b1e55;
/** Word 1 of a free object on a slab freelist or a deferred list: the next object's address. */
export const O_NEXT = 1;

/* ---------------------------------------------------------------- sheaf (an object of the sheaf cache) */
/** Objects in the sheaf. */
export const S_SIZE = 0;
export const S_CAP = 1; // capacity
/** Next sheaf on a barn list. */
export const S_NEXT = 2;
/** Cache id the sheaf serves. */
export const S_CACHE = 3;
/** First object address. */
export const S_OBJS = 4;
/** Largest sheaf capacity (objects below 256 B: sheafCapacity). */
export const S_MAX_CAP = 124;
/** Bytes of a sheaf object: its words, then HOT_SPAN_BYTES nobody writes, so that the words two
 * slots' sheaves side by side write at every push and pop (the tail of a full one, the head of the
 * next) are 128 bytes apart, whatever the base (HOT SPACING; objects aligned to LINE_BYTES). */
export const S_BYTES = (S_OBJS + S_MAX_CAP) * 4 + HOT_SPAN_BYTES;

/* ---------------------------------------------------------------- page descriptor (struct page) */
export const PD_WORDS = 8;
/** PG_* flags in bits 0..7, order in bits 8..11. Zero for a page that is not the head of a block. */
export const PD_FLAGS = 0;
/** List links (buddy free list, pcp list, partial list, deferred llist): pfns, 0 for none. */
export const PD_NEXT = 1;
export const PD_PREV = 2;
/** Slab pages: pfn of the slab's head page. */
export const PD_HEAD = 3;
/** Slab pages: cache id. */
export const PD_CACHE = 4;
/** Slab head: address of the first free object, 0 for none. */
export const PD_FREELIST = 5;
/** Slab head: objects handed out of the slab (to callers, sheaves or the barn). */
export const PD_INUSE = 6;
/** pcp pages: slot whose list holds them. Allocated blocks: slot that allocated them. */
export const PD_OWNER = 7;

export const PG_ORDER_SHIFT = 8;
export const PG_ORDER_MASK = 0xf << PG_ORDER_SHIFT;
/** Head of a free block in the buddy lists. */
export const PG_BUDDY = 1;
/** Head of a block handed out by allocPages. */
export const PG_HEAD = 2;
/** Head of a block on a pcp list. */
export const PG_PCP = 4;
/** A page of a slab (head and tails). */
export const PG_SLAB = 8;
/** Head of a kmalloc allocation too large for the size classes. */
export const PG_LARGE = 16;
/** Head of a block parked on the zone's deferred llist. */
export const PG_DEFERRED = 32;
/** Metadata page, never managed by the zone. */
export const PG_RESERVED = 64;
/** Head of a block that holds kfree_rcu pointers (a kfreeRcu block page). */
export const PG_RCU_BLOCK = 128;
/** With PG_HEAD: a block in the hands of slot PD_OWNER inside the allocator (taken off a list and not
 * yet given its kind, or on its way back to a list; a slab leaving its cache; a block being merged).
 * Never a caller's: reclaimSlot of that slot returns every such block to the free lists. Bit 12,
 * above the order. */
export const PG_INHAND = 1 << 12;

/* ---------------------------------------------------------------- debug flags */
export const DEBUG_POISON = 1;
export const DEBUG_REDZONE = 2;
export const DEBUG_TRACK = 4;
/** Debug heaps: redzone bytes after each object's K_INUSE bytes. */
export const DEBUG_RZ = 8;
/** Debug heaps: metadata words after the redzone: M_STATE and M_REQ. */
export const M_STATE = 0;
export const M_REQ = 1;
export const M_BYTES = 8;
/** M_STATE values. */
export const M_STATE_FREE = 0x46524545;
export const M_STATE_ALLOC = 0x414c4c4f;
export const M_STATE_RCU = 0x52435521;
/** Poison of a free object's bytes 8.. (POISON_FREE) and of a live object's redzones (SLUB_RED_ACTIVE). */
export const POISON_FREE = 0x6b;
/** POISON_FREE in all four bytes of a word: word 1 of a free debug object off any list. */
export const POISON_WORD = 0x6b6b6b6b;
export const RED_ACTIVE = 0xcc;

/** The computed geometry of a heap, shared by create and attach. */
export interface Geometry {
  readonly size: number;
  readonly nrPages: number;
  readonly cpus: number;
  readonly maxCaches: number;
  readonly pcpuOff: number;
  readonly cacheOff: number;
  readonly cacheBytes: number;
  readonly descOff: number;
  readonly zoneStart: number;
}

/** Round n up to a multiple of the power of two a. */
export function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}
/** Bytes of one cache descriptor with `cpus` pcs lines. */
export function cacheBytesFor(cpus: number): number {
  return (K_HDR_WORDS + cpus * PCS_WORDS) * 4;
}

/** Place the metadata regions for a heap of `size` bytes (a multiple of PAGE_SIZE). */
export function computeGeometry(size: number, cpus: number, maxCaches: number): Geometry {
  const nrPages = size >>> PAGE_SHIFT;
  const pcpuOff = PAGE_SIZE;
  const cacheOff = alignUp(pcpuOff + cpus * C_BYTES, LINE_BYTES);
  const cacheBytes = cacheBytesFor(cpus);
  const descOff = alignUp(cacheOff + maxCaches * cacheBytes, LINE_BYTES);
  const metaEnd = descOff + nrPages * PD_WORDS * 4;
  const zoneStart = alignUp(metaEnd, PAGE_SIZE) >>> PAGE_SHIFT;
  return { size, nrPages, cpus, maxCaches, pcpuOff, cacheOff, cacheBytes, descOff, zoneStart };
}
/** The header checksum: a multiplicative hash of the checked words. */
export function headerChecksum(u32: Uint32Array): number {
  let h = 0x9e3779b9;
  for (let i = 0; i < H_CHECKED_WORDS; i++) h = Math.imul(h ^ (u32[i] ?? 0), 0x85ebca6b) >>> 0;
  return h >>> 0;
}
