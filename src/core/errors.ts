/**
 * Error codes of HeapError (api.md). Frozen: the library reads it at run time.
 *
 * WORDS: none. LOCKS: none. NO LOCK: everything (constants and the error class).
 * STALE: nothing: no shared word is read.
 */
export const ErrorCode = Object.freeze({
  EINVAL: "EINVAL", // a bad argument: size, order, an address that is not a live allocation
  EDOUBLEFREE: "EDOUBLEFREE", // the block or object is already free
  ECORRUPT: "ECORRUPT", // a check found broken metadata
  EDEADLK: "EDEADLK", // the call would wait on a lock this agent already holds
  EBADHEAP: "EBADHEAP", // the buffer is not a shmalloc heap of this layout version
  ENOCPU: "ENOCPU", // no free CPU slot
  EDETACHED: "EDETACHED", // the handle was detached
  EOWNERDEAD: "EOWNERDEAD", // a lock was held by an agent that died
  EBUSY: "EBUSY", // the object is in use (a cache with live objects)
  EAGAIN: "EAGAIN", // an agent that must not block met a lock or grace period held past its bound; try again
  ENOSHARED: "ENOSHARED", // no SharedArrayBuffer here (a page that is not cross-origin isolated)
} as const);
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** The one error type shmalloc throws. A call that throws leaves the heap exactly as it was. */
export class HeapError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.name = "HeapError";
    this.code = code;
  }
}

export function hex(addr: number): string {
  return "0x" + (addr >>> 0).toString(16);
}
