/*
 * The short form of the model-based fuzzer (test/fuzz.ts): every configuration (debug on and off,
 * fault injection on and off, small and growing heaps) for a few thousand operations from a
 * seed (SHMALLOC_SEED, or a fresh one, printed with the command that repeats a failure).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CONFIGS, repeatCommand, runFuzz } from "./fuzz.js";
import { baseSeed } from "./util.js";

describe("model-based fuzzer (short form)", () => {
  const seed = baseSeed();
  for (const cfg of CONFIGS) {
    test(`${cfg.name}: 2500 random operations against the shadow model`, () => {
      const r = runFuzz(cfg, seed, 2500, 250);
      console.log(`fuzz ${cfg.name} seed ${seed}: ${Object.values(r.counts).reduce((a, b) => a + b, 0)} counted events, ${r.failure === null ? "ok" : "FAILED"}`);
      assert.equal(r.failure, null, `${r.failure}\n  seed ${seed}; repeat: ${repeatCommand(r)}`);
    });
  }
});
