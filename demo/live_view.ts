/**
 * The demo's live view: a block of lines redrawn in place on a terminal (ANSI cursor movement),
 * or one plain line per second when stdout is not a TTY. Figures come from heap.stats(), which
 * takes no lock (so they may be a little racy while the workers run), and from the workers'
 * counters in the control block.
 */
import type { HeapStats, SlabStats } from "../src/index.js";
import { C, ROW, SIZE_LABELS } from "./ht_control.js";

/** 1234 -> "1234", 12345 -> "12.3k", 1234567 -> "1.23M". */
export function count(n: number): string {
  const a = Math.abs(n);
  if (a < 10000) return String(Math.round(n));
  if (a < 1e6) return (n / 1e3).toFixed(a < 1e5 ? 1 : 0) + "k";
  if (a < 1e9) return (n / 1e6).toFixed(a < 1e7 ? 2 : 1) + "M";
  return (n / 1e9).toFixed(2) + "G";
}

export function mib(bytes: number): string {
  if (bytes < 1 << 20) return `${Math.round(bytes / 1024)} KiB`;
  const m = bytes / (1 << 20);
  return (Number.isInteger(m) ? String(m) : m.toFixed(2)) + " MiB";
}

/** The caches holding the most pages, like slabtop sorted by cache size. */
export function busiestCaches(slabs: SlabStats[], n: number): SlabStats[] {
  return slabs
    .filter((s) => s.slabs > 0 || s.activeObjects > 0)
    .sort((a, b) => b.pages - a.pages || b.activeObjects - a.activeObjects)
    .slice(0, n);
}

/** Sum one counter over every worker row. */
export function total(f64: Float64Array, workers: number, field: number): number {
  let s = 0;
  for (let w = 0; w < workers; w++) s += f64[w * ROW + field]!;
  return s;
}

export interface ViewInput {
  title: string;
  elapsed: number;
  seconds: number;
  stats: HeapStats | null;
  statsError: string | null;
  f64: Float64Array;
  workers: number;
  /** Rates since the previous sample: ops/s per worker, grace periods/s. */
  opsRate: number[];
  gpRate: number;
  bugs: string[];
}

/** The lines of one frame of the terminal view. */
export function frameLines(v: ViewInput): string[] {
  const { f64, workers } = v;
  const lines: string[] = [];
  lines.push(`${v.title}   ${v.elapsed.toFixed(1)} ${Number.isFinite(v.seconds) ? `/ ${v.seconds} s` : "s (Ctrl-C stops)"}`);
  const rates = v.opsRate.map((r, w) => `w${w} ${count(r).padStart(6)}`);
  const totalRate = v.opsRate.reduce((a, b) => a + b, 0);
  for (let i = 0; i < rates.length; i += 6) {
    const label = i === 0 ? "ops/s" : "";
    const tail = i === 0 ? `   total ${count(totalRate)}` : "";
    lines.push(`${label.padEnd(10)}${rates.slice(i, i + 6).join("  ")}${tail}`);
  }
  const lookups = total(f64, workers, C.lookups);
  const hits = total(f64, workers, C.hits);
  lines.push(
    `table     ${count(total(f64, workers, C.entries))} entries   lookup hits ${lookups > 0 ? Math.round((100 * hits) / lookups) : 0}%` +
      `   handed over ${count(total(f64, workers, C.migOut))}   freed by a non-allocator ${count(total(f64, workers, C.foreignFrees))}` +
      `   alloc failures ${count(total(f64, workers, C.allocFail))} (evicted ${count(total(f64, workers, C.evicted))})   lock contended ${count(total(f64, workers, C.contended))}`,
  );
  const st = v.stats;
  if (st === null) {
    lines.push(`stats     unavailable: ${v.statsError ?? "?"}`);
  } else {
    const pcp = st.pcp.reduce((a, b) => a + b, 0);
    lines.push(`buddy     ${st.buddy.map((n, o) => `${o}:${n}`).join(" ")}   free ${st.freePages}/${st.totalPages} pages`);
    lines.push(`pcp       ${pcp} pages   [${st.pcp.map((n, c) => `cpu${c} ${n}`).join("  ")}]`);
    lines.push(`slabtop   ${"cache".padEnd(16)} ${"active/total objs".padStart(19)} ${"use".padStart(5)} ${"obj".padStart(6)} ${"slabs".padStart(6)} ${"pages".padStart(6)}`);
    for (const s of busiestCaches(st.slabs, 6)) {
      const use = s.totalObjects > 0 ? `${Math.round((100 * s.activeObjects) / s.totalObjects)}%` : "-";
      lines.push(
        `          ${s.name.padEnd(16)} ${`${s.activeObjects}/${s.totalObjects}`.padStart(19)} ${use.padStart(5)} ${String(s.objectSize).padStart(6)} ${String(s.slabs).padStart(6)} ${String(s.pages).padStart(6)}`,
      );
    }
    lines.push(`deferred  ${st.deferredPages} pages   ${st.deferredObjects} objects`);
    lines.push(
      `rcu       ${st.rcu.gracePeriods} grace periods (${count(v.gpRate)}/s)   ${st.rcu.waitingObjects} objects waiting in ${st.rcu.blocks} blocks` +
        `   emergency ${st.rcu.emergency}   readers now ${st.rcu.readers}`,
    );
  }
  const sizes = SIZE_LABELS.map((l, i) => `${l}:${count(total(f64, workers, C.sizes + i))}`);
  lines.push(`kmalloc   ${sizes.join(" ")}`);
  lines.push(`trace log ${count(total(f64, workers, C.samples))} samples via kmallocNolock, ${count(total(f64, workers, C.nolockFail))} nolock failures (not errors)`);
  const nb = total(f64, workers, C.bugs);
  lines.push(nb === 0 ? "checks    no signature mismatch" : `checks    ${nb} MISMATCHES: ${v.bugs[0] ?? ""}`);
  return lines;
}

/** One plain line for a log (stdout not a TTY). */
export function plainLine(v: ViewInput): string {
  const { f64, workers } = v;
  const totalRate = v.opsRate.reduce((a, b) => a + b, 0);
  const parts = [
    `[${v.elapsed.toFixed(1).padStart(5)}s] ops/s ${count(totalRate)} (${v.opsRate.map((r) => count(r)).join(" ")})`,
    `entries ${count(total(f64, workers, C.entries))}`,
  ];
  const st = v.stats;
  if (st === null) parts.push(`stats unavailable: ${v.statsError ?? "?"}`);
  else {
    const top = busiestCaches(st.slabs, 1)[0];
    parts.push(
      `free ${st.freePages}/${st.totalPages} buddy ${st.buddy.join(",")}`,
      `pcp ${st.pcp.reduce((a, b) => a + b, 0)}`,
      top === undefined ? "top cache -" : `top ${top.name} ${top.activeObjects}/${top.totalObjects} objs ${top.slabs} slabs ${top.pages} pages`,
      `deferred ${st.deferredPages}p/${st.deferredObjects}o`,
      `rcu gp ${st.rcu.gracePeriods} waiting ${st.rcu.waitingObjects}`,
    );
  }
  parts.push(`alloc fails ${count(total(f64, workers, C.allocFail))}`, `nolock fails ${count(total(f64, workers, C.nolockFail))}`);
  const nb = total(f64, workers, C.bugs);
  if (nb > 0) parts.push(`MISMATCHES ${nb}`);
  return parts.join(" | ");
}

/** Redraws a block of lines in place on a terminal. */
export class TtyFrame {
  private shown = 0;
  constructor(private readonly out: NodeJS.WriteStream) {}

  draw(lines: string[]): void {
    const width = Math.max(20, (this.out.columns ?? 120) - 1);
    let s = this.shown > 0 ? `\x1b[${this.shown}F` : "\x1b[?25l";
    for (const line of lines) s += `\x1b[2K${line.length > width ? line.slice(0, width - 1) + "…" : line}\n`;
    s += "\x1b[J";
    this.out.write(s);
    this.shown = lines.length;
  }

  /** Leave the last frame on screen and show the cursor again. */
  end(): void {
    if (this.shown > 0) this.out.write("\x1b[?25h");
    this.shown = 0;
  }
}
