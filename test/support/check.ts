/** Assertions shared by the single-agent tests. */
import assert from "node:assert/strict";
import { type Heap, HeapError } from "../../src/index.js";

/** The HeapError `fn` throws (fails the test when it throws nothing or something else). */
export function caught(fn: () => unknown): HeapError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof HeapError, `expected a HeapError, got ${String(e)}`);
    return e;
  }
  assert.fail("expected a HeapError, nothing was thrown");
}

/** The code of the HeapError `fn` throws. */
export function code(fn: () => unknown): string {
  return caught(fn).code;
}

/** Every figure of stats() but the event counters, as one string to compare. */
export function figures(h: Heap): string {
  return JSON.stringify({ ...h.stats(), vmstat: undefined });
}

/** `fn` throws HeapError `want`, and stats() and validate() are the same before and after. */
export function unchanged(h: Heap, want: string, fn: () => unknown): void {
  const before = figures(h);
  assert.equal(code(fn), want);
  assert.equal(figures(h), before, "the heap changed");
  h.validate();
}

/** Nothing is live: after this handle's shrink(), validate() holds and every page is free. */
export function allPagesFree(h: Heap): void {
  h.shrink();
  h.validate();
  const s = h.stats();
  assert.equal(s.freePages, s.totalPages, "a page is lost or still held");
}
