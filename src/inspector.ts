/*
 * The inspector: a local web page that shows a running heap live (the zone's pages, buddyinfo,
 * slabtop, each agent's operations, pcp, deferred frees, RCU, the trace hook's size histogram).
 * Node only: import it from "shmalloc/inspector"; the main entry stays free of node: imports.
 *
 * DESIGN: snapshots from the heap's own process, pushed to the page with server-sent events.
 *
 *   The page cannot share the heap's SharedArrayBuffer: a buffer made in Node never reaches a
 *   browser, and moving the workload into the browser would inspect a different program than the
 *   one the user runs. So the agent that serves the inspector reads the heap where it lives, with
 *   the same no-lock reads as stats(), and sends what it read:
 *   - true: each snapshot is one stats() and one pageMap() taken back to back in one turn of this
 *     agent's event loop, straight from the buffer the workers write; nothing is cached or
 *     recomputed on the way.
 *   - cheap: one snapshot per interval, serialised once and written to every open page; none at
 *     all while no page is open. The page map goes run-length coded while runs are long (the
 *     demo's 16384 pages in mid-run: about 1600 runs, 8 KB), else as base64 of the codes, a byte
 *     or two a page (a 1 GiB heap with every other page allocated: 350 KB instead of 1.2 MB of
 *     runs); a map of more than LARGE_MAP_PAGES pages goes to the pages at most once a second,
 *     the snapshots between carry the figures and no map. A page too slow to take a snapshot
 *     skips it and gets the next one, so a stalled tab never makes the server buffer without
 *     bound.
 *   - server-sent events rather than a WebSocket: the stream is one way, Node's http serves it
 *     with no dependency, and EventSource reconnects by itself.
 *   Binds a loopback address (127.0.0.1 by default; another host is EINVAL unless allowRemote),
 *   answers only peers on loopback, and only requests that carry a Host header naming it by that
 *   address or localhost (a page of another site cannot read the heap through DNS rebinding).
 *   options.extra runs in the snapshot and is serialised on its own: its failures are reported in
 *   extraError and never cost the heap's figures. When the handle is detached the stream ends
 *   with an "end" event and the server keeps serving the page until close().
 *
 * WORDS: none owned, none written: it calls heap.stats(), heap.pageMap() and heap.cacheNames() on
 *   the handle it was given, on the thread that owns that handle (between the thread's own
 *   allocator calls, never inside one).
 * LOCKS: none, so watching never makes an allocation wait.
 * NO LOCK: every snapshot (the reads of stats(), pageMap() and cacheNames()).
 * STALE: every figure and page state: as racy as stats() while agents run, and exact when the
 *   heap is quiet (the browser test checks that). Safe: the inspector only shows them.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, readOptions } from "./core/check.js";
import { ErrorCode, HeapError } from "./core/errors.js";
import type { HeapStats } from "./api.js";
import type { Heap } from "./heap.js";
import { PAGE_STATE } from "./pagemap.js";
import { encodePageMap, type EncodedPageMap } from "./inspector_map.js";
import { isHeap } from "./layers.js";

export { decodePageMap, encodePageMap, type EncodedPageMap } from "./inspector_map.js";

/** Figures the heap cannot know, supplied by the program that runs it (all counts are running totals). */
export interface InspectorExtra {
  /** Operations each agent has done so far: the page charts their rates. */
  agents?: { name: string; ops: number }[];
  /** A trace hook's size histogram: allocations per size bucket so far. */
  sizes?: { label: string; count: number }[];
  /** Any other running totals, shown by name (e.g. allocation failures the program handled). */
  counters?: Record<string, number>;
}

/**
 * Checks extra()'s result (already plain JSON) against InspectorExtra: a field of the wrong shape
 * is deleted and described in the list returned, so the pages only see what they can draw.
 */
function checkExtraShape(x: Record<string, unknown>): string[] {
  const wrong: string[] = [];
  const isNum = (v: unknown): boolean => typeof v === "number" && Number.isFinite(v);
  const listOf = (field: "agents" | "sizes", key: string, num: string): void => {
    const v = x[field];
    if (v === undefined) return;
    if (!Array.isArray(v)) {
      wrong.push(`${field} that is not an array (${v === null ? "null" : typeof v})`);
      delete x[field];
      return;
    }
    const i = v.findIndex((e: unknown) => typeof e !== "object" || e === null || typeof (e as Record<string, unknown>)[key] !== "string" || !isNum((e as Record<string, unknown>)[num]));
    if (i >= 0) {
      wrong.push(`${field}[${i}] that is not { ${key}: string, ${num}: number } (${JSON.stringify(v[i])})`);
      delete x[field];
    }
  };
  listOf("agents", "name", "ops");
  listOf("sizes", "label", "count");
  const c = x["counters"];
  if (c !== undefined) {
    if (typeof c !== "object" || c === null || Array.isArray(c)) {
      wrong.push(`counters that is not an object of numbers (${c === null ? "null" : Array.isArray(c) ? "an array" : typeof c})`);
      delete x["counters"];
    } else {
      const k = Object.keys(c).find((n) => !isNum((c as Record<string, unknown>)[n]));
      if (k !== undefined) {
        wrong.push(`counters.${k} that is not a number (${JSON.stringify((c as Record<string, unknown>)[k])})`);
        delete x["counters"];
      }
    }
  }
  return wrong;
}

export interface InspectorOptions {
  /** TCP port; 0 (default) picks a free one. */
  port?: number;
  /**
   * Address to bind (default "127.0.0.1"): a loopback address ("127.x.y.z", "::1", "localhost")
   * unless allowRemote is true. An IPv4-mapped IPv6 address ("::ffff:127.0.0.1") is refused: give
   * the IPv4 address.
   */
  host?: string;
  /**
   * Allow a host that is not loopback ("0.0.0.0", "::", a LAN address), and requests from other
   * machines. Anyone who can reach the port can then read the heap's figures; off by default.
   */
  allowRemote?: boolean;
  /** Milliseconds between snapshots (default 250, 50..10000). */
  intervalMs?: number;
  /** Shown at the top of the page. */
  title?: string;
  /**
   * Called once per snapshot for figures the heap does not hold (see InspectorExtra). It must be
   * synchronous and return plain JSON data; what it throws, or returns that JSON cannot hold, is
   * reported as the snapshot's extraError.
   */
  extra?: () => InspectorExtra;
}

/** What the page receives several times a second (also GET /snapshot.json). */
export interface InspectorSnapshot {
  /** Counts snapshots since the server started. */
  seq: number;
  /** Date.now() when it was taken. */
  time: number;
  title: string;
  /** offset: the heap's first byte in its buffer (the map's pages below it are PAGE_STATE.outside). */
  heap: { size: number; maxSize: number; pageSize: number; offset: number };
  stats: HeapStats;
  /** heap.cacheNames(): the cache id of each PAGE_STATE.slab code. */
  caches: (string | null)[];
  /**
   * heap.pageMap() encoded (encodePageMap; decodePageMap reads it back). null in a snapshot sent
   * to the pages when the map is large (over 65536 pages, a 256 MiB heap) and one was sent less
   * than a second ago: the pages keep the last map they got. snapshot() always has it.
   */
  map: EncodedPageMap | null;
  /** The PAGE_STATE codes the map uses. */
  states: typeof PAGE_STATE;
  /** What options.extra returned, as plain JSON data. */
  extra: InspectorExtra | null;
  /**
   * Why extra is null although options.extra was given: what it threw, that its result cannot be
   * sent as JSON, or that it returned a Promise (it must be synchronous); or which of its fields
   * (agents, sizes, counters) is not of InspectorExtra's shape: that field is left out of extra,
   * the others are sent. The rest of the snapshot is still true.
   */
  extraError?: string;
}

/** A page map of more pages than this goes to the pages at most once per LARGE_MAP_EVERY_MS. */
const LARGE_MAP_PAGES = 65536;
const LARGE_MAP_EVERY_MS = 1000;

export interface Inspector {
  /** http://host:port/ of the page. */
  readonly url: string;
  readonly port: number;
  /** Take a snapshot now (what the next page update will look like). */
  snapshot(): InspectorSnapshot;
  /** Pages watching now. */
  readonly clients: number;
  /** Send a last snapshot and an "end" event to every page, and stop serving. */
  close(): Promise<void>;
}

const MIME: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
};

/** The page's own files, and uPlot's, by URL path. */
function assetFiles(): Map<string, string> {
  const here = dirname(fileURLToPath(import.meta.url));
  // dist/src/inspector.js -> <package>/inspector/; src/inspector.ts -> the same folder.
  const page = [join(here, "..", "..", "inspector"), join(here, "..", "inspector")].find((d) => existsSync(join(d, "index.html")));
  if (page === undefined) throw new Error(`the inspector's page files (inspector/index.html) are missing next to ${here}`);
  const uplot = dirname(createRequire(import.meta.url).resolve("uplot"));
  return new Map([
    ["/", join(page, "index.html")],
    ["/index.html", join(page, "index.html")],
    ["/app.js", join(page, "app.js")],
    ["/app.css", join(page, "app.css")],
    ["/uPlot.esm.js", join(uplot, "uPlot.esm.js")],
    ["/uPlot.min.css", join(uplot, "uPlot.min.css")],
  ]);
}

const HEADERS: Readonly<Record<string, string>> = {
  "Cache-Control": "no-store",
  // Cross-origin isolated, like any page that may hold a heap's SharedArrayBuffer.
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
  "X-Content-Type-Options": "nosniff",
};

/** The keys serveInspector reads; any other is EINVAL naming the closest. */
const INSPECTOR_OPTIONS = ["port", "host", "allowRemote", "intervalMs", "title", "extra"] as const;

function bad(message: string): never {
  throw new HeapError(ErrorCode.EINVAL, `serveInspector: ${message}`);
}

/** A message for what was thrown, whatever it is (its message or toString may throw too). */
function describeThrown(e: unknown): string {
  try {
    if (e instanceof Error) return String(e.message);
    return String(e);
  } catch {
    try {
      return `a thrown ${Object.prototype.toString.call(e).slice(8, -1)} that cannot be shown as text`;
    } catch {
      return "a thrown value that cannot be shown as text";
    }
  }
}

/** An address of this machine's loopback interface (or the name localhost). */
function isLoopback(address: string): boolean {
  const a = address.toLowerCase();
  if (a === "localhost" || a === "::1" || a === "0:0:0:0:0:0:0:1") return true;
  const v4 = a.startsWith("::ffff:") ? a.slice(7) : a;
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(v4);
  return m !== null && m.slice(1).every((x) => Number(x) <= 255);
}

/**
 * Serve the inspector for `heap` on http://127.0.0.1:port/. Call it on the agent that owns `heap`
 * (usually the main thread); the snapshots are taken there. Resolves once the server listens;
 * rejects with the reason when it cannot (a port in use names itself).
 */
export async function serveInspector(heap: Heap, options: InspectorOptions = {}): Promise<Inspector> {
  // A brand check: a Proxy of a Heap or an object inheriting from one is not a Heap (and its
  // calls would throw a TypeError about a private member, not a HeapError).
  if (!isHeap(heap)) bad(`the first argument must be a Heap, not ${describe(heap)}`);
  let o: Record<string, unknown>;
  try {
    o = readOptions("options", options, INSPECTOR_OPTIONS);
  } catch (e) {
    if (e instanceof HeapError) bad(e.message.replace(/^EINVAL: /, ""));
    throw e;
  }
  const port = o.port ?? 0;
  if (typeof port !== "number" || !Number.isInteger(port) || port < 0 || port > 65535) bad(`port must be a whole number in 0..65535, not ${describe(port)}`);
  const host = o.host ?? "127.0.0.1";
  if (typeof host !== "string" || host === "") bad(`host must be a non-empty string, not ${describe(host)}`);
  const allowRemote = o.allowRemote ?? false;
  if (typeof allowRemote !== "boolean") bad(`allowRemote must be true or false, not ${describe(allowRemote)}`);
  if (/^(0{0,4}:){0,5}:?ffff:\d/i.test(host) && host.includes("."))
    bad(
      `host ${JSON.stringify(host)} is an IPv4-mapped IPv6 address: browsers rewrite it in the page's URL (in hex: [::ffff:7f00:1] for 127.0.0.1), ` +
        `so their requests would not match it; give the IPv4 address itself (${JSON.stringify(host.slice(host.lastIndexOf(":") + 1))})`,
    );
  if (!allowRemote && !isLoopback(host))
    bad(
      `host ${JSON.stringify(host)} is not a loopback address: the page shows the heap to anyone who can reach it, ` +
        `so the inspector binds 127.0.0.1, ::1 or localhost unless allowRemote: true says to serve other machines too`,
    );
  const intervalMs = o.intervalMs ?? 250;
  if (typeof intervalMs !== "number" || !(intervalMs >= 50 && intervalMs <= 10_000)) bad(`intervalMs must be a number in 50..10000, not ${describe(intervalMs)}`);
  const extra = o.extra as (() => InspectorExtra) | undefined;
  if (extra !== undefined && typeof extra !== "function") bad(`extra must be a function, not ${describe(extra)}`);
  const title = o.title ?? "shmalloc heap";
  if (typeof title !== "string") bad(`title must be a string, not ${describe(title)}`);
  // A detached handle can show nothing: refuse now rather than serve a page that never fills.
  try {
    heap.cacheNames();
  } catch (e) {
    if (e instanceof HeapError && e.code === ErrorCode.EDETACHED) throw new HeapError(ErrorCode.EDETACHED, "serveInspector: the heap handle is detached; serve a live handle");
    throw e;
  }

  const files = assetFiles();
  const clients = new Set<ServerResponse>();
  let seq = 0;
  let map: Uint16Array = new Uint16Array(0);
  let timer: ReturnType<typeof setInterval> | null = null;
  /** Why the stream ended (the handle was detached, or close()); null while live. */
  let ended: string | null = null;
  let closed = false;
  let boundPort = port;
  /** When the pages last got a large map (see LARGE_MAP_PAGES), and of how many pages. */
  let lastLargeMapAt = -Infinity;
  let lastMapPages = -1;

  /** options.extra's figures as plain JSON data, or why there are none. */
  const readExtra = (snap: InspectorSnapshot): void => {
    if (extra === undefined) return;
    let value: unknown;
    try {
      value = extra();
    } catch (e) {
      snap.extraError = describeThrown(e);
      return;
    }
    if (value === undefined || value === null) return;
    try {
      if (typeof (value as { then?: unknown }).then === "function") {
        // Nothing awaits it; a rejection would go unhandled.
        (value as Promise<unknown>).then(undefined, () => {});
        snap.extraError = "extra must be synchronous: it returned a Promise (read the figures into variables and return those)";
        return;
      }
      if (typeof value !== "object" || Array.isArray(value)) {
        snap.extraError = `extra must return an object ({ agents, sizes, counters }), not ${Array.isArray(value) ? "an array" : typeof value}`;
        return;
      }
      // Serialised on its own: a value JSON cannot hold fails here, not the whole snapshot.
      const plain = JSON.parse(JSON.stringify(value)) as Record<string, unknown>;
      const wrong = checkExtraShape(plain);
      snap.extra = plain as InspectorExtra;
      if (wrong.length > 0) snap.extraError = `extra returned ${wrong.join("; ")} (left out)`;
    } catch (e) {
      snap.extraError = `extra returned a value that cannot be sent as JSON: ${describeThrown(e)}`;
    }
  };

  const takeSnapshot = (withMap: boolean): InspectorSnapshot => {
    const stats = heap.stats();
    let encoded: EncodedPageMap | null = null;
    if (withMap) {
      map = heap.pageMap(map);
      encoded = encodePageMap(map);
    }
    const snap: InspectorSnapshot = {
      seq: ++seq,
      time: Date.now(),
      title,
      heap: { size: heap.size, maxSize: heap.maxSize, pageSize: heap.pageSize, offset: heap.offset },
      stats,
      caches: heap.cacheNames(),
      map: encoded,
      states: PAGE_STATE,
      extra: null,
    };
    readExtra(snap);
    return snap;
  };
  const snapshot = (): InspectorSnapshot => takeSnapshot(true);

  /** The snapshot for the pages: a large map at most once per LARGE_MAP_EVERY_MS (or when the heap grew). */
  const pageSnapshot = (force: boolean): InspectorSnapshot => {
    const now = performance.now();
    const pages = heap.size / heap.pageSize;
    const withMap = force || pages !== lastMapPages || pages <= LARGE_MAP_PAGES || now - lastLargeMapAt >= LARGE_MAP_EVERY_MS;
    const snap = takeSnapshot(withMap);
    if (withMap && !force) {
      lastMapPages = pages;
      if (pages > LARGE_MAP_PAGES) lastLargeMapAt = now;
    }
    return snap;
  };

  const send = (res: ServerResponse, event: string | null, data: string): void => {
    // A page that has not taken the last snapshot yet skips this one (no unbounded buffering).
    if (res.writableNeedDrain || res.destroyed) return;
    res.write(`${event !== null ? `event: ${event}\n` : ""}data: ${data}\n\n`);
  };

  /** End every stream with an "end" event saying why; the pages stop reconnecting. */
  const endStreams = (why: string): void => {
    ended = why;
    stopTimer();
    const data = JSON.stringify({ reason: why });
    for (const res of clients) {
      if (!res.destroyed) res.end(`event: end\ndata: ${data}\n\n`);
    }
    clients.clear();
  };

  const tryBroadcast = (force = false): void => {
    if (clients.size === 0) return;
    let data: string;
    try {
      data = JSON.stringify(pageSnapshot(force));
    } catch (e) {
      if (e instanceof HeapError && e.code === ErrorCode.EDETACHED) endStreams("the heap handle was detached");
      else {
        const msg = JSON.stringify({ message: describeThrown(e) });
        for (const res of clients) send(res, "failure", msg);
      }
      return;
    }
    for (const res of clients) send(res, null, data);
  };

  function stopTimer(): void {
    if (timer !== null) clearInterval(timer);
    timer = null;
  }

  const allowedHosts = (): Set<string> =>
    new Set([`127.0.0.1:${boundPort}`, `localhost:${boundPort}`, `[::1]:${boundPort}`, `${host}:${boundPort}`, host.includes(":") ? `[${host}]:${boundPort}` : ""]);
  const openBind = host === "0.0.0.0" || host === "::";

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (!allowRemote && !isLoopback(req.socket.remoteAddress ?? "")) {
      res.writeHead(403, { "Content-Type": "text/plain", Connection: "close" }).end("the inspector answers only this machine (serveInspector's allowRemote is off)\n");
      return;
    }
    const hostHeader = req.headers.host;
    if (hostHeader === undefined || hostHeader === "") {
      res.writeHead(400, { "Content-Type": "text/plain", Connection: "close" }).end("a Host header is required\n");
      return;
    }
    if (!openBind && !allowedHosts().has(hostHeader.toLowerCase())) {
      res.writeHead(403, { "Content-Type": "text/plain" }).end("the inspector answers only requests addressed to its own host and port\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { Allow: "GET, HEAD", "Content-Type": "text/plain" }).end("GET only\n");
      return;
    }
    const path = new URL(req.url ?? "/", "http://x").pathname;
    if (path === "/events") {
      if (req.method === "HEAD") {
        // Headers only; the connection is kept or closed as the request asked.
        res.writeHead(200, { ...HEADERS, "Content-Type": "text/event-stream" }).end();
        return;
      }
      res.writeHead(200, { ...HEADERS, "Content-Type": "text/event-stream", Connection: "keep-alive" });
      if (ended !== null) {
        res.end(`event: end\ndata: ${JSON.stringify({ reason: ended })}\n\n`);
        return;
      }
      res.write(`retry: 1000\n\n`);
      clients.add(res);
      req.on("close", () => {
        clients.delete(res);
        if (clients.size === 0) stopTimer();
      });
      // The first picture at once, then one per interval while anyone watches.
      tryBroadcastTo(res);
      if (timer === null && ended === null) timer = setInterval(tryBroadcast, intervalMs);
      return;
    }
    if (path === "/snapshot.json") {
      try {
        const body = JSON.stringify(snapshot());
        res.writeHead(200, { ...HEADERS, "Content-Type": "application/json" }).end(req.method === "HEAD" ? undefined : body);
      } catch (e) {
        res.writeHead(503, { ...HEADERS, "Content-Type": "text/plain" }).end(`${describeThrown(e)}\n`);
      }
      return;
    }
    const file = files.get(path);
    if (file === undefined) {
      res.writeHead(404, { "Content-Type": "text/plain" }).end("not found\n");
      return;
    }
    try {
      const body = await readFile(file);
      const ext = file.slice(file.lastIndexOf("."));
      res.writeHead(200, { ...HEADERS, "Content-Type": MIME[ext] ?? "application/octet-stream" }).end(req.method === "HEAD" ? undefined : body);
    } catch {
      res.writeHead(500, { "Content-Type": "text/plain" }).end(`cannot read ${path}\n`);
    }
  };

  const tryBroadcastTo = (res: ServerResponse): void => {
    try {
      // A new page has no map yet: this one always carries it.
      send(res, null, JSON.stringify(snapshot()));
    } catch (e) {
      if (e instanceof HeapError && e.code === ErrorCode.EDETACHED) endStreams("the heap handle was detached");
      else send(res, "failure", JSON.stringify({ message: describeThrown(e) }));
    }
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) res.writeHead(500, { "Content-Type": "text/plain" });
      res.end(`${describeThrown(e)}\n`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => {
      const where = `${host}:${port}`;
      const why =
        e.code === "EADDRINUSE"
          ? `port ${port} on ${host} is in use; choose another port, or 0 for any free one`
          : e.code === "EACCES"
            ? `no permission to listen on ${where}`
            : e.code === "EADDRNOTAVAIL" || e.code === "ENOTFOUND"
              ? `${host} is not an address of this machine`
              : e.message;
      const err = new Error(`cannot serve the inspector on ${where}: ${why}`) as NodeJS.ErrnoException;
      if (e.code !== undefined) err.code = e.code;
      reject(err);
    };
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("the inspector's server has no address");
  boundPort = addr.port;
  const urlHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;

  return {
    url: `http://${urlHost}:${boundPort}/`,
    port: boundPort,
    snapshot,
    get clients() {
      return clients.size;
    },
    close(): Promise<void> {
      if (closed) return Promise.resolve();
      closed = true;
      if (ended === null) {
        // A last picture, so that pages show how the heap was left.
        if (clients.size > 0) tryBroadcast(true);
        endStreams("the program stopped serving the inspector");
      }
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        // Streams that did not end (a client that never read) must not keep the process alive.
        setTimeout(() => server.closeAllConnections(), 200).unref();
      });
    },
  };
}
