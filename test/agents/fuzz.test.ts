/*
 * The short form of the model-based fuzzer (test/fuzz.ts): every configuration (debug on and off,
 * fault injection on and off, small and growing heaps) for a few thousand operations from a
 * seed (SHMALLOC_SEED, or a fresh one, printed with the command that repeats a failure).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CONFIGS, repeatCommand, runFuzz } from "./fuzz.js";
import { baseSeed } from "../support/util.js";

describe("model-based fuzzer (short form)", () => {
  const seed = baseSeed();
  for (const cfg of CONFIGS) {
    test(`${cfg.name}: 2500 random operations against the shadow model`, () => {
      const r = runFuzz(cfg, seed, 2500, 250);
      console.log(`fuzz ${cfg.name} seed ${seed}: ${Object.values(r.counts).reduce((a, b) => a + b, 0)} counted events, ${r.failure === null ? "ok" : "FAILED"}`);
      assert.equal(r.failure, null, `${r.failure}\n  seed ${seed}; repeat: ${repeatCommand(r)}`);
    });
  }

  // Seeds that found bugs, kept as regressions (the fuzzer is deterministic for a seed).
  const found: Array<[string, number, number, string]> = [
    ["debug", 901, 7000, "a hook freeing at every lock point kept the deferred-object drain going for ever"],
    ["small", 1, 300, "detach of a handle with kfreeRcu objects waiting spun while another handle of the agent read"],
    ["small-growing", 502, 1300, "a block read through a handle whose views another handle's growth had not rebuilt"],
  ];
  for (const [name, s2, ops, what] of found) {
    test(`regression: ${name} seed ${s2} (${what})`, () => {
      const cfg = CONFIGS.find((c) => c.name === name)!;
      const r = runFuzz(cfg, s2, ops, 250);
      assert.equal(r.failure, null, `${r.failure}\n  repeat: ${repeatCommand(r)}`);
    });
  }
});

