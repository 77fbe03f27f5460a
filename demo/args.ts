/*
 * The command lines of the demo (demo/cli.ts), the stress command (tools/stress/stress.ts) and the
 * benchmarks (bench/suite.ts): one parser, node:util's parseArgs, over each program's table of
 * options, and one reader for each kind of value. A bad command line is a UsageError, which each
 * program prints with usageMessage (`<command>: <message>`, then one line pointing at --help) and
 * turns into exit status 2.
 *
 * A program adds an option by adding a line to its table: `name: { type: "string" }` for one that
 * takes a value, `{ type: "boolean" }` for a switch, `short: "h"` for a one-letter alias.
 *
 * Standalone on purpose (no imports from src/ or demo/): the benchmark launcher copies it next to
 * the compiled suite.
 */
import { parseArgs } from "node:util";

export class UsageError extends Error {}

export interface OptionSpec {
  type: "string" | "boolean";
  short?: string;
}
export type OptionTable = Record<string, OptionSpec>;
/** What the command line gave for each option: the text, true for a switch, undefined when absent. */
export type OptionValues<T extends OptionTable> = { [K in keyof T]: (T[K]["type"] extends "boolean" ? boolean : string) | undefined };

/**
 * Parse `argv` against `table`; a UsageError for an unknown option (naming the closest), a missing
 * value, a stray argument, an option given twice (`--size 4m --size 8m`: which one was meant?).
 */
export function parseCommandLine<T extends OptionTable>(argv: readonly string[], table: T): OptionValues<T> {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: [...argv], options: table, strict: true, allowPositionals: false, tokens: true });
  } catch (e) {
    const err = e as Error & { code?: string };
    if (typeof err.code !== "string" || !err.code.startsWith("ERR_PARSE_ARGS")) throw e;
    const first = err.message.split("\n")[0]!;
    const unknown = /^Unknown option '(-{1,2}[^']*)'/.exec(first);
    if (unknown !== null) {
      const near = closestFlag(unknown[1]!, Object.keys(table));
      throw new UsageError(`unknown option "${unknown[1]}"${near !== null ? `; did you mean "--${near}"?` : ""}`);
    }
    if (/argument is ambiguous/.test(first)) {
      const flag = /'(--?[^']+)'/.exec(first)?.[1] ?? "the option";
      throw new UsageError(`${flag} needs a value (a value that starts with "-" is written ${flag}=-VALUE)`);
    }
    const flag = /^Option '(?:-\w, )?(-{1,2}[^ ']+)/.exec(first)?.[1];
    if (flag !== undefined && /argument missing$/.test(first)) throw new UsageError(`${flag} needs a value`);
    if (flag !== undefined && /does not take an argument$/.test(first)) throw new UsageError(`${flag} takes no value`);
    const stray = /^Unexpected argument '([^']*)'/.exec(first);
    if (stray !== null) throw new UsageError(`unexpected argument "${stray[1]}": every argument is an --option`);
    throw new UsageError(first);
  }
  const seen = new Map<string, string>();
  for (const t of parsed.tokens ?? []) {
    if (t.kind !== "option") continue;
    const before = seen.get(t.name);
    if (before !== undefined) throw new UsageError(`--${t.name} is given twice (${before}, then ${t.rawName}${t.value !== undefined ? ` ${t.value}` : ""}): give it once`);
    seen.set(t.name, `${t.rawName}${t.value !== undefined ? ` ${t.value}` : ""}`);
  }
  return parsed.values as unknown as OptionValues<T>;
}

/**
 * Exactly one line of hint after a bad command line, the same for every command:
 * `<command>: <message>` then `Run "<how> --help" for the options.`
 */
export function usageMessage(command: string, how: string, e: UsageError): string {
  return `${command}: ${e.message}\nRun "${how} --help" for the options.\n`;
}

function closestFlag(given: string, names: string[]): string | null {
  const g = given.replace(/^-+/, "").toLowerCase();
  let best: string | null = null;
  let bestD = 3;
  for (const n of names) {
    const d = distance(g, n.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = n;
    }
  }
  return best;
}

function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** Largest heap shmalloc makes (MAX_HEAP_SIZE): every address a positive 32-bit integer. */
export const MAX_HEAP_BYTES = 2 ** 31 - 4096;

/**
 * A size in bytes: a whole number, or a number with a binary unit, k, m or g (KiB, MiB, GiB),
 * optionally followed by "ib" ("4096", "512k", "64m", "64M", "64MiB", "1.5m", "1g"); at most
 * MAX_HEAP_BYTES. Refused: a fraction of a byte ("1.5", "0.3k"), and the SI spellings "kB", "MB",
 * "GB", which mean powers of 1000 elsewhere (the hint says to write 4m or 4MiB).
 */
export function parseSize(text: string, flag = "--size"): number {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:([kmg])(i?b)?|(b))?\s*$/i.exec(text);
  if (m === null) throw new UsageError(`${flag}: cannot read "${text}" as a size (try 64m, 256MiB, 4M or a number of bytes)`);
  const unit = (m[2] ?? "").toLowerCase();
  if (m[3] !== undefined && m[3].toLowerCase() === "b") {
    const n = m[1]!;
    throw new UsageError(`${flag}: "${text.trim()}" is ambiguous: sizes here are binary, so write ${n}${unit} or ${n}${unit.toUpperCase()}iB (${n} × ${unit === "k" ? "1024" : unit === "m" ? "1024²" : "1024³"} bytes), not ${unit.toUpperCase()}B`);
  }
  const exact = Number(m[1]) * (unit === "k" ? 1024 : unit === "m" ? 1024 ** 2 : unit === "g" ? 1024 ** 3 : 1);
  if (!Number.isInteger(exact)) throw new UsageError(`${flag}: "${text.trim()}" is not a whole number of bytes (${exact})`);
  const bytes = exact;
  if (bytes <= 0) throw new UsageError(`${flag}: "${text}" is not a positive size`);
  if (bytes > MAX_HEAP_BYTES) throw new UsageError(`${flag}: ${text} is larger than the largest heap, ${MAX_HEAP_BYTES} bytes (2 GiB - 4 KiB)`);
  return bytes;
}

/** A whole number in min..max. */
export function parseWhole(text: string, flag: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^\s*[0-9]+\s*$/.test(text) || n < min || n > max) throw new UsageError(`${flag}: "${text}" is not a whole number in ${min}..${max}`);
  return n;
}

/** A number of seconds above 0, at most `max`, fractions allowed. */
export function parseSeconds(text: string, flag: string, max: number): number {
  const n = Number(text);
  if (text.trim() === "" || !Number.isFinite(n) || n <= 0 || n > max) throw new UsageError(`${flag}: "${text}" is not a number of seconds in (0, ${max}]`);
  return n;
}

/** A number in min..max, fractions allowed. */
export function parseFraction(text: string, flag: string, min: number, max: number): number {
  const n = Number(text);
  if (text.trim() === "" || !Number.isFinite(n) || n < min || n > max) throw new UsageError(`${flag}: "${text}" is not a number in ${min}..${max}`);
  return n;
}

/** A value that must not be empty (a seed, a directory). */
export function nonEmpty(text: string, flag: string): string {
  if (text.trim() === "") throw new UsageError(`${flag} needs a value`);
  return text;
}
