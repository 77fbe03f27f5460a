// The inspector's page: receives snapshots of the heap (server-sent events from /events, see
// src/inspector.ts for the design) and draws them. Plain ES module, no build step; uPlot draws
// the time series. Everything shown comes from the snapshot; the only thing computed here are
// rates (differences of running totals between two snapshots) and the page map's tally.
import uPlot from "/uPlot.esm.js";

const HISTORY = 240; // samples kept for the charts (a minute at 4 a second)
const $ = (id) => document.getElementById(id);

/** State shared with tests and with whoever opens the console. */
const state = {
  /** Snapshots received. */
  received: 0,
  /** The last snapshot. */
  last: null,
  /** Pages per state code in the last page map. */
  tally: new Map(),
  /** The snapshot the last page map came with. */
  mapSeq: 0,
  status: "connecting",
};
globalThis.inspector = state;

// ------------------------------------------------------------------ formatting
function count(n) {
  const a = Math.abs(n);
  if (a < 10000) return String(Math.round(n));
  if (a < 1e6) return (n / 1e3).toFixed(a < 1e5 ? 1 : 0) + "k";
  if (a < 1e9) return (n / 1e6).toFixed(a < 1e7 ? 2 : 1) + "M";
  return (n / 1e9).toFixed(2) + "G";
}
function bytes(n) {
  if (n < 1 << 20) return `${Math.round(n / 1024)} KiB`;
  const m = n / (1 << 20);
  return `${Number.isInteger(m) ? m : m.toFixed(1)} MiB`;
}
function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function setStatus(kind, text) {
  state.status = kind;
  const s = $("status");
  s.className = `status ${kind}`;
  s.textContent = text;
}

// ------------------------------------------------------------------ colours
const ORDER_COLOURS = ["#e9f5c9", "#d3edb0", "#bde397", "#a3d882", "#87c96f", "#6cb95f", "#52a653", "#3c9148", "#2a7a3d", "#1c6432", "#0f4d26"];
const FIXED = {
  reserved: ["#5b6470", "metadata (reserved)"],
  pcp: ["#f2c12e", "pcp lists"],
  deferred: ["#f28e2b", "deferred"],
  pages: ["#4c78a8", "allocPages"],
  large: ["#7b4fa0", "large kmalloc"],
  rcuBlock: ["#9c755f", "kfreeRcu blocks"],
  unknown: ["#e0283c", "changing"],
  outside: ["#d9d9d9", "not the heap's (below its offset)"],
};
/** A colour per cache id: hues spread by the golden angle, away from the free pages' greens. */
function cacheColour(id) {
  let h = (id * 137.508) % 250;
  if (h > 55) h += 110; // skip 55..165
  const l = 52 + ((id * 7) % 3) * 8;
  return `hsl(${h.toFixed(0)} 62% ${l}%)`;
}
function rgb(css) {
  const c = document.createElement("canvas").getContext("2d");
  c.fillStyle = css;
  c.fillRect(0, 0, 1, 1);
  const d = c.getImageData(0, 0, 1, 1).data;
  return (255 << 24) | (d[2] << 16) | (d[1] << 8) | d[0]; // little-endian RGBA in a Uint32
}
const rgbCache = new Map();
function codeRgb(code, S) {
  let v = rgbCache.get(code);
  if (v !== undefined) return v;
  v = rgb(codeCss(code, S));
  rgbCache.set(code, v);
  return v;
}
function codeCss(code, S) {
  if (code >= S.slab) return cacheColour(code - S.slab);
  if (code >= S.free) return ORDER_COLOURS[Math.min(code - S.free, ORDER_COLOURS.length - 1)];
  for (const [k, [c]] of Object.entries(FIXED)) if (S[k] === code) return c;
  return "#000";
}
function describeCode(code, S, caches) {
  if (code >= S.slab) return `slab of ${caches[code - S.slab] ?? `cache ${code - S.slab}`}`;
  if (code >= S.free) return `free, in a block of order ${code - S.free} (${1 << (code - S.free)} pages)`;
  for (const [k, [, label]] of Object.entries(FIXED)) if (S[k] === code) return label;
  return `code ${code}`;
}

// ------------------------------------------------------------------ zone map
const map = { codes: new Uint16Array(0), cols: 1, cell: 1, img: null, buf: null };
/** Read a snapshot's encoded page map (see encodePageMap in src/inspector.ts) into map.codes. */
function decodeMap(m) {
  if (map.codes.length !== m.pages) map.codes = new Uint16Array(m.pages);
  const codes = map.codes;
  if (m.encoding === "rle") {
    let p = 0;
    for (let i = 0; i < m.data.length; i += 2) {
      codes.fill(m.data[i], p, p + m.data[i + 1]);
      p += m.data[i + 1];
    }
    return;
  }
  const bin = atob(m.data);
  if (m.encoding === "u8") for (let i = 0; i < m.pages; i++) codes[i] = bin.charCodeAt(i);
  else for (let i = 0; i < m.pages; i++) codes[i] = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
}
function drawMap(snap) {
  const S = snap.states;
  // A snapshot without a map (a large map is sent about once a second) keeps the last one.
  if (snap.map !== null) {
    decodeMap(snap.map);
    const tally = new Map();
    const codes = map.codes;
    for (let i = 0, n = codes.length; i < n; ) {
      const c = codes[i];
      let j = i + 1;
      while (j < n && codes[j] === c) j++;
      tally.set(c, (tally.get(c) ?? 0) + j - i);
      i = j;
    }
    state.tally = tally;
    state.mapSeq = snap.seq;
  } else if (state.mapSeq === 0) return;
  const tally = state.tally;
  const nrPages = map.codes.length;
  const canvas = $("map");
  const width = Math.max(200, canvas.parentElement.clientWidth - 2);
  // The largest cell that keeps the map under about 300 pixels high.
  let cell = 1;
  for (const c of [12, 10, 8, 6, 5, 4, 3, 2]) {
    if (Math.ceil(nrPages / Math.floor(width / c)) * c <= 300) {
      cell = c;
      break;
    }
  }
  const cols = Math.max(1, Math.floor(width / cell));
  const rows = Math.ceil(nrPages / cols);
  if (canvas.width !== cols || canvas.height !== rows) {
    canvas.width = cols;
    canvas.height = rows;
    map.img = null;
  }
  canvas.style.width = `${cols * cell}px`;
  canvas.style.height = `${rows * cell}px`;
  map.cols = cols;
  map.cell = cell;
  const ctx = canvas.getContext("2d");
  let repaint = snap.map !== null;
  if (map.img === null) {
    map.img = ctx.createImageData(cols, rows);
    map.buf = new Uint32Array(map.img.data.buffer);
    repaint = true;
  }
  if (repaint) {
    const buf = map.buf;
    for (let i = 0; i < nrPages; i++) buf[i] = codeRgb(map.codes[i], S);
    buf.fill(0, nrPages); // past the last page: transparent
    ctx.putImageData(map.img, 0, 0);
  }
  drawLegend(snap, tally);
}
function drawLegend(snap, tally) {
  const S = snap.states;
  const L = $("map-legend");
  L.textContent = "";
  const item = (css, label, n, parent = L) => {
    const s = el("span");
    const i = el("i");
    i.style.background = css;
    s.append(i, `${label} ${count(n)}`);
    parent.append(s);
    return s;
  };
  let free = 0;
  const g = el("span", { class: "gradient" });
  for (let o = 0; o < snap.stats.buddy.length; o++) {
    free += tally.get(S.free + o) ?? 0;
    const i = el("i", { title: `order ${o}` });
    i.style.background = ORDER_COLOURS[o];
    g.append(i);
  }
  g.append(`free, order 0 → ${snap.stats.buddy.length - 1}: ${count(free)}`);
  L.append(g);
  for (const [k, [css, label]] of Object.entries(FIXED)) {
    const n = tally.get(S[k]) ?? 0;
    if (n > 0 || k === "pcp") item(css, label, n);
  }
  const slabs = [...tally.entries()].filter(([c]) => c >= S.slab).sort((a, b) => b[1] - a[1]);
  for (const [c, n] of slabs.slice(0, LEGEND_CACHES)) item(cacheColour(c - S.slab), snap.caches[c - S.slab] ?? `cache ${c - S.slab}`, n);
  if (slabs.length > LEGEND_CACHES) {
    const rest = slabs.slice(LEGEND_CACHES);
    L.append(el("span", { class: "note", id: "legend-more" }, `${rest.length} more caches: ${count(rest.reduce((a, [, n]) => a + n, 0))} pages`));
  }
  if (snap.map === null) L.append(el("span", { class: "note", id: "map-age" }, `map of snapshot #${state.mapSeq} (a large map is sent about once a second)`));
}
/** Caches named in the map's legend, by pages; the rest are summed. */
const LEGEND_CACHES = 24;
$("map").addEventListener("mousemove", (e) => {
  const snap = state.last;
  if (snap === null) return;
  const r = e.target.getBoundingClientRect();
  const pfn = Math.floor((e.clientY - r.top) / map.cell) * map.cols + Math.floor((e.clientX - r.left) / map.cell);
  if (pfn < 0 || pfn >= map.codes.length) return;
  $("map-hover").textContent = `page ${pfn} (0x${(pfn * snap.heap.pageSize).toString(16)}): ${describeCode(map.codes[pfn], snap.states, snap.caches)}`;
});

// ------------------------------------------------------------------ charts
const t0 = performance.now();
function chartWidth(id) {
  return Math.max(240, $(id).clientWidth);
}
let buddyChart = null;
const buddy = { x: [], raw: [] }; // raw[o][i]: free pages in blocks of order o
function drawBuddy(snap, t) {
  const orders = snap.stats.buddy.length;
  if (buddy.raw.length !== orders) buddy.raw = Array.from({ length: orders }, () => []);
  buddy.x.push(t);
  snap.stats.buddy.forEach((n, o) => buddy.raw[o].push(n << o));
  if (buddy.x.length > HISTORY) {
    buddy.x.shift();
    for (const r of buddy.raw) r.shift();
  }
  // Stacked bars: series k (drawn first) is the sum of orders 0..MAX-k, so the top of every bar
  // shows the largest blocks and the bottom the smallest.
  const data = [buddy.x];
  for (let o = orders - 1; o >= 0; o--) {
    data.push(buddy.x.map((_, i) => {
      let s = 0;
      for (let j = 0; j <= o; j++) s += buddy.raw[j][i];
      return s;
    }));
  }
  if (buddyChart === null) {
    const series = [{ label: "s", value: (u, v) => (v == null ? "" : v.toFixed(1)) }];
    for (let o = orders - 1; o >= 0; o--) {
      series.push({
        label: `${o}`,
        fill: ORDER_COLOURS[o],
        stroke: ORDER_COLOURS[Math.min(o + 2, orders - 1)],
        width: 0,
        paths: uPlot.paths.bars({ size: [1, 12], gap: 0 }),
        points: { show: false },
        value: (u, v, si, i) => (i == null ? "" : count(buddy.raw[o][i] ?? 0)),
      });
    }
    buddyChart = new uPlot(
      {
        width: chartWidth("buddy-chart"),
        height: 190,
        scales: { x: { time: false }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
        axes: [{ label: "seconds", labelSize: 14, size: 30 }, { label: "free pages", labelSize: 14, size: 52 }],
        legend: { live: false },
        cursor: { show: false },
        series,
      },
      data,
      $("buddy-chart"),
    );
  } else buddyChart.setData(data);
  $("buddy-now").textContent = `buddyinfo  ${snap.stats.buddy.map((n, o) => `${o}:${n}`).join("  ")}`;
}

const OPS_COLOURS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac", "#eeca3b"];
let opsChart = null;
let opsNames = "";
const ops = { x: [], y: [] };
let prevSnap = null;
function drawOps(snap, t) {
  const agents = snap.extra?.agents;
  if (!agents || agents.length === 0) {
    $("ops-note").textContent = "No per-agent counts: pass extra: () => ({ agents: [{ name, ops }] }) to serveInspector.";
    $("ops-chart").style.display = "none";
    return;
  }
  $("ops-note").textContent = "";
  $("ops-chart").style.display = "";
  const names = agents.map((a) => a.name).join("\u0000");
  if (names !== opsNames) {
    opsChart?.destroy();
    opsChart = null;
    opsNames = names;
    ops.x = [];
    ops.y = agents.map(() => []);
  }
  const prev = prevSnap?.extra?.agents;
  const dt = prevSnap === null ? 0 : (snap.time - prevSnap.time) / 1000;
  if (!prev || prev.length !== agents.length || dt <= 0) return; // a rate needs two samples
  ops.x.push(t);
  agents.forEach((a, i) => ops.y[i].push(Math.max(0, (a.ops - prev[i].ops) / dt)));
  if (ops.x.length > HISTORY) {
    ops.x.shift();
    for (const y of ops.y) y.shift();
  }
  const data = [ops.x, ...ops.y];
  if (opsChart === null) {
    opsChart = new uPlot(
      {
        width: chartWidth("ops-chart"),
        height: 190,
        scales: { x: { time: false } },
        axes: [{ label: "seconds", labelSize: 14, size: 30 }, { label: "ops/s", labelSize: 14, size: 52, values: (u, v) => v.map(count) }],
        legend: { live: false },
        cursor: { show: false },
        series: [
          { label: "s", value: (u, v) => (v == null ? "" : v.toFixed(1)) },
          ...agents.map((a, i) => ({ label: a.name, stroke: OPS_COLOURS[i % OPS_COLOURS.length], width: 1.5, points: { show: false }, value: (u, v) => (v == null ? "" : count(v)) })),
        ],
      },
      data,
      $("ops-chart"),
    );
  } else opsChart.setData(data);
}
window.addEventListener("resize", () => {
  buddyChart?.setSize({ width: chartWidth("buddy-chart"), height: 190 });
  opsChart?.setSize({ width: chartWidth("ops-chart"), height: 190 });
  if (state.last !== null) drawMap(state.last);
});

// ------------------------------------------------------------------ slabtop
const sort = { key: "pages", asc: false };
/** Rows slabtop shows: the first by the sort key (a heap may have thousands of caches). */
const SLABTOP_ROWS = 200;
const collator = new Intl.Collator();
for (const th of document.querySelectorAll("#slabtop th")) {
  th.addEventListener("click", () => {
    const key = th.dataset.key;
    if (sort.key === key) sort.asc = !sort.asc;
    else {
      sort.key = key;
      sort.asc = key === "name";
    }
    if (state.last !== null) drawSlabtop(state.last);
  });
}
function drawSlabtop(snap) {
  const rows = snap.stats.slabs.map((s) => ({ ...s, use: s.totalObjects > 0 ? s.activeObjects / s.totalObjects : -1 }));
  const k = sort.key;
  rows.sort((a, b) => {
    const c = k === "name" ? collator.compare(a.name, b.name) : a[k] - b[k] || b.pages - a.pages || collator.compare(a.name, b.name);
    return sort.asc ? c : -c;
  });
  for (const th of document.querySelectorAll("#slabtop th")) {
    th.classList.toggle("sorted", th.dataset.key === k);
    th.classList.toggle("asc", th.dataset.key === k && sort.asc);
  }
  const body = document.querySelector("#slabtop tbody");
  const ids = new Map(snap.caches.map((n, i) => [n, i]));
  body.textContent = "";
  $("slabtop-more").textContent =
    rows.length > SLABTOP_ROWS ? `showing the first ${SLABTOP_ROWS} of ${rows.length} caches by ${document.querySelector(`#slabtop th[data-key="${k}"]`)?.textContent ?? k}` : "";
  for (const r of rows.slice(0, SLABTOP_ROWS)) {
    const tr = el("tr", { "data-cache": r.name });
    if (r.slabs === 0 && r.activeObjects === 0 && r.sheafObjects === 0 && r.barnObjects === 0) tr.className = "idle";
    const name = el("td", { class: "text" });
    const sw = el("i");
    sw.style.background = cacheColour(ids.get(r.name) ?? 0);
    name.append(sw, r.name);
    tr.append(name);
    const cells = [r.objectSize, r.activeObjects, r.totalObjects, r.use < 0 ? "–" : `${Math.round(100 * r.use)}%`, r.slabs, r.pages, r.sheafObjects, r.barnObjects];
    const keys = ["objectSize", "activeObjects", "totalObjects", "use", "slabs", "pages", "sheafObjects", "barnObjects"];
    cells.forEach((v, i) => tr.append(el("td", { "data-key": keys[i] }, String(v))));
    body.append(tr);
  }
}

// ------------------------------------------------------------------ counters and sizes
function drawCounters(snap) {
  const st = snap.stats;
  const prev = prevSnap?.stats;
  const dt = prevSnap === null ? 0 : (snap.time - prevSnap.time) / 1000;
  const gpRate = prev && dt > 0 ? (st.rcu.gracePeriods - prev.rcu.gracePeriods) / dt : 0;
  const pcpTotal = st.pcp.reduce((a, b) => a + b, 0);
  const busy = st.pcp.map((n, c) => [c, n]).filter(([, n]) => n > 0);
  const rows = [
    ["pcp pages", pcpTotal, `pcp-total`],
    ["pcp by slot", busy.length === 0 ? "–" : busy.slice(0, 8).map(([c, n]) => `${c}:${n}`).join(" ") + (busy.length > 8 ? " …" : ""), "pcp-slots"],
    ["pcp batch / high", `${st.pcpBatch} / ${st.pcpHigh}`, "pcp-limits"],
    ["deferred objects", st.deferredObjects, "deferred-objects"],
    ["deferred pages", st.deferredPages, "deferred-pages"],
    ["grace periods", `${count(st.rcu.gracePeriods)}  (${count(gpRate)}/s)`, "grace-periods"],
    ["RCU waiting objects", st.rcu.waitingObjects, "rcu-waiting"],
    ["RCU blocks / readers", `${st.rcu.blocks} / ${st.rcu.readers}`, "rcu-blocks"],
    ["allocation failures", st.vmstat.allocFail, "alloc-fail", st.vmstat.allocFail > 0],
    ["nolock failures", st.vmstat.nolockFail, "nolock-fail"],
    ["hook errors", st.vmstat.hookErrors, "hook-errors", st.vmstat.hookErrors > 0],
  ];
  for (const [k, v] of Object.entries(snap.extra?.counters ?? {})) rows.push([k, v, `extra-${k}`]);
  const dl = $("counters");
  dl.textContent = "";
  for (const [label, value, id, warn] of rows) {
    dl.append(el("dt", {}, label), el("dd", { id: `c-${id.replace(/[^a-z0-9-]/gi, "_")}`, class: warn ? "warn" : "" }, typeof value === "number" ? count(value) : String(value)));
  }
}
function drawSizes(snap) {
  const sizes = snap.extra?.sizes;
  const box = $("sizes");
  box.textContent = "";
  if (!sizes || sizes.length === 0) {
    box.append(el("span", { class: "note" }, "No histogram: pass extra: () => ({ sizes: [{ label, count }] }) to serveInspector."));
    return;
  }
  const max = Math.max(1, ...sizes.map((s) => s.count));
  for (const s of sizes) {
    const bar = el("div", { class: "bar" });
    bar.style.width = `${(100 * s.count) / max}%`;
    const wrap = el("div");
    wrap.append(bar);
    box.append(el("span", { class: "label" }, s.label), wrap, el("span", { class: "count" }, count(s.count)));
  }
}
function drawSummary(snap) {
  const st = snap.stats;
  const s = $("summary");
  s.textContent = "";
  const part = (label, value, id) => {
    const b = el("b", { id }, value);
    s.append(`${label} `, b, "   ");
  };
  part("heap", bytes(snap.heap.size) + (snap.heap.maxSize > snap.heap.size ? ` (grows to ${bytes(snap.heap.maxSize)})` : ""), "s-size");
  part("free pages", String(st.freePages), "s-free");
  part("of", String(st.totalPages), "s-total");
  part("attached slots", `${st.attached}/${st.cpus}`, "s-attached");
  part("snapshot", `#${snap.seq}`, "s-seq");
  if (snap.extraError) s.append(el("span", { class: "warn", id: "s-extra-error" }, `the program's figures failed: ${snap.extraError}`));
}

// ------------------------------------------------------------------ the stream
/**
 * The page draws only what it can: a field of extra that is not of the documented shape (the
 * server leaves such a field out already) is dropped here too, so a bad value never stops a draw.
 */
function cleanExtra(snap) {
  const x = snap.extra;
  if (x === null || typeof x !== "object" || Array.isArray(x)) {
    snap.extra = null;
    return;
  }
  const num = (v) => typeof v === "number" && Number.isFinite(v);
  const list = (v, key, n) => Array.isArray(v) && v.every((e) => e !== null && typeof e === "object" && typeof e[key] === "string" && num(e[n]));
  if (x.agents !== undefined && !list(x.agents, "name", "ops")) delete x.agents;
  if (x.sizes !== undefined && !list(x.sizes, "label", "count")) delete x.sizes;
  const c = x.counters;
  if (c !== undefined && (c === null || typeof c !== "object" || Array.isArray(c) || !Object.values(c).every(num))) delete x.counters;
}

function update(snap) {
  cleanExtra(snap);
  const t = (performance.now() - t0) / 1000;
  $("title").textContent = snap.title;
  drawSummary(snap);
  drawMap(snap);
  drawBuddy(snap, t);
  drawOps(snap, t);
  drawSlabtop(snap);
  drawCounters(snap);
  drawSizes(snap);
  prevSnap = snap;
  state.last = snap;
  state.received++;
}

const source = new EventSource("/events");
source.onopen = () => setStatus("live", "live");
source.onmessage = (e) => {
  try {
    update(JSON.parse(e.data));
    if (state.status !== "live") setStatus("live", "live");
  } catch (err) {
    setStatus("failure", `cannot draw a snapshot: ${err.message}`);
    console.error(err);
  }
};
source.addEventListener("failure", (e) => setStatus("failure", `the heap could not be read: ${JSON.parse(e.data).message}`));
source.addEventListener("end", (e) => {
  source.close();
  setStatus("stopped", `stopped: ${JSON.parse(e.data).reason}`);
});
source.onerror = () => {
  if (source.readyState === EventSource.CLOSED) {
    if (state.status !== "stopped") setStatus("stopped", "the server is gone");
  } else if (state.status !== "stopped") setStatus("retrying", "disconnected, retrying…");
};
