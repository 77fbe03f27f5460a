/*
 * The small WebAssembly module of the Wasm tests, written as WAT and compiled with the wabt package.
 * It imports the heap's memory (shared) and works on pointers that shmalloc handed out:
 *   fill(p, n, v)   stores v in the n doubles at p
 *   sum(p, n)       returns the sum of the n doubles at p
 *   strlen(p)       the length of the NUL-terminated string at p (allocString's bytes at address + 4)
 *   poke(p, v)      stores the 32-bit v at p
 */
import { createRequire } from "node:module";

export const WAT = `
(module
  (import "env" "memory" (memory 1 65536 shared))
  (func (export "fill") (param $p i32) (param $n i32) (param $v f64)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (f64.store (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 3))) (local.get $v))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))
  (func (export "sum") (param $p i32) (param $n i32) (result f64)
    (local $i i32) (local $s f64)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $s (f64.add (local.get $s) (f64.load (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 3))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $s))
  (func (export "strlen") (param $p i32) (result i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $i))
  (func (export "poke") (param $p i32) (param $v i32)
    (i32.atomic.store (local.get $p) (local.get $v))))
`;

interface WabtModule {
  toBinary(o: object): { buffer: Uint8Array };
  destroy(): void;
}
interface Wabt {
  parseWat(name: string, src: string, features?: Record<string, boolean>): WabtModule;
}

/** The module's bytes (wabt, with the threads feature for shared memory and atomics). */
export async function wasmBytes(): Promise<Uint8Array> {
  const require = createRequire(import.meta.url);
  const init = require("wabt") as () => Promise<Wabt>;
  const wabt = await init();
  const m = wabt.parseWat("heap-test.wat", WAT, { threads: true });
  try {
    return new Uint8Array(m.toBinary({}).buffer);
  } finally {
    m.destroy();
  }
}

/** The part of the WebAssembly API the tests use (the project's TypeScript lib has none). */
export interface WasmApi {
  Memory: new (d: { initial: number; maximum: number; shared: boolean }) => { buffer: SharedArrayBuffer; grow(pages: number): number };
  instantiate(bytes: Uint8Array, imports: object): Promise<{ instance: { exports: Record<string, (...a: number[]) => number> } }>;
}

export const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
