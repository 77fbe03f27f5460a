/*
 * The inspector in Chromium: serveInspector on a heap that two workers hammer; the page must show
 * figures that move while they run and that equal heap.stats() at a quiet moment (workers paused),
 * survive a second page and a page closed mid-stream, sort its slabtop, and say "stopped" when the
 * server closes. Saves a screenshot to dist/inspector.png (and to docs/inspector.png, the README's,
 * with UPDATE_SCREENSHOT=1).
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync } from "node:fs";
import { get as httpGet } from "node:http";
import { createServer } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap, MAX_ORDER, PAGE_STATE } from "../src/index.js";
import { encodePageMap, serveInspector } from "../src/inspector.js";
import { HAMMER, HAMMER_ROW, HAMMER_SIZES } from "./hammer-control.js";
import { launchChromium, openPage, REPO_ROOT } from "./support/browser.js";
import { code } from "./check.js";
import { until } from "./util.js";

const MiB = 1 << 20;
const WORKERS = 2;
const CACHE = "inspector_items";

interface PageView {
  received: number;
  status: string;
  seq: number;
  stats: unknown;
  tally: [number, number][];
}

test("the inspector shows a hammered heap live in Chromium, and its figures match heap.stats()", { timeout: 90_000 }, async () => {
  const heap = Heap.create({ size: 8 * MiB, cpus: WORKERS + 1 });
  heap.createCache(CACHE, 96);
  const ctrlBuf = new SharedArrayBuffer(64);
  const ctrl = new Int32Array(ctrlBuf);
  const counters = new SharedArrayBuffer(WORKERS * HAMMER_ROW * 8);
  const f64 = new Float64Array(counters);
  const failures: string[] = [];
  let done = 0;
  const workers = Array.from({ length: WORKERS }, (_, id) => {
    const w = new Worker(new URL("./workers/hammer.js", import.meta.url), {
      workerData: { buffer: heap.buffer, ctrl: ctrlBuf, id, seed: 0x1a5e + id, counters, cacheName: CACHE },
    });
    w.on("message", (m: { type: string; message?: string }) => {
      if (m.type === "done") done++;
      else if (m.type === "error") failures.push(m.message ?? "?");
    });
    w.on("error", (e) => failures.push(String(e)));
    return w;
  });
  const inspector = await serveInspector(heap, {
    intervalMs: 100,
    title: "shmalloc inspector test: 2 workers hammering an 8 MiB heap",
    extra: () => ({
      agents: workers.map((_, w) => ({ name: `worker ${w}`, ops: f64[w * HAMMER_ROW]! })),
      sizes: HAMMER_SIZES.map((label, b) => ({ label, count: workers.reduce((s, _, w) => s + f64[w * HAMMER_ROW + 1 + b]!, 0) })),
      counters: { "operations": workers.reduce((s, _, w) => s + f64[w * HAMMER_ROW]!, 0) },
    }),
  });
  assert.match(inspector.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const browser = await launchChromium();
  try {
    const { page, errors } = await openPage(browser, inspector.url);
    await page.setViewportSize({ width: 1280, height: 1040 });
    const view = (): Promise<PageView> =>
      page.evaluate(() => {
        const s = (globalThis as unknown as { inspector: { received: number; status: string; last: { seq: number; stats: unknown } | null; tally: Map<number, number> } }).inspector;
        return { received: s.received, status: s.status, seq: s.last?.seq ?? 0, stats: s.last?.stats ?? null, tally: [...s.tally.entries()] };
      });
    type Probe = { inspector: { received: number; last: { seq: number; extra: { agents: { ops: number }[] } } | null } };

    // Live: snapshots arrive and the figures move (each wait has a deadline, no timed assertion).
    // A longer history when the README's screenshot is remade; a short one keeps the test quick.
    const history = process.env.UPDATE_SCREENSHOT === "1" ? 24 : 8;
    await page.waitForFunction((n) => (globalThis as unknown as Probe).inspector.received >= n, history, { timeout: 30_000 });
    const opsNow = await page.evaluate(() => (globalThis as unknown as Probe).inspector.last!.extra.agents.map((a) => a.ops));
    await page.waitForFunction((before) => (globalThis as unknown as Probe).inspector.last!.extra.agents.every((a, i) => a.ops > before[i]!), opsNow, { timeout: 30_000 });
    assert.equal(await page.locator("#ops-chart canvas").count() > 0, true, "the ops chart is drawn");
    assert.equal(await page.locator("#buddy-chart canvas").count() > 0, true, "the buddyinfo chart is drawn");
    assert.equal((await view()).status, "live");
    const shot = join(REPO_ROOT, "dist", "inspector.png");
    await page.screenshot({ path: shot, fullPage: true });
    if (process.env.UPDATE_SCREENSHOT === "1") {
      mkdirSync(join(REPO_ROOT, "docs"), { recursive: true });
      copyFileSync(shot, join(REPO_ROOT, "docs", "inspector.png"));
    }

    // A second page, then closed mid-stream: the server follows.
    const second = await openPage(browser, inspector.url);
    await second.page.waitForFunction(() => (globalThis as unknown as Probe).inspector.received >= 2, null, { timeout: 30_000 });
    assert.equal(inspector.clients, 2);
    await second.page.close();
    await until(() => inspector.clients === 1, "the closed page's stream to end", 10_000);
    assert.deepEqual(second.errors, []);

    // slabtop sorts by the column clicked.
    await page.click('#slabtop th[data-key="activeObjects"]');
    const active = (await page.locator('#slabtop tbody td[data-key="activeObjects"]').allTextContents()).map(Number);
    assert.deepEqual(active, [...active].sort((a, b) => b - a));
    await page.click('#slabtop th[data-key="activeObjects"]');
    const ascending = (await page.locator('#slabtop tbody td[data-key="activeObjects"]').allTextContents()).map(Number);
    assert.deepEqual(ascending, [...ascending].sort((a, b) => a - b));

    // A quiet moment: every worker paused, so stats() is exact and the page must show it.
    Atomics.store(ctrl, HAMMER.pause, 1);
    await until(() => Atomics.load(ctrl, HAMMER.paused) === WORKERS || failures.length > 0, "every worker to pause", 20_000);
    assert.deepEqual(failures, []);
    const st = heap.stats();
    const names = heap.cacheNames();
    const taken = inspector.snapshot();
    assert.deepEqual(taken.stats, st);
    assert.deepEqual(taken.map, encodePageMap(heap.pageMap()));
    await page.waitForFunction((seq) => ((globalThis as unknown as Probe).inspector.last?.seq ?? 0) > seq, taken.seq, { timeout: 30_000 });
    const v = await view();
    assert.deepEqual(v.stats, st, "the page received what stats() says");
    const tally = new Map(v.tally);
    let free = 0;
    for (let o = 0; o <= MAX_ORDER; o++) {
      assert.equal(tally.get(PAGE_STATE.free + o) ?? 0, st.buddy[o]! << o, `free pages of order ${o} on the map`);
      free += tally.get(PAGE_STATE.free + o) ?? 0;
    }
    assert.equal(free, st.freePages);
    assert.equal(tally.get(PAGE_STATE.pcp) ?? 0, st.pcp.reduce((a, b) => a + b, 0));
    for (const s of st.slabs) assert.equal(tally.get(PAGE_STATE.slab + names.indexOf(s.name)) ?? 0, s.pages, `pages of ${s.name} on the map`);
    assert.equal(await page.textContent("#s-free"), String(st.freePages));
    assert.equal(await page.textContent("#s-total"), String(st.totalPages));
    assert.equal(await page.textContent("#s-attached"), `${WORKERS + 1}/${WORKERS + 1}`);
    assert.equal(await page.textContent("#c-deferred-objects"), String(st.deferredObjects));
    assert.equal(await page.textContent("#c-rcu-waiting"), String(st.rcu.waitingObjects));
    const rows = await page.locator("#slabtop tbody tr").evaluateAll((trs) =>
      trs.map((tr) => [tr.getAttribute("data-cache"), [...tr.querySelectorAll("td[data-key]")].map((td) => td.textContent)] as const),
    );
    assert.deepEqual(rows.map(([n]) => n).sort(), st.slabs.map((s) => s.name).sort(), "slabtop lists every cache");
    const mine = rows.find(([n]) => n === CACHE)!;
    const s = st.slabs.find((x) => x.name === CACHE)!;
    assert.ok(s.activeObjects > 0);
    // objectSize, active, total, use, slabs, pages, sheaf, barn
    assert.deepEqual(
      [mine[1][0], mine[1][1], mine[1][2], mine[1][4], mine[1][5], mine[1][6], mine[1][7]].map(Number),
      [s.objectSize, s.activeObjects, s.totalObjects, s.slabs, s.pages, s.sheafObjects, s.barnObjects],
    );
    process.stdout.write(
      `# inspector: ${v.received} snapshots; at the quiet moment ${st.freePages}/${st.totalPages} pages free, ` +
        `${CACHE} ${s.activeObjects}/${s.totalObjects} objects, ${f64[0]! + f64[HAMMER_ROW]!} operations\n`,
    );

    // Stop: the workers empty what they hold and detach; the page is told the stream ended.
    Atomics.store(ctrl, HAMMER.stop, 1);
    Atomics.store(ctrl, HAMMER.pause, 0);
    Atomics.notify(ctrl, HAMMER.pause);
    await until(() => done === WORKERS || failures.length > 0, "the workers to finish", 20_000);
    assert.deepEqual(failures, []);
    await inspector.close();
    await page.waitForFunction(() => (globalThis as unknown as { inspector: { status: string } }).inspector.status === "stopped", null, { timeout: 10_000 });
    const last = await view();
    assert.equal((last.stats as { attached: number }).attached, 1, "the last snapshot shows the workers gone");
    assert.deepEqual(errors, []);
    heap.rcuBarrier();
    heap.shrink();
    heap.validate();
    assert.equal(heap.stats().freePages, heap.stats().totalPages);
  } finally {
    Atomics.store(ctrl, HAMMER.stop, 1);
    Atomics.store(ctrl, HAMMER.pause, 0);
    Atomics.notify(ctrl, HAMMER.pause);
    await browser.close();
    await inspector.close();
    await Promise.all(workers.map((w) => w.terminate()));
  }
});

test("serveInspector checks what it is given, and names a port in use", async () => {
  const heap = Heap.create({ size: 2 * MiB, cpus: 2 });
  await assert.rejects(serveInspector({} as Heap), /EINVAL: serveInspector: the first argument must be a Heap/);
  await assert.rejects(serveInspector(heap, { port: 70000 }), /port must be a whole number in 0\.\.65535, not 70000/);
  await assert.rejects(serveInspector(heap, { intervalMs: 1 }), /intervalMs must be a number in 50\.\.10000, not 1/);
  const busy = createServer();
  await new Promise<void>((ok) => busy.listen(0, "127.0.0.1", ok));
  const port = (busy.address() as { port: number }).port;
  try {
    await assert.rejects(serveInspector(heap, { port }), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, "EADDRINUSE");
      assert.equal(e.message, `cannot serve the inspector on 127.0.0.1:${port}: port ${port} on 127.0.0.1 is in use; choose another port, or 0 for any free one`);
      return true;
    });
  } finally {
    await new Promise<void>((ok) => busy.close(() => ok()));
  }
  // A program's figures that throw are reported; the heap's figures still come.
  const failing = await serveInspector(heap, {
    extra: () => {
      throw new Error("no figures today");
    },
  });
  const snap0 = failing.snapshot();
  assert.equal(snap0.extraError, "no figures today");
  assert.equal(snap0.extra, null);
  assert.equal(snap0.stats.totalPages, heap.stats().totalPages);
  await failing.close();
  await failing.close();
  // Requests addressed to another host name are refused; the page, its assets and a snapshot are served.
  const inspector = await serveInspector(heap);
  try {
    const get = (path: string): Promise<Response> => fetch(new URL(path, inspector.url));
    const statusFor = (host: string): Promise<number | undefined> =>
      new Promise((resolve, reject) => {
        httpGet({ host: "127.0.0.1", port: inspector.port, path: "/", headers: { Host: host } }, (res) => {
          res.resume();
          resolve(res.statusCode);
        }).on("error", reject);
      });
    assert.equal((await get("/")).status, 200);
    assert.equal((await get("/uPlot.esm.js")).status, 200);
    assert.equal((await get("/app.js")).headers.get("cross-origin-embedder-policy"), "require-corp");
    assert.equal((await get("/../package.json")).status, 404);
    assert.equal(await statusFor(`attacker.example:${inspector.port}`), 403);
    assert.equal(await statusFor(`localhost:${inspector.port}`), 200);
    const snap = (await (await get("/snapshot.json")).json()) as { stats: { totalPages: number }; map: number[] };
    assert.equal(snap.stats.totalPages, heap.stats().totalPages);
    assert.equal(snap.map.filter((_, i) => i % 2 === 1).reduce((a, b) => a + b, 0), heap.size / heap.pageSize);
    // A detached handle ends the stream instead of failing every snapshot.
    heap.detach();
    assert.equal(code(() => heap.stats()), "EDETACHED");
    const events = await (await get("/events")).text();
    assert.match(events, /event: end\ndata: \{"reason":"the heap handle was detached"\}/);
  } finally {
    await inspector.close();
  }
});

test("the inspector follows a heap that grows while it is watched", async () => {
  const heap = Heap.create({ size: 2 * MiB, maxSize: 8 * MiB, cpus: 2 });
  const inspector = await serveInspector(heap);
  try {
    const pages = (m: number[]): number => m.filter((_, i) => i % 2 === 1).reduce((a, b) => a + b, 0);
    const before = inspector.snapshot();
    assert.equal(pages(before.map), 512);
    heap.grow(8 * MiB);
    const after = inspector.snapshot();
    assert.equal(after.heap.size, 8 * MiB);
    assert.equal(pages(after.map), 2048);
    assert.equal(after.stats.freePages, heap.stats().freePages);
    assert.ok(after.stats.totalPages > before.stats.totalPages);
  } finally {
    await inspector.close();
    heap.detach();
  }
});
