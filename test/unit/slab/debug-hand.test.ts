/*
 * reclaimSlot's decision on a dead slot's debug object hand (C_DEBUG_HAND, slab/debug_hand.ts),
 * one case each: the test writes the hand of a second handle's slot as a slot killed at that
 * instant would have left it, then reclaims that slot. The object goes back to its freelist only
 * when it is on no list and not handed out; otherwise it is left where it is, never on two lists.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../../src/index.js";
import { C_DEBUG_HAND, C_DEBUG_HAND_FREE } from "../../../src/core/layout.js";
import { layersOf } from "../../../src/layers.js";

type Setup = (heap: Heap, other: Heap) => { held: number; obj: number; kept: number[] };

const cases: [string, Setup, number, "free" | "live"][] = [
  ["held for allocation and marked allocated (handed out)", (heap, other) => {
    const x = other.findCache("dh")!.alloc();
    return { held: x, obj: x, kept: [] };
  }, 0, "live"],
  ["held for freeing, still marked allocated (killed before the state store)", (heap, other) => {
    const x = other.findCache("dh")!.alloc();
    return { held: x | C_DEBUG_HAND_FREE, obj: x, kept: [] };
  }, 1, "free"],
  ["held, but on its freelist", (heap) => {
    const c = heap.findCache("dh")!;
    const keep = c.alloc();
    const x = c.alloc();
    c.free(x);
    c.shrink(); // the sheaves go back to the slabs: x is on its freelist, keep's slab stays
    return { held: x, obj: x, kept: [keep] };
  }, 0, "free"],
  ["held, but on another slot's main sheaf", (heap) => {
    const c = heap.findCache("dh")!;
    const x = c.alloc();
    c.free(x);
    return { held: x, obj: x, kept: [] };
  }, 0, "free"],
  ["held, not an object", () => ({ held: 0x12345, obj: 0, kept: [] }), 0, "free"],
];

for (const [name, setup, inHand, after] of cases) {
  test(`a dead slot's debug hand ${name}: inHand ${inHand}, the object ${after === "live" ? "stays allocated" : "free on one list"}`, () => {
    const heap = Heap.create({ size: 4 << 20, cpus: 3, debug: true });
    try {
      const cache = heap.createCache("dh", 64);
      const other = Heap.attach(heap.buffer);
      const { held, obj, kept } = setup(heap, other);
      const mem = layersOf(heap).mem;
      mem.i32[mem.pcpOf(other.cpu) + C_DEBUG_HAND] = held;
      const r = heap.reclaimSlot(other.cpu);
      assert.equal(r.inHand, inHand, JSON.stringify(r));
      assert.equal(mem.i32[mem.pcpOf(other.cpu) + C_DEBUG_HAND], 0, "the hand is cleared");
      heap.validate();
      if (obj !== 0 && after === "live") cache.free(obj);
      else if (obj !== 0) assert.throws(() => cache.free(obj), /EDOUBLEFREE/);
      const objs: number[] = [];
      for (let i = 0; i < 200; i++) objs.push(cache.alloc());
      assert.equal(new Set(objs).size, 200, "nothing handed out twice");
      for (const o of [...objs, ...kept]) cache.free(o);
      heap.validate();
      cache.destroy();
    } finally {
      heap.detach();
    }
  });
}
