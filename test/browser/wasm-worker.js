// The worker of wasm.html: the Wasm module instantiated on the heap's memory, as test/workers/wasm.ts.
import { Heap } from "/dist/src/index.js";

onmessage = async (ev) => {
  const { memory, bytes, addr, n, str, growPages } = ev.data;
  const { instance } = await WebAssembly.instantiate(bytes, { env: { memory } });
  const wasm = instance.exports;
  const heap = Heap.attach(memory);
  const sumBefore = wasm.sum(addr, n);
  wasm.fill(addr, n, 0.25);
  const strBytes = wasm.strlen(str + 4);
  const mine = heap.allocArray(Float64Array, 64);
  wasm.fill(mine.byteOffset, 64, 3);
  const sizeBefore = heap.size;
  const blocks = [];
  let past = 0;
  for (let i = 0; i < growPages && past === 0; i++) {
    const p = heap.allocPages(4);
    if (p === 0) break;
    blocks.push(p);
    if (p >= sizeBefore) past = p;
  }
  if (past !== 0) wasm.fill(past, 8, 7);
  for (const p of blocks) if (p !== past) heap.freePages(p, 4);
  const result = { cpu: heap.cpu, sumBefore, strBytes, mine: mine.byteOffset, past, sizeBefore, sizeAfter: heap.size, bufferBytes: memory.buffer.byteLength };
  heap.detach();
  postMessage(result);
};
