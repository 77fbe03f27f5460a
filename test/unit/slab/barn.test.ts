/*
 * The barn's capacity (K_BARN_CAP, slab/sizes.ts barnCapacity): full sheaves holding up to
 * BARN_BYTES of objects, BARN_MIN..K_BARN_MAX sheaves, at most 1/256 of the zone; a batch that
 * fits moves between a slot's sheaves and the barn as whole sheaves, never one object at a time
 * through the slabs, and the barn's puts still tick the slab decay.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../../src/index.js";
import { K_BARN_MAX } from "../../../src/core/layout.js";
import { allPagesFree } from "../../support/check.js";
import { BARN_BYTES, BARN_MIN, barnCapacity, sheafCapacity } from "../../../src/slab/sizes.js";

const MiB = 1 << 20;

test("barnCapacity: BARN_BYTES of full sheaves, BARN_MIN..K_BARN_MAX sheaves, 1/256 of the zone at most", () => {
  const big = 64 * 1024; // pages of a 256 MiB zone: BARN_BYTES is the smaller budget
  assert.equal(barnCapacity(8, big), K_BARN_MAX, "8-byte objects: the bound");
  assert.equal(barnCapacity(32, big), K_BARN_MAX, "32-byte objects: 66 sheaves of 3968 bytes, bounded at 64");
  assert.equal(barnCapacity(64, big), 33, "64-byte objects: 33 sheaves of 124");
  assert.equal(barnCapacity(256, big), Math.floor(BARN_BYTES / (sheafCapacity(256) * 256)));
  assert.equal(barnCapacity(256, big), 39);
  assert.equal(barnCapacity(1024, big), 21);
  assert.equal(barnCapacity(8192, big), BARN_MIN, "8 KiB objects: 8 sheaves of 4 would fit, BARN_MIN is kept");
  assert.equal(barnCapacity(16, 4096), 33, "a 16 MiB zone: 64 KiB of sheaves");
  assert.equal(barnCapacity(64, 4096), BARN_MIN, "a 16 MiB zone: 64 KiB would be 8 sheaves of 64-byte objects, BARN_MIN is kept");
  assert.equal(barnCapacity(64, 1024), BARN_MIN, "a 4 MiB zone: 16 KiB would be 4 sheaves, BARN_MIN is kept");
});

test("a batch of 1024 64-byte objects, freed and allocated again, goes through the barn as whole sheaves", () => {
  const h = Heap.create({ size: 64 * MiB, cpus: 2 });
  const objs = new Int32Array(1024);
  const round = (): void => {
    for (let i = 0; i < objs.length; i++) objs[i] = h.kmalloc(64);
    for (let i = 0; i < objs.length; i++) h.kfree(objs[i]!);
  };
  round();
  round(); // the first round's frees leave one more full sheaf in the barn than a round's allocations take back
  const v0 = h.stats().vmstat;
  for (let r = 0; r < 4; r++) round();
  const v1 = h.stats().vmstat;
  // 1024 objects: 8 sheaves of 124 and 32 objects. Each round's frees fill the main 8 times: once
  // the spare takes its place, 7 times the barn takes it for an empty sheaf; the allocations
  // empty the main as often, and take 7 full sheaves back from the barn.
  assert.equal(v1.sheafFlush - v0.sheafFlush, 0, "no sheaf was flushed to the slabs");
  assert.equal(v1.sheafRefill - v0.sheafRefill, 0, "no sheaf was refilled from the slabs");
  assert.equal(sheafCapacity(64), 124);
  assert.equal(v1.barnPut - v0.barnPut, 4 * 7);
  assert.equal(v1.barnGet - v0.barnGet, 4 * 7);
  assert.equal(v1.slabAlloc - v0.slabAlloc, 0);
  allPagesFree(h);
  h.detach();
});
