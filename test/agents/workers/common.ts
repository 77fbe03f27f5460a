/*
 * The frame of every worker script: run `body` with workerData; report a failure to the main
 * thread as an "error" message (and raise the shared abort word, if there is one, so the other
 * workers stop early instead of waiting for a partner that is gone).
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap } from "../../../src/index.js";
import { ABORTED, addWord, Prng, SharedRing, STRESS, waitUntil, waitWord } from "../../support/util.js";

export interface Base {
  /** The heap's buffer. */
  buffer: SharedArrayBuffer;
  /** Control words shared by the main thread and every worker of the test. */
  ctrl: SharedArrayBuffer;
  /** Index into ctrl of the abort word (set to 1 by the first worker that fails), or -1. */
  abortAt?: number;
  /** This worker's number within its test. */
  id: number;
  /** This worker's own stream (derived from the run's seed, which the main thread reports). */
  seed: number;
}

export function post(m: { type: string; [k: string]: unknown }): void {
  parentPort!.postMessage(m);
}

export function runWorker<T extends Base>(body: (data: T) => void | Promise<void>): void {
  const data = workerData as T;
  Promise.resolve()
    .then(() => body(data))
    .catch((e: unknown) => {
      const err = e instanceof Error ? e : new Error(String(e));
      if (data.abortAt !== undefined && data.abortAt >= 0) {
        const c = new Int32Array(data.ctrl);
        Atomics.store(c, data.abortAt, 1);
        Atomics.notify(c, data.abortAt);
      }
      post({ type: "error", message: `worker ${data.id}${data.seed !== 0 ? ` (stream seed ${data.seed})` : ""}: ${err.message}`, stack: err.stack ?? "" });
    });
}

/** Throw if another worker of the test failed. */
export function checkAbort(data: Base, ctrl: Int32Array): void {
  if (data.abortAt !== undefined && data.abortAt >= 0 && Atomics.load(ctrl, data.abortAt) !== 0) {
    throw new Error(ABORTED);
  }
}

/** Let this agent's timers (the kfreeRcu timer among them) run. */
export function yieldToLoop(ms = 0): Promise<void> {
  return new Promise((r) => (ms > 0 ? setTimeout(r, ms) : setImmediate(r)));
}

/**
 * The end of a stress worker: count this worker done, keep freeing what arrives in its inbox until
 * every worker is done and the inbox is empty, then detach and report its figures.
 */
export function finishStress<B>(
  heap: Heap,
  data: Base & { workers: number },
  ctrl: Int32Array,
  inboxEmpty: () => boolean,
  receive: () => B | null,
  free: (b: B, why: string) => void,
  stats: unknown,
): void {
  addWord(ctrl, STRESS.DONE, 1);
  waitUntil(
    ctrl,
    STRESS.DONE,
    () => {
      checkAbort(data, ctrl);
      for (let b = receive(); b !== null; b = receive()) free(b, "draining the inbox");
      return Atomics.load(ctrl, STRESS.DONE) === data.workers && inboxEmpty();
    },
    "the other workers to finish",
    30_000,
  );
  const cpu = heap.cpu;
  heap.detach();
  post({ type: "done", cpu, stats });
}

/** What every stress worker starts with: its control words, its inbox, a way to pick another
 * worker's inbox, its generator, and its handle on the heap. */
export function startStress(data: Base & { workers: number; rings: SharedArrayBuffer[] }): {
  ctrl: Int32Array;
  inbox: SharedRing;
  outbox: () => SharedRing;
  rng: Prng;
  heap: Heap;
} {
  const rings = data.rings.map((b) => new SharedRing(b));
  const rng = new Prng(data.seed);
  const outbox = (): SharedRing => {
    const k = rng.range(0, data.workers - 2);
    return rings[k >= data.id ? k + 1 : k]!;
  };
  return { ctrl: new Int32Array(data.ctrl), inbox: rings[data.id]!, outbox, rng, heap: Heap.attach(data.buffer) };
}

/** Report this worker's slot and wait until every worker of the test has attached. */
export function allAttached(heap: Heap, data: Base & { workers: number }, ctrl: Int32Array): void {
  post({ type: "attached", cpu: heap.cpu });
  addWord(ctrl, STRESS.ATTACHED, 1);
  waitWord(ctrl, STRESS.ATTACHED, data.workers, "every worker to attach", 20_000, true);
}

/**
 * Stop this worker for ever (until it is terminated) the `nth` time its reentry hook meets lock
 * point `point` while armed, after posting { parked: point, cpu } to the main thread. The caller
 * arms it (`armed = true`) before the call it wants stopped; it disarms itself when it stops.
 */
export function parkAtHookPoint(heap: Heap, point: string, nth: number): { armed: boolean } {
  const stop = new Int32Array(new SharedArrayBuffer(4));
  const state = { armed: false };
  let seen = 0;
  heap.setReentryHook((p) => {
    if (!state.armed || p !== point || ++seen < nth) return;
    state.armed = false;
    parentPort!.postMessage({ parked: p, cpu: heap.cpu });
    Atomics.wait(stop, 0, 0); // until terminated
  });
  return state;
}
