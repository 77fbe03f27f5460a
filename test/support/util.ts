/*
 * Helpers for the multi-agent tests (test/workers.test.ts, test/rcu-workers.test.ts) and their
 * worker scripts (test/workers/*.ts): seeds, shared flags with bounded waits, and a main-side
 * wrapper around a Worker; the generator, the ring, the signatures and errCode come from
 * support/common.ts (re-exported here).
 *
 * Nothing here waits without a deadline: a bug in the allocator makes a test fail, never hang.
 */
import { Worker } from "node:worker_threads";
export { checkPattern, errCode, fillPattern, patternWord, Prng, RING_ENTRY, SharedRing, signature } from "./common.js";

export const MiB = 1 << 20;

/* ================================================================= seeded generator */

/** The run's base seed: SHMALLOC_SEED if set, else a fresh one. Printed in every failure message. */
export function baseSeed(): number {
  const env = process.env.SHMALLOC_SEED;
  if (env !== undefined && env !== "") {
    const n = Number(env);
    if (!Number.isFinite(n)) throw new Error(`SHMALLOC_SEED=${env} is not a number`);
    return n >>> 0;
  }
  return (Date.now() ^ Math.imul(process.pid, 0x9e3779b1) ^ ((Math.random() * 0x100000000) >>> 0)) >>> 0;
}

/** A seed for agent `k` of a run with base seed `base` (distinct, well mixed). */
export function deriveSeed(base: number, k: number): number {
  let h = (base ^ Math.imul(k + 1, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
  return (h ^ (h >>> 16)) >>> 0 || 1;
}

/** The text every failure message carries, so the run can be repeated. */
export function seedNote(seed: number): string {
  return `[seed ${seed}; rerun with SHMALLOC_SEED=${seed}]`;
}

/* ================================================================= shared flags */

/** Sleep on a private cell (blocks the agent; never use on a thread that must stay responsive). */
const sleepCell = new Int32Array(new SharedArrayBuffer(4));
export function sleepMs(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}

/**
 * Block until `pred()` holds, waiting on i32[idx] (woken by Atomics.notify there) in slices of at
 * most 20 ms; throws after `timeoutMs` naming `what`.
 */
export function waitUntil(i32: Int32Array, idx: number, pred: () => boolean, what: string, timeoutMs = 20_000): void {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = Atomics.load(i32, idx);
    if (pred()) return;
    const left = end - Date.now();
    if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    Atomics.wait(i32, idx, v, Math.min(20, left));
  }
}

/** Block until i32[idx] === value (or `>= value` when `atLeast`). */
export function waitWord(i32: Int32Array, idx: number, value: number, what: string, timeoutMs = 20_000, atLeast = false): void {
  waitUntil(i32, idx, () => (atLeast ? Atomics.load(i32, idx) >= value : Atomics.load(i32, idx) === value), what, timeoutMs);
}

/** Store and wake every waiter. */
export function setWord(i32: Int32Array, idx: number, value: number): void {
  Atomics.store(i32, idx, value);
  Atomics.notify(i32, idx);
}

/** Add and wake every waiter; returns the old value. */
export function addWord(i32: Int32Array, idx: number, delta: number): number {
  const old = Atomics.add(i32, idx, delta);
  Atomics.notify(i32, idx);
  return old;
}

/** For the main thread (which must keep its event loop turning): poll until `pred()` or throw after `timeoutMs`. */
export async function until(pred: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** The first message `worker` posts, or a rejection with `what` if none comes within the deadline (or it fails). */
export function firstMessage<T>(worker: Worker, what: string, timeoutMs = 20_000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} within ${timeoutMs / 1000} s`)), timeoutMs);
    worker.once("message", (msg) => {
      clearTimeout(timer);
      resolve(msg as T);
    });
    worker.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface Msg {
  type: string;
  [k: string]: unknown;
}

/**
 * A worker_thread running one of the scripts in test/workers/, with a message queue that can be
 * awaited with a deadline. A worker's uncaught error or "error" message fails every wait.
 */
export class Agent {
  readonly worker: Worker;
  readonly name: string;
  private readonly queue: Msg[] = [];
  private waiter: (() => void) | null = null;
  private failure: Error | null = null;
  exitCode: number | null = null;
  readonly exited: Promise<number>;

  constructor(script: string, workerData: unknown, name = script) {
    this.name = name;
    this.worker = new Worker(new URL(`../agents/workers/${script}.js`, import.meta.url), { workerData });
    this.worker.on("message", (m: Msg) => {
      if (m !== null && typeof m === "object" && m.type === "error") {
        this.failure ??= new Error(`${this.name}: ${String(m.message)}\n${String(m.stack ?? "")}`);
      } else {
        this.queue.push(m);
      }
      this.wake();
    });
    this.worker.on("error", (e: Error) => {
      this.failure ??= new Error(`${this.name} threw: ${e.stack ?? e.message}`);
      this.wake();
    });
    this.exited = new Promise((resolve) => {
      this.worker.on("exit", (code: number) => {
        this.exitCode = code;
        this.wake();
        resolve(code);
      });
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    if (w !== null) w();
  }

  /** The next message (of `type`, if given: others are skipped), within `timeoutMs`. */
  async recv(type?: string, timeoutMs = 30_000): Promise<Msg> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      if (this.failure !== null) throw this.failure;
      const m = this.queue.shift();
      if (m !== undefined) {
        if (type === undefined || m.type === type) return m;
        continue;
      }
      if (this.exitCode !== null) throw new Error(`${this.name} exited (code ${this.exitCode}) before sending ${type ?? "a message"}`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`${this.name}: no ${type ?? "message"} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 250));
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  /** What this worker reported or threw, if anything. */
  get error(): Error | null {
    return this.failure;
  }

  /** Throw the worker's failure, if it reported or threw one. */
  check(): void {
    if (this.failure !== null) throw this.failure;
  }

  post(m: unknown): void {
    this.worker.postMessage(m);
  }

  /** Wait for the worker to exit by itself (throws on a failure, a non-zero code or the deadline). */
  async join(timeoutMs = 30_000): Promise<void> {
    let t: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(`${this.name} did not exit within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const code = await Promise.race([this.exited, timeout]);
      this.check();
      if (code !== 0) throw new Error(`${this.name} exited with code ${code}`);
    } finally {
      clearTimeout(t);
    }
  }

  async terminate(): Promise<void> {
    if (this.exitCode === null) await this.worker.terminate();
  }
}

/** The message of a worker that stops because another worker of its test failed. */
export const ABORTED = "stopping: another worker failed";

/** Run `fn` with the agents it creates; every one of them is terminated afterwards, whatever happens. */
export async function withAgents<T>(fn: (spawn: (script: string, data: unknown, name?: string) => Agent) => Promise<T>): Promise<T> {
  const agents: Agent[] = [];
  const spawn = (script: string, data: unknown, name?: string): Agent => {
    const a = new Agent(script, data, name);
    agents.push(a);
    return a;
  };
  try {
    return await fn(spawn);
  } catch (e) {
    // A worker that stopped because another failed is not the story: report the first cause.
    if (e instanceof Error && e.message.includes(ABORTED)) {
      await delay(100);
      const cause = agents.map((a) => a.error).find((x) => x !== null && !x.message.includes(ABORTED));
      if (cause) throw cause;
    }
    throw e;
  } finally {
    await Promise.all(agents.map((a) => a.terminate().catch(() => undefined)));
  }
}

/** Add the seed to an error's message and rethrow it. */
export async function withSeedAsync<T>(seed: number, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    if (!err.message.includes("SHMALLOC_SEED")) err.message = `${seedNote(seed)} ${err.message}`;
    throw err;
  }
}

/* ================================================================= control words of the stress workers */

/** Control words shared by the main thread and the workers of a randomised stress test. */
export const STRESS = {
  /** Workers attached so far (they start together once all are). */
  ATTACHED: 0,
  /** Workers that finished their own operations and freed what they hold. */
  DONE: 1,
  /** Set by the first worker that fails. */
  ABORT: 2,
  /** Blocks taken out of the ring by a worker other than the one that put them there. */
  HANDOFFS: 3,
  /** Blocks freed by a worker that did not allocate them. */
  CROSS_FREES: 4,
  WORDS: 16,
} as const;

/** Control words of the attach/detach tests. */
export const ATTACH = {
  ABORT: 0,
  /** Worker A of the ENOCPU script holds slot 1. */
  A_ATTACHED: 1,
  /** B saw ENOCPU. */
  B_REFUSED: 2,
  /** The main thread tells A to detach. */
  A_GO_DETACH: 3,
  A_DETACHED: 4,
  /** The main thread tells the churning workers to stop. */
  DONE: 5,
  /** ENOCPU seen by the cycling workers. */
  ENOCPU: 6,
  /** Cycles completed, all workers. */
  CYCLES: 7,
  /** Slots currently held by a cycling worker: bit per slot (checks that no slot is held twice). */
  HELD_MASK: 8,
  /** Attaches that found their slot already marked in HELD_MASK. */
  DOUBLE_CLAIM: 9,
  WORDS: 16,
} as const;

/** Control words of the RCU worker tests. */
export const RCU = {
  ABORT: 0,
  /** Reader A is inside its section. */
  A_IN: 1,
  /** The main thread tells A to leave. */
  A_STOP: 2,
  /** A is about to call its outermost rcuReadUnlock (set before the call). */
  A_UNLOCKING: 3,
  /** A left its section. */
  A_OUT: 4,
  /** A nested reader: the main thread lets it drop the inner level. */
  A_DROP_INNER: 5,
  /** ... and it did (still inside the outer level). */
  A_INNER_OUT: 6,
  /** Worker B's allocation rounds done so far. */
  B_ROUNDS: 7,
  /** The main thread tells B to stop allocating. */
  B_STOP: 8,
  /** The syncing worker W: go. */
  W_GO: 9,
  /** W is about to call synchronizeRcu (set before the call). */
  W_STARTED: 10,
  /** W's synchronizeRcu returned. */
  W_RETURNED: 11,
  /** The value W read in A_UNLOCKING right after synchronizeRcu returned (+1, so 0 means unset). */
  W_SAW: 12,
  /** The late reader R2: go. */
  R2_GO: 13,
  R2_IN: 14,
  R2_STOP: 15,
  R2_OUT: 16,
  /** An idle worker is attached and blocked outside any section. */
  IDLE: 17,
  /** Everybody: detach and exit. */
  EXIT: 18,
  /** B is done: synchronizeRcu and rcuBarrier returned. */
  B_SYNCED: 19,
  /** Reads of X done by A. */
  A_READS: 20,
  /** Stress: workers finished. */
  DONE: 21,
  WORDS: 32,
} as const;
