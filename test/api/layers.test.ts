/*
 * The restructure's promises, checked: the allocator is built from layers that extend no other
 * layer; a Heap and a KmemCache show only documented names (no layer, word index or internal
 * method is reachable from them); no published declaration has a protected member; no source
 * file of the allocator is over 600 lines.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { Locks } from "../../src/core/lock.js";
import { Mem, MemView } from "../../src/core/mem.js";
import { Heap, KmemCache } from "../../src/index.js";
import { layersOf } from "../../src/layers.js";
import { PageAllocator } from "../../src/page/page_alloc.js";
import { RcuAllocator } from "../../src/rcu/rcu.js";
import { SlabAllocator } from "../../src/slab/slab.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const readme = readFileSync(join(root, "README.md"), "utf8");
const code = [...readme.matchAll(/```[\s\S]*?```|`[^`\n]+`/g)].map((m) => m[0]).join("\n");
const documented = (name: string): boolean => new RegExp(`(^|[^\\w$])${name.replace(/\$/g, "\\$")}([^\\w$]|$)`).test(code);

function files(dir: string, ext: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(ext))
    .map((e) => join(e.parentPath ?? (e as unknown as { path: string }).path, e.name));
}

test("every layer extends MemView (the views a Mem keeps current) and no other layer", () => {
  for (const L of [Locks, PageAllocator, SlabAllocator, RcuAllocator, Mem]) {
    assert.equal(Object.getPrototypeOf(L.prototype), MemView.prototype, `${L.name} extends ${Object.getPrototypeOf(L.prototype).constructor.name}`);
  }
  assert.equal(Object.getPrototypeOf(Heap.prototype), Object.prototype);
});

test("the layers of one handle are distinct objects that share one Mem", () => {
  const h = Heap.create({ size: 4 << 20, cpus: 2 });
  const l = layersOf(h);
  assert.equal(l.pages.mem, l.mem);
  assert.equal(l.slab.pages, l.pages);
  assert.equal(l.rcu.slab, l.slab);
  assert.equal(l.slab.locks, l.locks);
  // The views a layer reads are the ones Mem built; the user's are other objects over the same bytes.
  assert.equal(l.pages.i32, l.mem.i32);
  assert.equal(l.slab.i32, l.mem.i32);
  assert.notEqual(h.i32, l.mem.i32);
  assert.equal(h.i32.buffer, l.mem.i32.buffer);
  assert.equal(h.i32.length, l.mem.i32.length);
  h.detach();
});

test("Heap.prototype and KmemCache.prototype hold documented names only, and an instance holds none of its own", () => {
  for (const C of [Heap, KmemCache]) {
    const names = Object.getOwnPropertyNames(C.prototype).filter((n) => n !== "constructor");
    const undocumented = names.filter((n) => !documented(n));
    assert.deepEqual(undocumented, [], `${C.name}.prototype: ${undocumented.join(", ")}`);
  }
  const h = Heap.create({ size: 4 << 20, cpus: 2 });
  const c = h.createCache("layers-test", 32);
  assert.deepEqual(Object.getOwnPropertyNames(h), []);
  assert.deepEqual(Object.getOwnPropertyNames(c).sort(), ["name", "objectSize"]);
  assert.equal((h as unknown as Record<string, unknown>).cacheAlloc, undefined);
  assert.equal((h as unknown as Record<string, unknown>).pages, undefined);
  c.destroy();
  h.detach();
});

test("no published declaration has a protected member", () => {
  // Only the declarations of today's sources (a dist/ built before files moved keeps stale ones).
  const sources = new Set(files(join(root, "src"), ".ts").map((f) => f.slice(join(root, "src").length, -3)));
  const found = files(join(root, "dist", "src"), ".d.ts")
    .filter((f) => sources.has(f.slice(join(root, "dist", "src").length, -5)))
    .filter((f) => /\bprotected\b/.test(readFileSync(f, "utf8")));
  assert.deepEqual(found, []);
});

test("no source file of the allocator is over 600 lines", () => {
  const long = files(join(root, "src"), ".ts")
    .map((f) => [f.slice(root.length + 1), readFileSync(f, "utf8").split("\n").length - 1] as const)
    .filter(([, n]) => n > 600);
  assert.deepEqual(long, []);
});

test("no source file imports layout words by name, and every class field is assigned, not defined (both keep the fast paths' loads folded and untagged)", () => {
  // V8 folds a module's own const into optimized code but loads a named import from its module
  // cell, with a hole check, at every use (see core/layout.ts, FAST PATHS).
  const named = files(join(root, "src"), ".ts")
    .filter((f) => !f.endsWith(join("core", "layout.ts")))
    .filter((f) => /import \{(?![^}]*\btype\b[^,}]*\})[^}]*\} from "[./]*(core\/)?layout\.js"/.test(readFileSync(f, "utf8")))
    .map((f) => f.slice(root.length + 1));
  assert.deepEqual(named, []);
  // The same for the other constants of the fast paths.
  const fastConstants = ["WORD_MASK", "SHEAF_SIZE_MASK", "INV_EXACT"];
  const namedFast = files(join(root, "src"), ".ts")
    .filter((f) => [...readFileSync(f, "utf8").matchAll(/import \{([^}]*)\} from/g)].some((m) => fastConstants.some((c) => new RegExp(`\\b${c}\\b`).test(m[1]!))))
    .map((f) => f.slice(root.length + 1));
  assert.deepEqual(namedFast, []);
  // A class field declared without useDefineForClassFields: false starts as undefined, so V8
  // tags every later load of it (a Smi check on this.descW, a map check on this.i32).
  const tsconfig = JSON.parse(readFileSync(join(root, "tsconfig.json"), "utf8")) as { compilerOptions: { useDefineForClassFields?: boolean } };
  assert.equal(tsconfig.compilerOptions.useDefineForClassFields, false);
  const memView = readFileSync(join(root, "dist", "src", "core", "mem.js"), "utf8");
  assert.doesNotMatch(memView.slice(memView.indexOf("class MemView")), /^\s+i32;$/m);
});

test("without SHMALLOC_EXPOSE_LAYERS=1, a user who imports layers.js by its path reaches no layer of any heap", () => {
  const layersJs = fileURLToPath(new URL("../../src/layers.js", import.meta.url));
  const indexJs = fileURLToPath(new URL("../../src/index.js", import.meta.url));
  const script = `
    const { Heap } = await import(${JSON.stringify(indexJs)});
    const m = await import(${JSON.stringify(layersJs)});
    const h = Heap.create({ size: 1 << 20, cpus: 2 });
    let got = "nothing";
    try { got = typeof m.layersOf(h); } catch (e) { got = e.message; }
    process.stdout.write(JSON.stringify({ got, isHeap: m.isHeap(h), exported: Object.keys(m).sort() }));`;
  const env = { ...process.env };
  delete env.SHMALLOC_EXPOSE_LAYERS;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", env, timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { got: string; isHeap: boolean; exported: string[] };
  assert.match(out.got, /^layersOf is for shmalloc's own tests: start the process with SHMALLOC_EXPOSE_LAYERS=1/);
  assert.equal(out.isHeap, true);
  assert.deepEqual(out.exported, ["buildLayers", "isHeap", "layersOf", "registerLayers"]);
});

test("the build writes every numeric constant of the fast paths as its number (tools/build.mjs)", () => {
  // A module const costs a context load and a hole check in bytecode, and V8 inlines a fast path
  // into the caller's loop only within a bytecode budget: the emitted fast paths name no constant.
  const fastPaths: [string, string[]][] = [
    [join("slab", "slab.js"), ["kmalloc", "kfree", "kmallocNolock", "kfreeNolock", "cacheAlloc", "cacheFree", "popFast", "pushFast"]],
    [join("page", "page_alloc.js"), ["allocPages", "freePages", "pcpPop", "pcpPush"]],
  ];
  for (const [file, methods] of fastPaths) {
    const js = readFileSync(join(root, "dist", "src", file), "utf8");
    assert.match(js, /\+ \d+ \/\* [A-Z][A-Z0-9_]+ \*\//, `${file} shows no inlined constant`);
    for (const m of methods) {
      const start = js.search(new RegExp(`^    ${m}\\(.*\\) \\{$`, "m"));
      assert.ok(start >= 0, `${file}: ${m} not found`);
      const body = js.slice(start, js.indexOf("\n    }\n", start));
      const code = body.replace(/\/\*[^]*?\*\//g, "").replace(/\/\/.*$/gm, "");
      assert.deepEqual(code.match(/\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b|\b(VM|LOCK|GFP)\.\w+/g) ?? [], [], `${file}: ${m} still names constants`);
    }
  }
});
