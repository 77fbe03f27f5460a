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
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { GFP, Heap, type HeapError, MAX_ORDER, PAGE_STATE } from "../../src/index.js";
import { decodePageMap, encodePageMap, serveInspector, type InspectorSnapshot } from "../../src/inspector.js";
import { HAMMER, HAMMER_ROW, HAMMER_SIZES } from "../support/hammer-control.js";
import { launchChromium, openPage, REPO_ROOT } from "../support/browser.js";
import { code } from "../support/check.js";
import { until } from "../support/util.js";

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
    const w = new Worker(new URL("../agents/workers/hammer.js", import.meta.url), {
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
    const snap = (await (await get("/snapshot.json")).json()) as InspectorSnapshot;
    assert.equal(snap.stats.totalPages, heap.stats().totalPages);
    assert.deepEqual(decodePageMap(snap.map!), heap.pageMap());
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
    const pages = (m: InspectorSnapshot["map"]): number => decodePageMap(m!).length;
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

/** Raw HTTP on one socket: what came back, and whether the server closed the socket (deadline 5 s). */
function rawRequest(port: number, text: string): Promise<{ reply: string; closed: boolean }> {
  return new Promise((resolve) => {
    const sock = connect(port, "127.0.0.1");
    let reply = "";
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ reply, closed: false });
    }, 5000);
    sock.setEncoding("utf8").on("data", (d: string) => (reply += d));
    sock.on("error", () => {});
    sock.on("close", () => {
      clearTimeout(timer);
      resolve({ reply, closed: true });
    });
    sock.write(text);
  });
}

test("extra that cannot be sent is reported in extraError; the heap's figures still come", async () => {
  const heap = Heap.create({ size: 2 * MiB, cpus: 2 });
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  const hostile = { toString: () => { throw new Error("no text either"); } };
  const cases: [string, () => unknown, string][] = [
    ["circular", () => ({ counters: { circular } }), "extra returned a value that cannot be sent as JSON: Converting circular structure to JSON"],
    ["BigInt", () => ({ counters: { n: 1n } }), "extra returned a value that cannot be sent as JSON: Do not know how to serialize a BigInt"],
    ["throwing getter", () => ({ get counters(): never { throw new Error("getter failed"); } }), "extra returned a value that cannot be sent as JSON: getter failed"],
    ["throwing toJSON", () => ({ toJSON: () => { throw new Error("toJSON failed"); } }), "extra returned a value that cannot be sent as JSON: toJSON failed"],
    ["thrown object whose toString throws", () => { throw hostile; }, "a thrown Object that cannot be shown as text"],
    ["Promise", () => Promise.reject(new Error("async figures")), "extra must be synchronous: it returned a Promise (read the figures into variables and return those)"],
    ["number", () => 7, "extra must return an object ({ agents, sizes, counters }), not number"],
  ];
  for (const [what, extra, message] of cases) {
    const inspector = await serveInspector(heap, { extra: extra as () => never });
    try {
      const snap = inspector.snapshot();
      assert.equal(snap.extra, null, what);
      assert.equal(snap.extraError!.startsWith(message), true, `${what}: ${snap.extraError}`);
      assert.deepEqual(snap.stats, heap.stats(), what);
      const res = await fetch(new URL("snapshot.json", inspector.url));
      assert.equal(res.status, 200, what);
      const served = (await res.json()) as InspectorSnapshot;
      assert.equal(served.extraError, snap.extraError, what);
      assert.equal(served.stats.totalPages, heap.stats().totalPages);
      // The stream's first event is a snapshot, not a failure.
      const first = await new Promise<string>((resolve, reject) => {
        httpGet(new URL("events", inspector.url), (r) => {
          let buf = "";
          r.setEncoding("utf8").on("data", (d: string) => {
            buf += d;
            const blocks = buf.split("\n\n").filter((b) => b.includes("data: "));
            if (blocks.length > 0) {
              r.destroy();
              resolve(blocks[0]!);
            }
          });
        }).on("error", reject);
      });
      assert.match(first, /^data: \{"seq":/, what);
      assert.equal((JSON.parse(first.slice("data: ".length)) as InspectorSnapshot).extraError, snap.extraError);
    } finally {
      await inspector.close();
    }
  }
  heap.detach();
});

test("the inspector serves loopback only unless allowRemote, and needs a Host header", async () => {
  const heap = Heap.create({ size: 2 * MiB, cpus: 2 });
  const why = "is not a loopback address: the page shows the heap to anyone who can reach it, so the inspector binds 127.0.0.1, ::1 or localhost unless allowRemote: true says to serve other machines too";
  for (const host of ["0.0.0.0", "::", "192.0.2.1", "example.com"]) {
    await assert.rejects(serveInspector(heap, { host }), (e: HeapError) => {
      assert.equal(e.code, "EINVAL");
      assert.equal(e.message, `EINVAL: serveInspector: host ${JSON.stringify(host)} ${why}`);
      return true;
    });
  }
  // An IPv4-mapped IPv6 host: browsers rewrite it in the URL, so the page's own requests would get 403.
  for (const host of ["::ffff:127.0.0.1", "0:0:0:0:0:FFFF:127.0.0.1"]) {
    await assert.rejects(serveInspector(heap, { host }), (e: HeapError) => {
      assert.equal(e.code, "EINVAL");
      assert.equal(
        e.message,
        `EINVAL: serveInspector: host ${JSON.stringify(host)} is an IPv4-mapped IPv6 address: browsers rewrite it in the page's URL (in hex: [::ffff:7f00:1] for 127.0.0.1), so their requests would not match it; give the IPv4 address itself ("127.0.0.1")`,
      );
      return true;
    });
  }
  await assert.rejects(serveInspector(heap, { allowRemote: "yes" as unknown as boolean }), /allowRemote must be true or false, not a string \("yes"\)/);
  const other = await serveInspector(heap, { host: "127.0.0.2" });
  assert.equal(other.url, `http://127.0.0.2:${other.port}/`);
  await other.close();
  const open = await serveInspector(heap, { host: "0.0.0.0", allowRemote: true });
  try {
    assert.equal((await fetch(new URL("snapshot.json", open.url))).status, 200);
  } finally {
    await open.close();
  }
  const inspector = await serveInspector(heap);
  try {
    // HTTP/1.0 without a Host header: refused.
    const noHost = await rawRequest(inspector.port, "GET /snapshot.json HTTP/1.0\r\n\r\n");
    assert.match(noHost.reply, /^HTTP\/1\.1 400 /);
    assert.match(noHost.reply, /a Host header is required\n$/);
    assert.doesNotMatch(noHost.reply, /"seq"/);
    // HEAD /events with Connection: close: headers only, and the socket is closed.
    const head = await rawRequest(inspector.port, `HEAD /events HTTP/1.1\r\nHost: 127.0.0.1:${inspector.port}\r\nConnection: close\r\n\r\n`);
    assert.equal(head.closed, true, "HEAD /events with Connection: close closes the socket");
    assert.match(head.reply, /^HTTP\/1\.1 200 /);
    assert.match(head.reply, /\r\nConnection: close\r\n/i);
    assert.match(head.reply, /\r\n\r\n$/);
    // A request after HEAD /events on the same connection is answered.
    const piped = await rawRequest(
      inspector.port,
      `HEAD /events HTTP/1.1\r\nHost: 127.0.0.1:${inspector.port}\r\n\r\nGET /snapshot.json HTTP/1.1\r\nHost: 127.0.0.1:${inspector.port}\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(piped.closed, true);
    assert.equal(piped.reply.match(/HTTP\/1\.1 200 /g)?.length, 2);
    assert.match(piped.reply, /"seq":/);
  } finally {
    await inspector.close();
  }
  // A detached handle is refused at once.
  heap.detach();
  await assert.rejects(serveInspector(heap), (e: HeapError) => {
    assert.equal(e.code, "EDETACHED");
    assert.match(e.message, /^EDETACHED: serveInspector: the heap handle is detached/);
    return true;
  });
});

test("page maps go run-length coded or as base64 codes, whichever is smaller, and decode exactly", async () => {
  const runs = new Uint16Array(800).fill(16, 300).fill(32, 500);
  const rle = encodePageMap(runs);
  assert.deepEqual(rle, { encoding: "rle", pages: 800, data: [0, 300, 16, 200, 32, 300] });
  assert.deepEqual(decodePageMap(rle), runs);
  const bytes = Uint16Array.from({ length: 1000 }, (_, i) => (i % 2 === 0 ? 3 : 16));
  const u8 = encodePageMap(bytes);
  assert.equal(u8.encoding, "u8");
  assert.equal(u8.data, Buffer.from(Uint8Array.from(bytes)).toString("base64"));
  assert.deepEqual(decodePageMap(u8), bytes);
  const words = Uint16Array.from({ length: 1001 }, (_, i) => (i % 2 === 0 ? 3 : 32 + 300));
  const u16 = encodePageMap(words.subarray(1));
  assert.equal(u16.encoding, "u16");
  assert.deepEqual(decodePageMap(u16), words.subarray(1));
  assert.deepEqual(decodePageMap(encodePageMap(new Uint16Array(0))), new Uint16Array(0));

  // A fragmented heap of more than 65536 pages: every other page allocated. The map goes as one
  // byte a page, and the stream sends it about once a second, the snapshots between without it.
  const heap = Heap.create({ size: 260 * MiB, cpus: 2 });
  const pages: number[] = [];
  for (let a; (a = heap.allocPages(0, GFP.NOWAIT)) !== 0; ) pages.push(a);
  pages.sort((a, b) => a - b);
  const kept = pages.filter((a, i) => (i % 2 === 0 ? true : (heap.freePages(a, 0), false)));
  heap.shrink();
  const inspector = await serveInspector(heap, { intervalMs: 50 });
  try {
    const snap = inspector.snapshot();
    assert.equal(snap.map!.encoding, "u8");
    assert.deepEqual(decodePageMap(snap.map!), heap.pageMap());
    process.stdout.write(`# ${heap.size / heap.pageSize} pages, every other one allocated: snapshot ${JSON.stringify(snap).length} bytes of JSON\n`);
    const maps: boolean[] = [];
    await new Promise<void>((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error("no snapshot without a map within 20 s")), 20_000);
      httpGet(new URL("events", inspector.url), (r) => {
        let buf = "";
        r.setEncoding("utf8").on("data", (d: string) => {
          buf += d;
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            if (block.startsWith("data: ")) maps.push((JSON.parse(block.slice(6)) as InspectorSnapshot).map !== null);
          }
          if (maps.length >= 3 && maps.includes(false)) {
            clearTimeout(deadline);
            r.destroy();
            resolve();
          }
        });
      }).on("error", reject);
    });
    assert.equal(maps[0], true, "a new page gets the map at once");
    assert.equal(maps.includes(false), true);
  } finally {
    await inspector.close();
    for (const a of kept) heap.freePages(a, 0);
    heap.shrink();
    heap.validate();
    heap.detach();
  }
});

test("the page draws base64 maps and keeps the last large map; slabtop shows the first 200 of many caches", { timeout: 90_000 }, async () => {
  // 300 caches with one object each: codes above 255 and a run per page, so the map goes as "u16".
  const many = Heap.create({ size: 4 * MiB, cpus: 1, maxCaches: 512 });
  for (let i = 0; i < 300; i++) many.createCache(`c${i}`, 64).alloc();
  // A fragmented heap of more than 65536 pages: "u8", sent about once a second.
  const big = Heap.create({ size: 260 * MiB, cpus: 1 });
  const pages: number[] = [];
  for (let a; (a = big.allocPages(0, GFP.NOWAIT)) !== 0; ) pages.push(a);
  pages.sort((a, b) => a - b);
  pages.forEach((a, i) => i % 2 === 1 && big.freePages(a, 0));
  big.shrink();
  const a = await serveInspector(many, { intervalMs: 100 });
  const b = await serveInspector(big, { intervalMs: 100 });
  const browser = await launchChromium();
  type Probe = { inspector: { received: number; mapSeq: number; last: { seq: number; map: unknown } | null; tally: Map<number, number> } };
  const tallyOf = (map: Uint16Array): [number, number][] => {
    const t = new Map<number, number>();
    for (const c of map) t.set(c, (t.get(c) ?? 0) + 1);
    return [...t.entries()].sort((x, y) => x[0] - y[0]);
  };
  try {
    assert.equal(a.snapshot().map!.encoding, "u16");
    const p1 = await openPage(browser, a.url);
    await p1.page.waitForFunction(() => (globalThis as unknown as Probe).inspector.received >= 2, null, { timeout: 30_000 });
    const t1 = await p1.page.evaluate(() => [...(globalThis as unknown as Probe).inspector.tally.entries()].sort((x, y) => x[0] - y[0]));
    assert.deepEqual(t1, tallyOf(many.pageMap()));
    assert.equal(await p1.page.locator("#slabtop tbody tr").count(), 200);
    assert.equal(await p1.page.textContent("#slabtop-more"), `showing the first 200 of ${many.stats().slabs.length} caches by pages`);
    assert.match((await p1.page.textContent("#legend-more")) ?? "", /^\d+ more caches: \d+ pages$/);
    assert.deepEqual(p1.errors, []);

    assert.equal(b.snapshot().map!.encoding, "u8");
    const p2 = await openPage(browser, b.url);
    // A snapshot without a map arrives, and the page still shows the last map's tally.
    await p2.page.waitForFunction(() => (globalThis as unknown as Probe).inspector.last?.map === null, null, { timeout: 30_000 });
    const t2 = await p2.page.evaluate(() => [...(globalThis as unknown as Probe).inspector.tally.entries()].sort((x, y) => x[0] - y[0]));
    assert.deepEqual(t2, tallyOf(big.pageMap()));
    assert.match((await p2.page.textContent("#map-age")) ?? "", /^map of snapshot #\d+ \(a large map is sent about once a second\)$/);
    assert.deepEqual(p2.errors, []);
  } finally {
    await browser.close();
    await a.close();
    await b.close();
    many.detach();
    big.detach();
  }
});

test("extra of the wrong shape: extraError names the field, which is left out; the others are sent", async () => {
  const heap = Heap.create({ size: 2 * MiB, cpus: 2 });
  const cases: [string, unknown, string, Record<string, unknown>][] = [
    ["agents a number", { agents: 5 }, "extra returned agents that is not an array (number) (left out)", {}],
    ["agents with null", { agents: [{ name: "a", ops: 1 }, null], counters: { x: 1 } }, "extra returned agents[1] that is not { name: string, ops: number } (null) (left out)", { counters: { x: 1 } }],
    ["sizes an object", { sizes: { a: 1 } }, "extra returned sizes that is not an array (object) (left out)", {}],
    ["counters with a string", { counters: { a: "x" }, sizes: [{ label: "8", count: 2 }] }, 'extra returned counters.a that is not a number ("x") (left out)', { sizes: [{ label: "8", count: 2 }] }],
    ["counters an array", { counters: [1] }, "extra returned counters that is not an object of numbers (an array) (left out)", {}],
  ];
  for (const [what, value, message, kept] of cases) {
    const inspector = await serveInspector(heap, { extra: () => value as never });
    try {
      const snap = inspector.snapshot();
      assert.equal(snap.extraError, message, what);
      assert.deepEqual(snap.extra, kept, what);
    } finally {
      await inspector.close();
    }
  }
  const inspector = await serveInspector(heap, { extra: () => ({ agents: [{ name: "a", ops: 3 }], sizes: [], counters: { n: 2 } }) });
  assert.equal(inspector.snapshot().extraError, undefined);
  await inspector.close();
  heap.detach();
});

test("decodePageMap refuses what encodePageMap cannot have produced (EINVAL)", () => {
  const b64 = (n: number): string => Buffer.alloc(n).toString("base64");
  const cases: [unknown, string][] = [
    [null, "decodePageMap: m must be an EncodedPageMap (from encodePageMap or a snapshot's map), not null"],
    [{}, 'decodePageMap: encoding must be "rle", "u8" or "u16", not undefined'],
    [{ encoding: "rle", pages: 1e12, data: [] }, "decodePageMap: pages must be a whole number in 0..524287 (a heap's pages), not 1000000000000"],
    [{ encoding: "rle", pages: 10, data: [0, 4] }, "decodePageMap: rle data covers 4 pages, not the 10 that pages says"],
    [{ encoding: "rle", pages: 10, data: [0, 11] }, "decodePageMap: rle data[1] must be a run of 1..10 pages (the pages left), not 11"],
    [{ encoding: "rle", pages: 10, data: [0] }, "decodePageMap: rle data must be an array of code, run pairs, not an array of 1 numbers"],
    [{ encoding: "u8", pages: 10, data: b64(4) }, "decodePageMap: u8 data holds 4 bytes, not the 10 that 10 pages take"],
    [{ encoding: "u16", pages: 10, data: b64(10) }, "decodePageMap: u16 data holds 10 bytes, not the 20 that 10 pages take"],
  ];
  for (const [m, message] of cases) {
    assert.throws(() => decodePageMap(m as never), (e: HeapError) => e.code === "EINVAL" && e.message === `EINVAL: ${message}`, message);
  }
});

test("the page: a heap at an offset shows its outside pages apart, and extra of the wrong shape never stops a draw", { timeout: 120_000 }, async () => {
  const offset = 1 * MiB;
  const heap = Heap.create({ buffer: new SharedArrayBuffer(8 * MiB), offset, cpus: 1 });
  const inspector = await serveInspector(heap, { intervalMs: 100, extra: () => ({ agents: 5, counters: { ok: 1 } }) as never });
  const browser = await launchChromium();
  type Probe = { inspector: { received: number; status: string; tally: Map<number, number>; last: { extra: unknown; extraError?: string } | null } };
  try {
    const { page, errors } = await openPage(browser, inspector.url);
    await page.waitForFunction(() => (globalThis as unknown as Probe).inspector.received >= 2, null, { timeout: 30_000 });
    const seen = await page.evaluate(() => {
      const s = (globalThis as unknown as Probe).inspector;
      return { status: s.status, outside: s.tally.get(7) ?? 0, extra: s.last!.extra, extraError: s.last!.extraError };
    });
    assert.equal(PAGE_STATE.outside, 7);
    assert.deepEqual(seen, { status: "live", outside: offset / 4096, extra: { counters: { ok: 1 } }, extraError: "extra returned agents that is not an array (number) (left out)" });
    assert.match((await page.textContent("#map-legend")) ?? "", /not the heap's \(below its offset\) 256/);
    assert.deepEqual(errors, []);

    // A server that sends fields of the wrong shape anyway: the page drops them and draws the rest.
    const bad = { ...inspector.snapshot(), extra: { agents: [{ name: "a", ops: 1 }, null], sizes: { a: 1 }, counters: [1] } };
    const raw = await browser.newPage();
    const rawErrors: string[] = [];
    raw.on("pageerror", (e) => rawErrors.push(e.message));
    await raw.route("**/events", (route) => route.fulfill({ status: 200, headers: { "content-type": "text/event-stream" }, body: `data: ${JSON.stringify(bad)}\n\n` }));
    await raw.goto(inspector.url, { waitUntil: "load" });
    await raw.waitForFunction(() => (globalThis as unknown as Probe).inspector.received >= 1, null, { timeout: 30_000 });
    const drawn = await raw.evaluate(() => {
      const s = (globalThis as unknown as Probe).inspector;
      return { extra: s.last!.extra, failed: s.status === "failure" };
    });
    assert.deepEqual(drawn, { extra: {}, failed: false });
    assert.deepEqual(rawErrors, []);
  } finally {
    await browser.close();
    await inspector.close();
    heap.detach();
  }
});
