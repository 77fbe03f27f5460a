/*
 * Argument checks of the public calls. Every check runs before the call changes anything, never
 * runs the caller's code more than once (an options object is read once, into a snapshot), and
 * turns whatever it meets (a string, a BigInt, a Symbol, null, NaN, a Proxy, a getter that throws)
 * into a HeapError EINVAL whose message names the argument, says what was given and states the
 * rule. Nothing here is on a fast path: the fast paths test `typeof x === "number"` and fall
 * through to the slow path, which calls these.
 *
 * WORDS: none; the checks look at the caller's values only, never at the heap.
 * LOCKS: none; a caller may hold any lock (the checks run before the slow paths take theirs).
 * NO LOCK: everything here (pure functions of their arguments).
 * STALE: nothing: no shared word is read.
 */
import { ErrorCode, HeapError } from "./errors.js";

/** What a value is, for a message: `a string ("64")`, `a bigint (1n)`, `null`, `NaN`, `an array`. Runs no code of the value's. */
export function describe(v: unknown): string {
  switch (typeof v) {
    case "number":
      return String(v);
    case "string":
      return `a string (${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)})`;
    case "bigint":
      return `a bigint (${String(v)}n)`;
    case "symbol":
      return `a symbol (${String(v)})`;
    case "boolean":
      return `a boolean (${String(v)})`;
    case "undefined":
      return "undefined";
    case "function":
      return "a function";
    default: {
      if (v === null) return "null";
      let tag = "Object";
      try {
        tag = Object.prototype.toString.call(v).slice(8, -1);
      } catch {
        // A revoked Proxy, or a Symbol.toStringTag getter that throws.
      }
      return tag === "Array" ? "an array" : tag === "Object" ? "an object" : `an object (${tag})`;
    }
  }
}

/** The message of something thrown by the caller's code (a getter, a Proxy trap), without running more of it. */
export function thrownMessage(e: unknown): string {
  if (e instanceof Error) {
    try {
      return `${e.name}: ${String(e.message)}`;
    } catch {
      return "an error";
    }
  }
  return describe(e);
}

export function einval(message: string): never {
  throw new HeapError(ErrorCode.EINVAL, message);
}

/**
 * A whole number in min..max, or EINVAL naming `name`: not a number, NaN, a fraction, below min,
 * above max (`tooLarge` then says why max is the limit). `unit` follows "a whole number" (" of bytes").
 */
export function checkInt(name: string, v: unknown, min: number, max: number, unit = "", tooLarge = ""): number {
  if (typeof v !== "number") einval(`${name} must be a number${unit}, not ${describe(v)}`);
  if (!Number.isInteger(v)) einval(`${name} must be a whole number${unit}, not ${String(v)}`);
  if (v < min) einval(`${name} must be at least ${min}, not ${v}`);
  if (v > max) einval(tooLarge !== "" ? `${name} ${v} is too large: ${tooLarge}` : `${name} must be at most ${max}, not ${v}`);
  return v;
}

/** A boolean or undefined. */
/** An optional whole-number option: `dflt` when absent, else checkInt's rules under the name "option NAME". */
export function intOption(name: string, v: unknown, dflt: number, min: number, max: number, tooLarge = ""): number {
  if (v === undefined) return dflt;
  return checkInt(`option ${name}`, v, min, max, "", tooLarge);
}

export function checkBool(name: string, v: unknown): boolean | undefined {
  if (v !== undefined && typeof v !== "boolean") einval(`${name} must be true or false, not ${describe(v)}`);
  return v;
}

/**
 * Read an options object once: undefined gives {}; anything but a plain object (prototype
 * Object.prototype or null: not null, a number, a function, an array, a Date, a Map, a boxed
 * Number) is EINVAL; an own key that is not in `known` (enumerable or not) is EINVAL naming it and
 * the closest known key; only own properties are read (an inherited key, even a known one, is
 * neither an error nor an option); a getter or Proxy trap that throws is EINVAL saying so. The
 * result is a snapshot: later reads cannot see other values.
 */
export function readOptions(what: string, v: unknown, known: readonly string[]): Record<string, unknown> {
  // No prototype: an option not given reads undefined, whatever Object.prototype holds.
  const out = Object.create(null) as Record<string, unknown>;
  if (v === undefined) return out;
  const notOptions = (): never => einval(`${what} must be an object of options (${known.join(", ")}), not ${describe(v)}`);
  if (v === null || typeof v !== "object" || isArraySafe(v)) notOptions();
  const o = v as Record<string, unknown>;
  let proto: unknown;
  try {
    proto = Object.getPrototypeOf(o);
  } catch (e) {
    einval(`${what} could not be read: its getPrototypeOf trap threw ${thrownMessage(e)}`);
  }
  if (proto !== Object.prototype && proto !== null) {
    if (describe(v) === "an object") {
      einval(`${what} must be a plain object of options (${known.join(", ")}), not an object with a prototype of its own (a class instance or Object.create(...))`);
    }
    notOptions();
  }
  let keys: (string | symbol)[];
  try {
    keys = Reflect.ownKeys(o);
  } catch (e) {
    einval(`${what} could not be read: listing its keys threw ${thrownMessage(e)}`);
  }
  for (const k of keys) {
    if (typeof k !== "string") einval(`unknown option ${String(k)} in ${what}: options are named by strings (known: ${known.join(", ")})`);
    if (!known.includes(k)) {
      const near = closest(k, known);
      einval(`unknown option "${k}" in ${what}${near !== null ? `; did you mean "${near}"?` : ""} (known: ${known.join(", ")})`);
    }
  }
  for (const k of known) {
    if (!keys.includes(k)) continue;
    try {
      out[k] = o[k];
    } catch (e) {
      einval(`${what}.${k} could not be read: its getter threw ${thrownMessage(e)}`);
    }
  }
  return out;
}

const typedArrayTag = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype) as object, Symbol.toStringTag)!.get!;

/** Whether `v` is a real Uint16Array (not a Proxy of one, not a look-alike), running none of its code. */
export function isUint16Array(v: unknown): v is Uint16Array {
  return typedArrayTag.call(v) === "Uint16Array";
}

/** Array.isArray, false for a revoked Proxy instead of a TypeError. */
function isArraySafe(v: unknown): boolean {
  try {
    return Array.isArray(v);
  } catch {
    return false;
  }
}

/** The known name closest to `k` (case aside, or at most 2 edits away), or null. */
export function closest(k: string, known: readonly string[]): string | null {
  let best: string | null = null;
  let bestD = 3;
  for (const name of known) {
    const d = name.toLowerCase() === k.toLowerCase() ? 0 : editDistance(k, name);
    if (d < bestD) {
      bestD = d;
      best = name;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return 3;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

/**
 * Copy a caller's list of addresses (an array, a typed array, any array-like) into a plain array of
 * numbers, read once: bulk calls check the copy and free from it, so a getter cannot hand them one
 * value to check and another to free.
 */
export function readAddrs(name: string, v: unknown): number[] {
  if (v === null || typeof v !== "object") einval(`${name} must be an array of addresses, not ${describe(v)}`);
  const o = v as ArrayLike<unknown>;
  let n: unknown;
  try {
    n = o.length;
  } catch (e) {
    einval(`${name}.length could not be read: ${thrownMessage(e)}`);
  }
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0 || n > 0x7fffffff) {
    einval(`${name} must be an array of addresses; its length is ${describe(n)}`);
  }
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    let a: unknown;
    try {
      a = o[i];
    } catch (e) {
      einval(`${name}[${i}] could not be read: ${thrownMessage(e)}`);
    }
    if (typeof a !== "number") einval(`${name}[${i}] must be an address (a number), not ${describe(a)}`);
    out.push(a);
  }
  return out;
}

/** An output array for bulk allocation: a plain array or a Uint32Array with room for `count`. */
/** ArrayBuffer.isView, captured at load. */
const isView = ArrayBuffer.isView;

export function checkOut(name: string, out: unknown, count: number): void {
  let typed = false;
  try {
    typed = out instanceof Uint32Array;
  } catch (e) {
    einval(`${name} could not be inspected: ${thrownMessage(e)}`);
  }
  if (typed) {
    // A Proxy of one, or an object that only inherits from Uint32Array.prototype, is no typed array.
    if (!isView(out)) einval(`${name} must be an array or a Uint32Array, not ${describe(out)} (a Proxy of a Uint32Array, or an object inheriting from one, is neither)`);
    const len = (out as Uint32Array).length;
    if (len < count) einval(`${name} holds ${len} entries, fewer than the count ${count}`);
    return;
  }
  if (!isArraySafe(out)) einval(`${name} must be an array or a Uint32Array, not ${describe(out)}`);
  if (count === 0) return;
  let why = "";
  try {
    const arr = out as unknown[];
    if (Object.isFrozen(arr)) why = "is frozen";
    else if (!Object.isExtensible(arr) && arr.length < count) why = `cannot grow (sealed or not extensible) and holds ${arr.length} entries, fewer than the count ${count}`;
  } catch (e) {
    why = `could not be inspected: ${thrownMessage(e)}`;
  }
  if (why !== "") einval(`${name} ${why}: the allocated addresses could not be stored, so nothing was allocated`);
}

/**
 * Store `addrs` into the caller's output array. Null when done; the thrown message (having stored
 * what it could) when the array refuses a write (a Proxy trap, a setter, a read-only element): the
 * caller then frees every block it allocated.
 */
export function storeOut(out: number[] | Uint32Array, addrs: ArrayLike<number>, n: number): string | null {
  try {
    for (let i = 0; i < n; i++) out[i] = addrs[i]!;
    return null;
  } catch (e) {
    return thrownMessage(e);
  }
}
