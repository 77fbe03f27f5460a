/*
 * The inspector's wire format of a page map (encodePageMap, decodePageMap): runs of codes, or
 * base64 of one byte or one 16-bit word per page, whichever is smaller. Node only, like the
 * inspector that re-exports it.
 *
 * WORDS: none of the heap; it reads a pageMap() result, an array of this agent's own.
 * LOCKS: none. NO LOCK: everything.
 * STALE: nothing here; the map it encodes is as stale as pageMap() made it (see pagemap.ts).
 */
import { Buffer } from "node:buffer";
import { describe, isUint16Array } from "./core/check.js";
import { ErrorCode, HeapError } from "./core/errors.js";
import * as layout from "./core/layout.js";
import { MAX_HEAP_END } from "./placement.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { PAGE_SIZE } = layout;

/**
 * A page map on the wire. "rle": data is code, run, code, run, ... (few runs, the usual case);
 * "u8" / "u16": data is base64 of one byte (every code below 256) or one little-endian 16-bit
 * word per page (many short runs: a fragmented heap).
 */
export type EncodedPageMap = { encoding: "rle"; pages: number; data: number[] } | { encoding: "u8" | "u16"; pages: number; data: string };

/**
 * Encode a page map for the wire, in whichever form is smaller: run-length coded while there are
 * few runs (under one per RLE_MAX_PAGES_PER_RUN pages), else base64 of the codes, a byte each
 * when they all fit.
 */
export function encodePageMap(map: Uint16Array): EncodedPageMap {
  if (!isUint16Array(map)) throw new HeapError(ErrorCode.EINVAL, `encodePageMap: map must be a Uint16Array (from heap.pageMap()), not ${describe(map)}`);
  const n = map.length;
  let runs = n > 0 ? 1 : 0;
  let max = n > 0 ? map[0]! : 0;
  for (let i = 1; i < n; i++) {
    const c = map[i]!;
    if (c !== map[i - 1]) runs++;
    if (c > max) max = c;
  }
  if (runs * RLE_MAX_PAGES_PER_RUN > n) {
    if (max < 256) return { encoding: "u8", pages: n, data: Buffer.from(new Uint8Array(map).buffer).toString("base64") };
    // The codes' own bytes: little-endian on every machine Node runs on.
    return { encoding: "u16", pages: n, data: Buffer.from(map.buffer, map.byteOffset, map.byteLength).toString("base64") };
  }
  const data = new Array<number>(2 * runs);
  let k = 0;
  let i = 0;
  while (i < n) {
    const c = map[i]!;
    let j = i + 1;
    while (j < n && map[j] === c) j++;
    data[k++] = c;
    data[k++] = j - i;
    i = j;
  }
  return { encoding: "rle", pages: n, data };
}

/** Pages per run below which base64 of the codes is smaller than their runs in JSON. */
const RLE_MAX_PAGES_PER_RUN = 4;

/** The most pages a page map can have: a heap ends by MAX_HEAP_END. */
const MAX_MAP_PAGES = MAX_HEAP_END / PAGE_SIZE;

/**
 * The page map an EncodedPageMap holds (what heap.pageMap() returned). Anything encodePageMap
 * cannot have produced (not an object, an unknown encoding, pages not a whole number up to the
 * largest heap's, runs that do not add up to pages, codes not 16-bit, base64 of the wrong length)
 * is EINVAL.
 */
export function decodePageMap(m: EncodedPageMap): Uint16Array {
  const no = (why: string): never => {
    throw new HeapError(ErrorCode.EINVAL, `decodePageMap: ${why}`);
  };
  if (typeof m !== "object" || m === null) no(`m must be an EncodedPageMap (from encodePageMap or a snapshot's map), not ${describe(m)}`);
  const { encoding, pages, data } = m as { encoding: unknown; pages: unknown; data: unknown };
  if (encoding !== "rle" && encoding !== "u8" && encoding !== "u16") no(`encoding must be "rle", "u8" or "u16", not ${describe(encoding)}`);
  if (typeof pages !== "number" || !Number.isInteger(pages) || pages < 0 || pages > MAX_MAP_PAGES)
    no(`pages must be a whole number in 0..${MAX_MAP_PAGES} (a heap's pages), not ${describe(pages)}`);
  const n = pages as number;
  const out = new Uint16Array(n);
  if (encoding === "rle") {
    if (!Array.isArray(data) || data.length % 2 !== 0) no(`rle data must be an array of code, run pairs, not ${Array.isArray(data) ? `an array of ${data.length} numbers` : describe(data)}`);
    const d = data as unknown[];
    let p = 0;
    for (let i = 0; i < d.length; i += 2) {
      const c = d[i];
      const r = d[i + 1];
      if (typeof c !== "number" || !Number.isInteger(c) || c < 0 || c > 0xffff) no(`rle data[${i}] must be a page state code in 0..65535, not ${describe(c)}`);
      if (typeof r !== "number" || !Number.isInteger(r) || r < 1 || r > n - p) no(`rle data[${i + 1}] must be a run of 1..${n - p} pages (the pages left), not ${describe(r)}`);
      out.fill(c as number, p, p + (r as number));
      p += r as number;
    }
    if (p !== n) no(`rle data covers ${p} pages, not the ${n} that pages says`);
  } else {
    if (typeof data !== "string") no(`${encoding} data must be a base64 string, not ${describe(data)}`);
    const bytes = Buffer.from(data as string, "base64");
    const want = encoding === "u8" ? n : 2 * n;
    if (bytes.length !== want) no(`${encoding} data holds ${bytes.length} bytes, not the ${want} that ${n} pages take`);
    if (encoding === "u8") out.set(bytes);
    else out.set(new Uint16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + want)));
  }
  return out;
}
