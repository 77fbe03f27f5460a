/*
 * Every code example in README.md runs. A ```js block whose first line is `// file: NAME` is
 * written to dist/readme/NAME (inside the package, so `import "shmalloc"` resolves to this
 * package); every file not named *-worker.mjs is then run with node and must exit 0.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const readme = readFileSync(join(root, "README.md"), "utf8");
const out = join(root, "dist", "readme");
const blocks = [...readme.matchAll(/```js\n\/\/ file: (\S+)\n([\s\S]*?)```/g)].map((m) => ({ name: m[1]!, code: m[2]! }));

test("the README has runnable examples", () => {
  assert.ok(blocks.length >= 4, `found ${blocks.length} examples`);
});

mkdirSync(out, { recursive: true });
for (const b of blocks) writeFileSync(join(out, b.name), b.code);

for (const b of blocks.filter((x) => !x.name.endsWith("-worker.mjs"))) {
  test(`README example ${b.name} runs`, () => {
    const stdout = execFileSync(process.execPath, [join(out, b.name)], { cwd: out, encoding: "utf8", timeout: 60_000 });
    assert.ok(stdout.length > 0, "it printed something");
  });
}

test("the piscina example runs a fixed pool no worker leaves early (piscina's defaults end idle workers, which never detach)", () => {
  const code = blocks.find((b) => b.name === "piscina.mjs")?.code ?? "";
  assert.match(code, /minThreads: THREADS,/);
  assert.match(code, /maxThreads: THREADS,/);
  assert.match(code, /idleTimeout: Infinity,/);
  assert.match(code, /cpus: THREADS \+ 2 \}/, "a slot for the host and each worker, and one spare");
});
