// A worker of agents.html. Roles:
//   "hammer": allocates and frees (kmalloc of many sizes, pages), frees what other agents put in
//             the shared mailbox and puts some of its own there (cross-agent frees).
//   "holder": the same, and every few ms stops for 5 ms inside the allocator while it holds the
//             zone lock or a cache's list lock (a reentry hook that waits), to stall the others.
//   "die":    attaches, and from a reentry hook at zone:acquire says so and spins until terminated.
import { Heap } from "/dist/src/index.js";

const box = (mail, addr) => {
  const i = (Math.random() * mail.length) | 0;
  return Atomics.compareExchange(mail, i, 0, addr) === 0;
};
const unbox = (mail) => Atomics.exchange(mail, (Math.random() * mail.length) | 0, 0);

onmessage = (ev) => {
  const { buffer, mail: mailSab, ctrl: ctrlSab, role } = ev.data;
  const heap = Heap.attach(buffer);
  const mail = new Int32Array(mailSab);
  const ctrl = new Int32Array(ctrlSab);
  if (role === "die") {
    heap.setReentryHook((p) => {
      if (p !== "zone:acquire") return;
      postMessage({ holding: p, cpu: heap.cpu });
      for (;;) {} // until terminated, holding the zone lock
    });
    heap.allocPages(5);
    return;
  }
  const cell = new Int32Array(new SharedArrayBuffer(4));
  let stalls = 0;
  let nextStall = performance.now() + 5;
  let point = "zone:acquire";
  if (role === "holder") {
    heap.setReentryHook((p) => {
      if (p !== point || performance.now() < nextStall) return;
      Atomics.wait(cell, 0, 0, 5); // 5 ms inside the allocator, the lock held
      stalls++;
      point = point === "zone:acquire" ? "list:acquire" : "zone:acquire";
      nextStall = performance.now() + 5;
    });
  }
  const live = [];
  const pages = [];
  let ops = 0;
  let crossFrees = 0;
  while (Atomics.load(ctrl, 0) === 0) {
    for (let k = 0; k < 64; k++) {
      const r = Math.random();
      if (r < 0.45) {
        const a = heap.kmalloc(8 + ((Math.random() * 2040) | 0));
        if (a !== 0) live.push(a);
      } else if (r < 0.5) {
        const o = (Math.random() * 5) | 0;
        const p = heap.allocPages(o);
        if (p !== 0) pages.push(p, o);
      } else if (r < 0.55 && pages.length > 0) {
        const o = pages.pop();
        heap.freePages(pages.pop(), o);
      } else if (r < 0.7) {
        const a = unbox(mail);
        if (a !== 0) {
          heap.kfree(a);
          crossFrees++;
        }
      } else if (r < 0.8 && live.length > 0) {
        if (!box(mail, live[live.length - 1])) heap.kfree(live[live.length - 1]);
        live.pop();
      } else if (live.length > 0) {
        heap.kfree(live.pop());
      }
      while (live.length > 400) heap.kfree(live.shift());
      while (pages.length > 40) {
        const p = pages.shift();
        heap.freePages(p, pages.shift());
      }
      ops++;
    }
  }
  heap.setReentryHook(null);
  for (const a of live) heap.kfree(a);
  for (let i = 0; i < pages.length; i += 2) heap.freePages(pages[i], pages[i + 1]);
  heap.detach();
  postMessage({ done: true, ops, stalls, crossFrees });
};
