/*
 * One cache descriptor, two caches in turn: createCache(a) and its destroy, then createCache(b)
 * and its destroy, over and over. Neither cache ever holds an object, so each
 * destroy releases the descriptor at once and the next createCache takes the same one again.
 * Stops when the main thread sets ctrl[stopAt], or after `flips` rounds.
 */
import { Heap } from "../../../src/index.js";
import { addWord } from "../../support/util.js";
import { type Base, post, runWorker } from "./common.js";

export interface FlipData extends Base {
  flips: number;
  /** The two caches (names and object sizes) that take the descriptor in turn. */
  a: { name: string; size: number };
  b: { name: string; size: number };
  /** ctrl words: set to 1 once attached; counts rounds done; set by the main thread to stop. */
  readyAt: number;
  roundsAt: number;
  stopAt: number;
}

runWorker<FlipData>((data) => {
  const ctrl = new Int32Array(data.ctrl);
  const heap = Heap.attach(data.buffer);
  addWord(ctrl, data.readyAt, 1);
  let rounds = 0;
  for (; rounds < data.flips && Atomics.load(ctrl, data.stopAt) === 0; rounds++) {
    heap.createCache(data.a.name, data.a.size).destroy();
    heap.createCache(data.b.name, data.b.size).destroy();
    if ((rounds & 1023) === 0) Atomics.store(ctrl, data.roundsAt, rounds);
  }
  Atomics.store(ctrl, data.roundsAt, rounds);
  heap.detach();
  post({ type: "done", rounds });
});
