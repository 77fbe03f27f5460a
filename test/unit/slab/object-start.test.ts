/*
 * The free fast path's object-start test (slab.ts pushFast, sizes.ts invSize and INV_EXACT): the
 * offset into the slab times K_INV_SIZE has the object's index as integer part, and a fraction
 * under INV_EXACT only at an object's start. Checked here for every size a slab can have, and
 * through kfree and cache.free with addresses that are near an object's start but not one.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap, HeapError, type SlabStats } from "../../../src/index.js";
import { INV_EXACT, invSize } from "../../../src/slab/sizes.js";
import { PAGE_SIZE, PCP_MAX_ORDER } from "../../../src/core/layout.js";
import { allPagesFree } from "../../support/check.js";

const MiB = 1 << 20;
const SLAB_MAX = PAGE_SIZE << PCP_MAX_ORDER;

test("off * invSize(size): integer part floor(off / size), fraction under INV_EXACT exactly at multiples of size, for every size and slab offset", () => {
  let checked = 0;
  for (let size = 1; size <= SLAB_MAX; size += size < 1024 ? 1 : 8) {
    const inv = invSize(size);
    // Each multiple of size in a slab, and the offsets either side of it and at the end of its object.
    for (let k = 0; k * size < SLAB_MAX; k++) {
      for (const off of [k * size - 1, k * size, k * size + 1, k * size + size - 1]) {
        if (off < 0 || off >= SLAB_MAX) continue;
        const q = off * inv;
        const idx = q | 0;
        if (idx !== Math.floor(off / size)) assert.fail(`size ${size}, offset ${off}: index ${idx}, not ${Math.floor(off / size)}`);
        if (q - idx < INV_EXACT !== (off % size === 0)) assert.fail(`size ${size}, offset ${off}: fraction ${q - idx} misjudged`);
        checked++;
      }
    }
  }
  assert.ok(checked > 1_000_000, `${checked} offsets checked`);
});

const stats = (h: Heap, name: string): SlabStats => h.stats().slabs.find((c) => c.name === name)!;

function refused(h: Heap, what: string, f: () => void, code = "EINVAL"): void {
  const before = JSON.stringify(h.stats().slabs);
  assert.throws(f, (e: unknown) => e instanceof HeapError && e.code === code, what);
  assert.equal(JSON.stringify(h.stats().slabs), before, `${what} changed nothing`);
}

test("kfree and cache.free refuse every address near an object's start that is not one, on the fast path, and change nothing", () => {
  const h = Heap.create({ size: 32 * MiB, cpus: 2 });
  const sizes = [24, 40, 48, 96, 200, 1000, 3000, 12000, 30000];
  for (const size of sizes) {
    const c = h.createCache(`os-${size}`, size);
    const s = stats(h, `os-${size}`);
    const a = c.alloc();
    const b = c.alloc();
    assert.ok(a !== 0 && b !== 0);
    const bytes = PAGE_SIZE << s.order;
    const base = Math.floor(a / bytes) * bytes;
    const near = [a + 1, a + 4, a + 8, a + s.size - 8, a + 0.5, a - 0.5, a + 2 ** 32, a - 2 ** 32, Number.NaN, -a];
    // The slab's tail past its last object, when it has one: a multiple of the stride, not an object.
    if (s.objectsPerSlab * s.size + 8 <= bytes) near.push(base + s.objectsPerSlab * s.size);
    for (const x of near) {
      refused(h, `kfree(${x}) of a ${size} B object`, () => h.kfree(x));
      refused(h, `cache.free(${x}) of a ${size} B object`, () => c.free(x));
    }
    h.validate();
    c.free(a);
    refused(h, `a second free of ${a}`, () => h.kfree(a), "EDOUBLEFREE");
    c.free(b);
    h.validate();
    c.destroy();
  }
  allPagesFree(h);
});
