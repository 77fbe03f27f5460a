/*
 * Output of the benchmark suite: the progress display on stderr, tables for the terminal and for
 * markdown, and number formatting.
 */
import type { Progress } from "./harness.js";

export interface Table {
  title: string;
  /** Printed under the table. */
  notes?: string[];
  columns: string[];
  rows: string[][];
}

export interface TargetResult {
  section: string;
  what: string;
  target: string;
  measured: string;
  /** null when the figure could not be measured (a failed or skipped run). */
  pass: boolean | null;
  /** Why a miss may not be the allocator's (e.g. the machine did not give two workers two cores). */
  note?: string;
}

/* ------------------------------------------------------------------ number formatting */

/** 12345678 -> "12.35 M". */
export function fmtRate(x: number): string {
  if (!Number.isFinite(x)) return "n/a";
  if (x >= 1e9) return `${(x / 1e9).toFixed(2)} G`;
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)} M`;
  if (x >= 1e3) return `${(x / 1e3).toFixed(1)} k`;
  return x.toFixed(1);
}

export function fmtNs(x: number): string {
  if (!Number.isFinite(x)) return "n/a";
  return x >= 100 ? x.toFixed(0) : x.toFixed(1);
}

export function fmtRatio(x: number): string {
  if (!Number.isFinite(x)) return "n/a";
  return x >= 100 ? `${x.toFixed(0)}x` : x >= 10 ? `${x.toFixed(1)}x` : `${x.toFixed(2)}x`;
}

export function fmtPct(x: number): string {
  if (!Number.isFinite(x)) return "n/a";
  return `${(x * 100).toFixed(2)}%`;
}

export function passMiss(ok: boolean | null): string {
  return ok === null ? "n/a" : ok ? "PASS" : "MISS";
}

/* ------------------------------------------------------------------ tables */

export function textTable(t: Table): string {
  const widths = t.columns.map((c, i) => Math.max(c.length, ...t.rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  const out = [t.title, line(t.columns), widths.map((w) => "-".repeat(w)).join("  "), ...t.rows.map(line)];
  for (const n of t.notes ?? []) out.push(`  ${n}`);
  return out.join("\n");
}

export function markdownTable(t: Table): string {
  const esc = (s: string): string => s.replace(/\|/g, "\\|");
  const out = [
    `#### ${t.title}`,
    "",
    `| ${t.columns.map(esc).join(" | ")} |`,
    `| ${t.columns.map((_, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`,
    ...t.rows.map((r) => `| ${r.map(esc).join(" | ")} |`),
  ];
  if (t.notes !== undefined && t.notes.length > 0) out.push("", ...t.notes.map((n) => `- ${n}`));
  return out.join("\n");
}

/* ------------------------------------------------------------------ progress */

/**
 * A progress bar on stderr when it is a terminal (redrawn in place), plain lines otherwise (one
 * per run started).
 */
export class ProgressDisplay implements Progress {
  private done = 0;
  private runs = 0;
  private label = "";
  private runUnits = 0;
  private runDone = 0;
  private readonly t0 = performance.now();
  private readonly tty: boolean;
  constructor(
    private readonly totalUnits: number,
    private readonly totalRuns: number,
  ) {
    this.tty = process.stderr.isTTY === true;
  }
  begin(label: string, units: number): void {
    this.label = label;
    this.runUnits = units;
    this.runDone = 0;
    this.runs++;
    if (this.tty) this.draw();
    else process.stderr.write(`[${String(this.runs).padStart(3)}/${this.totalRuns}] ${label} (${this.elapsed()})\n`);
  }
  tick(): void {
    if (this.runDone < this.runUnits) {
      this.runDone++;
      this.done++;
    }
    if (this.tty) this.draw();
  }
  end(): void {
    this.done += this.runUnits - this.runDone;
    this.runDone = this.runUnits;
    if (this.tty) this.draw();
  }
  finish(): void {
    if (this.tty) process.stderr.write("\r\x1b[K");
    process.stderr.write(`benchmarks finished in ${this.elapsed()}\n`);
  }
  private elapsed(): string {
    const s = Math.round((performance.now() - this.t0) / 1000);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }
  private draw(): void {
    const frac = Math.min(1, this.done / Math.max(1, this.totalUnits));
    const width = 30;
    const fill = Math.round(frac * width);
    const cols = process.stderr.columns ?? 100;
    let s = `[${"#".repeat(fill)}${".".repeat(width - fill)}] ${String(Math.round(frac * 100)).padStart(3)}% ${this.elapsed()}  ${this.runs}/${this.totalRuns} ${this.label}`;
    if (s.length > cols - 1) s = s.slice(0, cols - 1);
    process.stderr.write(`\r\x1b[K${s}`);
  }
}
