/*
 * Tracepoints. Handlers belong to the agent that registered them and run synchronously inside the
 * allocator, possibly with its locks held: from a handler only nolock calls are allowed (a normal
 * call that would need a held lock throws EDEADLK). An exception thrown by a handler is caught and
 * counted in vmstat.hookErrors: it cannot unwind through a locked section. Events raised while a
 * handler of this agent is running (by the allocator calls that handler makes) are not delivered,
 * as the kernel's trace recursion protection does; `dropped` counts them.
 * Free events fire once the block is free (objects) or in the freeing slot's hand (pages); while
 * an allocation event runs, `returning` names its block, which the free paths refuse. Handlers
 * removed by a running handler turn the fast paths back on only when the emit ends (onChange).
 *
 * Two objects per handle: TraceState (mask, handlers, emit: the layers read and call it; a user
 * never gets it) and Trace, the public facade (heap.trace) holding the state in a #private field,
 * with only dropped, on, off and clear. Handlers are called as plain functions (`this` undefined).
 *
 * WORDS: none in the shared buffer; the mask, handlers and `dropped` are the handle's own objects,
 *   written by its agent only (on, off, clear, emit).
 * LOCKS: none taken; emit runs with whatever locks its caller holds (any class), which is why a
 *   handler may make nolock calls only.
 * NO LOCK: everything here.
 * STALE: nothing: no other agent reads this state.
 */
import { describe, einval } from "./check.js";
import { ErrorCode, HeapError } from "./errors.js";

/** Tracepoint ids; the names are the kernel's. */
export const TP = {
  kmalloc: 0,
  kfree: 1,
  kmem_cache_alloc: 2,
  kmem_cache_free: 3,
  mm_page_alloc: 4,
  mm_page_free: 5,
  mm_page_alloc_zone_locked: 6,
  mm_page_pcpu_drain: 7,
  contention_begin: 8,
  contention_end: 9,
  slab_error: 10,
  rcu_grace_period: 11,
} as const;
export type TraceEvent = keyof typeof TP;
/** The events about a block being handed out: TraceState.returning is set while they run. */
const ALLOC_EVENTS = (1 << TP.kmalloc) | (1 << TP.kmem_cache_alloc) | (1 << TP.mm_page_alloc);
/** The library's own copy of the event names (the exported TRACE_EVENTS is a frozen copy). */
const TRACE_EVENT_IDS: readonly TraceEvent[] = Object.keys(TP) as TraceEvent[];
export const TRACE_EVENTS: readonly TraceEvent[] = Object.freeze([...TRACE_EVENT_IDS]);

/** The figures an event carries. Fields that do not apply to an event are absent. */
export interface TraceRecord {
  event: TraceEvent;
  cpu: number;
  addr?: number;
  order?: number;
  size?: number;
  /** The bytes the block really holds (its size class; the kernel's bytes_alloc), where `size` is the bytes asked for: only on events that know it. */
  allocSize?: number;
  cache?: string;
  lock?: string;
  gfp?: number;
  message?: string;
  gp?: number;
}
export type TraceHandler = (record: TraceRecord) => void;

/**
 * The tracepoint state of one heap handle, internal: the layers test `mask` and call `emit`. A user
 * never gets this object, only the Trace facade over it (makeTrace), so that none of its fields or
 * methods can be reached or patched from outside.
 */
export class TraceState {
  /** Bit i set while event i has a handler: the allocator tests this one field. */
  mask = 0;
  /** Events not delivered because a handler of this agent was already running (recursion protection). */
  dropped = 0;
  #depth = 0;
  /** A handler removed handlers while it ran: onChange runs when the emit ends (#removed). */
  #pendingChange = false;
  readonly #handlers: TraceHandler[][];
  /** Set by the heap: counts handler exceptions. */
  onError: () => void = () => {};
  /** Set by the heap: the set of events with handlers changed. */
  onChange: () => void = () => {};
  /** Set by the heap's detach(): why `on` now throws EDETACHED (off and clear stay no-ops). */
  detached: string | null = null;
  /**
   * The address an allocation event (kmalloc, kmem_cache_alloc, mm_page_alloc) is about while its
   * handlers run, else -1: the block is not yet its caller's, and a free of it from a handler is
   * refused (kfreeSlow, kfreeRcu) instead of handing it out freed.
   */
  returning = -1;

  constructor() {
    this.#handlers = TRACE_EVENT_IDS.map(() => []);
  }

  on(event: TraceEvent, handler: TraceHandler): void {
    if (this.detached !== null) throw new HeapError(ErrorCode.EDETACHED, this.detached);
    const id = eventId(event);
    checkHandler(handler);
    const list = this.#handlers[id]!;
    if (!list.includes(handler)) list.push(handler);
    this.mask |= 1 << id;
    this.onChange();
  }

  off(event: TraceEvent, handler: TraceHandler): void {
    const id = eventId(event);
    checkHandler(handler);
    const list = this.#handlers[id]!;
    const i = list.indexOf(handler);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.mask &= ~(1 << id);
    this.#removed();
  }

  clear(): void {
    for (const list of this.#handlers) list.length = 0;
    this.mask = 0;
    this.#removed();
  }

  /**
   * Handlers went: the fast paths may come back on, but not while a handler runs (it may free the
   * block its event is about, and only the slow paths check `returning`): then after the emit.
   */
  #removed(): void {
    if (this.#depth !== 0) this.#pendingChange = true;
    else this.onChange();
  }

  /** Deliver a record to the event's handlers (callers test `mask` first). @internal */
  emit(id: number, record: TraceRecord): void {
    const list = this.#handlers[id];
    if (list === undefined) return;
    if (this.#depth !== 0) {
      this.dropped++;
      return;
    }
    this.#depth = 1;
    if (((1 << id) & ALLOC_EVENTS) !== 0) this.returning = record.addr ?? -1;
    try {
      for (let i = 0; i < list.length; i++) {
        // A plain call: the handler's `this` is undefined, never the internal handler list.
        const handler = list[i]!;
        try {
          handler(record);
        } catch {
          this.onError();
        }
      }
    } finally {
      this.#depth = 0;
      this.returning = -1;
      if (this.#pendingChange) {
        this.#pendingChange = false;
        this.onChange();
      }
    }
  }

  /** Is a handler of this handle running now (a call of the handle is in progress under it)? */
  get running(): boolean {
    return this.#depth !== 0;
  }
}

/** Only makeTrace passes it: `new Trace()` from anywhere else is EINVAL. */
const TRACE_TOKEN: object = Object.freeze({});

/**
 * A heap handle's tracepoints (`heap.trace`): handlers of this agent, per event. A facade: its
 * state is private to the library, and its only members are `dropped`, `on`, `off` and `clear`.
 */
export class Trace {
  readonly #state: TraceState;

  /** Made by the heap only (makeTrace). */
  private constructor(token: object, state: TraceState) {
    if (token !== TRACE_TOKEN) einval("a Trace is a heap handle's `trace`, not made with new Trace()");
    this.#state = state;
  }

  /** Events not delivered because a handler of this agent was already running (recursion protection). */
  get dropped(): number {
    return this.#state.dropped;
  }

  /** Call `handler(record)` at every `event` of this agent, synchronously, inside the allocator, with `this` undefined. Adding the same handler twice adds it once. On a detached handle: EDETACHED. */
  on(event: TraceEvent, handler: TraceHandler): void {
    this.#state.on(event, handler);
  }

  /** Remove a handler that `on` added; removing one that is not there does nothing. */
  off(event: TraceEvent, handler: TraceHandler): void {
    this.#state.off(event, handler);
  }

  /** Remove every handler of every event (detach does it too). */
  clear(): void {
    this.#state.clear();
  }
}

/** The public facade over a handle's trace state (heap.ts). */
export function makeTrace(state: TraceState): Trace {
  return new (Trace as unknown as new (t: object, s: TraceState) => Trace)(TRACE_TOKEN, state);
}

function eventId(event: unknown): number {
  if (typeof event !== "string") einval(`a trace event must be a string (${TRACE_EVENT_IDS.join(", ")}), not ${describe(event)}`);
  if (!Object.hasOwn(TP, event)) einval(`unknown trace event ${typeof event === "string" ? JSON.stringify(event) : describe(event)}; known: ${TRACE_EVENT_IDS.join(", ")}`);
  return (TP as Record<string, number>)[event]!;
}

function checkHandler(handler: unknown): void {
  if (typeof handler !== "function") einval(`a trace handler must be a function, not ${describe(handler)}`);
}
