/*
 * The optional Wasm peers of the benchmarks: mimalloc 2.4.1 and dlmalloc 2.8.6 compiled to
 * WebAssembly on one shared WebAssembly.Memory, one instance per agent, called from JavaScript
 * through their raw malloc and free exports. They live outside this repository, in a folder with
 * the loader wasm-peers.mjs (its README says how they are built); `npm run bench -- --peers DIR`
 * names that folder. Without the flag, or when DIR has no loader, the peers are skipped with a
 * note in the report.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

/** The loader's file name inside the peers folder. */
export const PEERS_LOADER = "wasm-peers.mjs";

/** A shared WebAssembly.Memory, as far as the benchmarks use it (this project's lib has no Wasm types). */
export interface WasmMemory {
  readonly buffer: SharedArrayBuffer;
}

/** One agent's instance of a peer (wasm-peers.mjs loadPeer). */
export interface Peer {
  readonly memory: WasmMemory;
  /** The raw Wasm exports: an address in memory.buffer (0 when out of memory), and free. */
  readonly malloc: (size: number) => number;
  readonly free: (addr: number) => void;
}

/** What wasm-peers.mjs exports. */
export interface PeersKit {
  readonly PEER_KINDS: readonly string[];
  createMemory(): WasmMemory;
  /** The compiled module (a WebAssembly.Module, posted to the workers). */
  peerModule(kind: string): unknown;
  loadPeer(kind: string, o: { memory?: WasmMemory; index?: number; module?: unknown }): Peer;
}

/** Where the peers are: the folder (absolute) when it holds the loader, else null and why not. */
export function findPeers(dir: string | undefined): { dir: string | null; note: string } {
  if (dir === undefined) {
    return { dir: null, note: `Wasm peers not run: give --peers DIR, the folder of ${PEERS_LOADER} (mimalloc and dlmalloc on shared memory)` };
  }
  const abs = resolve(dir);
  if (!existsSync(join(abs, PEERS_LOADER))) {
    return { dir: null, note: `Wasm peers not run: ${abs} has no ${PEERS_LOADER}` };
  }
  return { dir: abs, note: `Wasm peers from ${abs}: one instance per agent on one shared WebAssembly.Memory per run, malloc and free called from JavaScript` };
}

/** Import the loader of a folder that findPeers accepted. */
export async function loadPeersKit(dir: string): Promise<PeersKit> {
  return (await import(pathToFileURL(join(dir, PEERS_LOADER)).href)) as PeersKit;
}
