/*
 * A worker whose heap.shrink() stops in the flush of a full sheaf of a named cache that it took
 * off the barn into its hand (PCS_HAND), just before it takes the list lock: it holds no lock, and
 * the sheaf is on no pcs line and no barn list (shrink-concurrent.test.ts). It posts "parked" with
 * the sheaf's object count, goes on when the host raises ctrl[0], and posts "done" once detached.
 */
import { Heap } from "../../../src/index.js";
import { layersOf } from "../../../src/layers.js";
import { K_LIST_LOCK, K_SHEAF_CAP, PCS_HAND, S_SIZE } from "../../../src/core/layout.js";
import { type Base, post, runWorker } from "./common.js";

export interface ShrinkHandData extends Base {
  cacheName: string;
}

runWorker<ShrinkHandData>((data) => {
  const heap = Heap.attach(data.buffer);
  const ctrl = new Int32Array(data.ctrl);
  const cache = heap.findCache(data.cacheName);
  if (cache === null) throw new Error(`no cache ${data.cacheName}`);
  const slab = layersOf(heap).slab;
  const id = heap.cacheNames().indexOf(data.cacheName);
  const kw = slab.cacheWOf(id);
  const pcs = slab.pcsW(id);
  // Full sheaves of the cache on the barn: this slot frees what it allocated, past its sheaves.
  const objs: number[] = [];
  for (let i = 0; i < 6 * slab.i32[kw + K_SHEAF_CAP]!; i++) objs.push(cache.alloc());
  for (const o of objs) cache.free(o);
  const listAt = (kw + K_LIST_LOCK) << 2;
  const real = Atomics.compareExchange;
  let parked = false;
  (Atomics as { compareExchange: unknown }).compareExchange = function (ta: Int32Array, i: number, expected: number, value: number): number {
    const hand = slab.i32[pcs + PCS_HAND]!;
    if (!parked && ta.buffer === data.buffer && ta.byteOffset + i * ta.BYTES_PER_ELEMENT === listAt && hand !== 0) {
      parked = true;
      post({ type: "parked", objects: slab.i32[(hand >> 2) + S_SIZE]! });
      if (Atomics.wait(ctrl, 0, 0, 30_000) === "timed-out") throw new Error("the host never let the shrink go on");
    }
    return real(ta, i, expected, value);
  };
  heap.shrink();
  (Atomics as { compareExchange: unknown }).compareExchange = real;
  if (!parked) throw new Error("the shrink took no sheaf of the cache off the barn");
  heap.detach();
  post({ type: "done" });
});
