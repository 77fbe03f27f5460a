/*
 * tools/build.mjs, the build: tsc's emit with every use of a numeric constant of src/ written as
 * its number. Checked on a small project of its own: the values the emitted code computes are
 * the source's, every kind of constant is written out, and nothing else is (a let, a string, a
 * mutable export, any use in a file outside src/).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

const files: Record<string, string> = {
  "tsconfig.json": JSON.stringify({
    compilerOptions: { target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", strict: true, outDir: "out", rootDir: ".", types: [] },
    include: ["src", "lib"],
  }),
  "src/consts.ts": `
export const A = 5;
export const ZERO = 0;
export const NEG = -3;
export const HALF = 2 ** -1;
export const SHIFTED = (A << 4) | 1;
export const BIG = 0x6b6b1e55;
export const TABLE = { one: 1, two: 1 << 1 } as const;
export const FROZEN = Object.freeze({ four: 4 } as const);
export const NAME = "five";
export let counter = 9;
export function bump(): number { return ++counter; }
`,
  "src/use.ts": `
import * as c from "./consts.js";
import { BIG as TAG, TABLE, FROZEN } from "./consts.js";
import { OUTSIDE } from "../lib/outside.js";
const { A, ZERO, NEG, HALF, SHIFTED: S, NAME } = c;
export function values(x: number): (number | string)[] {
  let local = 2;
  local += A;
  const inner = 11;
  return [x + A, x + ZERO, x - ZERO, NEG, -NEG, HALF, S, x ^ TAG, TABLE.two, FROZEN.four, local, inner, NAME, c.counter, OUTSIDE, (x + ZERO) * 2];
}
`,
  "lib/outside.ts": `export const OUTSIDE = 42;\n`,
  "lib/user.ts": `import { A } from "../src/consts.js";\nexport const y = A + 1;\n`,
};

test("the build writes the numeric constants of src/ as numbers, and the code computes what the source does", () => {
  const dir = mkdtempSync(join(tmpdir(), "shmalloc-build-"));
  try {
    for (const [name, text] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, name)), { recursive: true });
      writeFileSync(join(dir, name), text);
    }
    writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }));
    const r = spawnSync(process.execPath, [join(root, "tools", "build.mjs"), "-p", join(dir, "tsconfig.json")], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr + r.stdout);
    const js = readFileSync(join(dir, "out", "src", "use.js"), "utf8");
    const body = js.slice(js.indexOf("export function values")).replace(/\/\*[^]*?\*\//g, "");
    // Written out: plain, negative, fractional, computed and aliased constants, readonly tables,
    // a constant declared outside src/ but used in it.
    for (const name of ["A", "ZERO", "NEG", "HALF", "S", "TAG", "TABLE", "FROZEN", "OUTSIDE"]) assert.doesNotMatch(body, new RegExp(`\\b${name}\\b`), `${name} is still named`);
    assert.match(js, /x \+ 5 \/\* A \*\//);
    assert.match(js, /\(x\) \/\* \+ ZERO \*\//, "an addition of a constant 0 is dropped");
    // Kept: a let, a string constant, a mutable export; and every name in a file outside src/.
    for (const name of ["local", "NAME", "counter"]) assert.match(body, new RegExp(`\\b${name}\\b`), `${name} should stay named`);
    assert.match(readFileSync(join(dir, "out", "lib", "user.js"), "utf8"), /= A \+ 1;/);
    const out = spawnSync(process.execPath, ["--input-type=module", "-e", `import { values } from ${JSON.stringify(pathToFileURL(join(dir, "out", "src", "use.js")).href)}; console.log(JSON.stringify(values(10)));`], { encoding: "utf8" });
    assert.equal(out.status, 0, out.stderr);
    assert.deepEqual(JSON.parse(out.stdout), [15, 10, 10, -3, 3, 0.5, 81, 10 ^ 0x6b6b1e55, 2, 4, 7, 11, "five", 9, 42, 20]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the build fails, as tsc does, on a type error", () => {
  const dir = mkdtempSync(join(tmpdir(), "shmalloc-build-"));
  try {
    mkdirSync(join(dir, "src"));
    writeFileSync(join(dir, "tsconfig.json"), files["tsconfig.json"]!);
    writeFileSync(join(dir, "src", "bad.ts"), "export const x: number = 'not a number';\n");
    const r = spawnSync(process.execPath, [join(root, "tools", "build.mjs"), "-p", join(dir, "tsconfig.json")], { encoding: "utf8" });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /TS2322/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
