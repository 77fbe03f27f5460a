/*
 * The package as a new user gets it: package.json names its licence, repository and keywords, runs
 * no script when it is installed, and `npm pack` ships the built files (dist/src with its .d.ts)
 * and the licence. The tarball installs into a fresh project that has no TypeScript, with npm
 * offline, and `import { Heap } from "shmalloc"` works there.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  name: string;
  license: string;
  repository?: { url?: string };
  keywords?: string[];
  files?: string[];
  main: string;
  types: string;
  scripts: Record<string, string>;
  dependencies?: Record<string, string>;
};

/** The environment of a child npm: no npm_* variables of the `npm test` around us, no node_modules/.bin on PATH. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v;
  env.PATH = (process.env.PATH ?? "")
    .split(delimiter)
    .filter((p) => !p.includes("node_modules"))
    .join(delimiter);
  return env;
}

function npm(args: string[], cwd: string): string {
  return execFileSync("npm", args, { cwd, env: cleanEnv(), encoding: "utf8", timeout: 120_000, stdio: ["ignore", "pipe", "pipe"] });
}

test("package.json: MIT with a LICENSE file, repository, keywords, no install-time script", () => {
  assert.equal(pkg.license, "MIT");
  const license = readFileSync(join(root, "LICENSE"), "utf8");
  assert.match(license, /^MIT License/);
  assert.match(license, /Copyright \(c\) \d{4} shmalloc contributors/);
  assert.match(pkg.repository?.url ?? "", /^git\+https:\/\/github\.com\/.+\.git$/);
  assert.ok((pkg.keywords ?? []).length >= 5, "keywords");
  assert.ok(pkg.keywords!.includes("sharedarraybuffer"));
  // An installing project runs these; none may be there (a consumer has no TypeScript).
  for (const s of ["preinstall", "install", "postinstall", "prepare"]) {
    assert.equal(pkg.scripts[s], undefined, `script ${s} would run in a consumer's install`);
  }
  // The tarball is built from fresh sources: prepack builds.
  assert.match(pkg.scripts.prepack ?? "", /npm run build/);
  // One runtime dependency: uPlot, which only the inspector's page (shmalloc/inspector) loads.
  assert.deepEqual(Object.keys(pkg.dependencies ?? {}), ["uplot"], "no runtime dependency but the inspector's chart library");
  assert.equal(pkg.main, "./dist/src/index.js");
  assert.equal(pkg.types, "./dist/src/index.d.ts");
});

test("npm pack ships dist/src with its .d.ts, the sources and the LICENSE, and nothing of the tests, demo or benchmarks", () => {
  const out = npm(["pack", "--dry-run", "--json", "--ignore-scripts"], root);
  const files = new Set((JSON.parse(out) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path));
  for (const f of ["package.json", "README.md", "LICENSE", "dist/src/index.js", "dist/src/index.d.ts", "dist/src/heap.js", "dist/src/heap.d.ts", "src/index.ts"]) {
    assert.ok(files.has(f), `${f} is missing from the tarball`);
  }
  // Every built module of the library is in it.
  for (const f of readdirSync(join(root, "dist", "src"))) {
    if (f.endsWith(".js") || f.endsWith(".d.ts")) assert.ok(files.has(`dist/src/${f}`), `dist/src/${f} is missing from the tarball`);
  }
  for (const f of files) assert.doesNotMatch(f, /^(dist\/)?(test|bench|demo|node_modules)\//, `${f} should not ship`);
});

test("the packed tarball installs into a fresh project without TypeScript, offline, and imports", { timeout: 180_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), "shmalloc-consumer-"));
  try {
    const tgz = npm(["pack", "--ignore-scripts", "--silent", "--pack-destination", dir], root).trim().split("\n").pop()!;
    writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "consumer", version: "1.0.0", private: true, type: "module" }));
    npm(["install", "--offline", "--no-audit", "--no-fund", join(dir, tgz)], dir);
    assert.ok(existsSync(join(dir, "node_modules", "shmalloc", "dist", "src", "index.js")));
    assert.ok(!existsSync(join(dir, "node_modules", "typescript")), "TypeScript came along");
    assert.deepEqual(readdirSync(join(dir, "node_modules")).filter((n) => !n.startsWith(".")), ["shmalloc", "uplot"]);
    writeFileSync(
      join(dir, "main.mjs"),
      `import { Heap, GFP, HeapError } from "shmalloc";
const heap = Heap.create({ size: 1 << 20, cpus: 2 });
const a = heap.kmalloc(100, GFP.ZERO);
heap.kfree(a);
heap.shrink();
heap.validate();
const s = heap.stats();
const { serveInspector } = await import("shmalloc/inspector");
const inspector = await serveInspector(heap);
const served = await Promise.all(["/", "/app.js", "/uPlot.esm.js"].map(async (p) => (await fetch(new URL(p, inspector.url))).status));
await inspector.close();
console.log(typeof HeapError, s.freePages === s.totalPages ? "all free" : "leak", "inspector", served.join(" "));
`,
    );
    const stdout = execFileSync(process.execPath, ["main.mjs"], { cwd: dir, env: cleanEnv(), encoding: "utf8", timeout: 60_000 });
    assert.equal(stdout.trim(), "function all free inspector 200 200 200");
    // CommonJS: the "default" condition lets require() load the ESM entries where Node can
    // require ES modules (20.19+, 22.12+); process.features.require_module says whether it can.
    if ((process.features as { require_module?: boolean }).require_module === true) {
      writeFileSync(
        join(dir, "main.cjs"),
        `const { Heap, HeapError } = require("shmalloc");
const { encodePageMap } = require("shmalloc/inspector");
const heap = Heap.create({ size: 1 << 20, cpus: 2 });
heap.kfree(heap.kmalloc(100));
heap.validate();
console.log(typeof HeapError, encodePageMap(heap.pageMap()).pages);
`,
      );
      const cjs = execFileSync(process.execPath, ["main.cjs"], { cwd: dir, env: cleanEnv(), encoding: "utf8", timeout: 60_000 });
      assert.equal(cjs.trim(), "function 256");
    } else {
      console.log(`# this Node (${process.version}) cannot require() ES modules: the CommonJS check is skipped`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
