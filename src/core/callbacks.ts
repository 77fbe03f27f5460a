/*
 * Calls refused while a callback of their own handle runs (the reentry hook, a trace handler,
 * onError): a call of that handle is then in progress under the callback, part-way through, with
 * blocks in its hands. detach would free the slot under it; nothing in the buffer: the three
 * flags are the handle's own (Locks.inHook, TraceState.running, Locks.inOnError), set only around
 * the callback invocations, never on a fast path.
 */
import { ErrorCode, HeapError } from "./errors.js";
import type { Locks } from "./lock.js";

/** Is a callback of this handle running now? */
export function inCallback(locks: Locks): boolean {
  return locks.inHook || locks.trace.running || locks.inOnError !== 0;
}

/** EDEADLK, nothing changed, when `what` is called from a callback of this handle. */
export function assertNoCallback(locks: Locks, what: string): void {
  if (!inCallback(locks)) return;
  throw new HeapError(
    ErrorCode.EDEADLK,
    `${what} from a reentry hook, trace handler or onError of this handle (cpu ${locks.cpu}): a call of the handle is in progress under it, and would go on with its slot freed`,
  );
}

/** A callback that does nothing: what a layer installs until the facade installs the real one. */
export function noop(): void {}
