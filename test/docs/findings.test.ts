/*
 * README.md's map of the trust findings to their regression tests ("Regression tests of the trust
 * findings"): every one of the 15 findings has a row, and every row names a test file that exists
 * and holds a test() or describe() of that title. A title written with a template parameter
 * (`${name}`) matches any value there.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const readme = readFileSync(join(root, "README.md"), "utf8");
const HEADING = "### Regression tests of the trust findings";

interface Row {
  finding: number;
  file: string;
  title: string;
}

function mapRows(): Row[] {
  const at = readme.indexOf(`\n${HEADING}\n`);
  assert.ok(at >= 0, `README.md has a section "${HEADING}"`);
  const body = readme.slice(at + HEADING.length + 2);
  const end = body.search(/^#/m);
  const rows: Row[] = [];
  for (const line of (end < 0 ? body : body.slice(0, end)).split("\n")) {
    if (!line.startsWith("| ") || /^\|\s*(finding|---)/.test(line)) continue;
    const cells = line.slice(2, -2).split(" | ");
    assert.equal(cells.length, 4, `a row of four cells: ${line}`);
    const finding = /^(\d+) /.exec(cells[0]!);
    const file = /^`([^`]+)`$/.exec(cells[2]!);
    assert.ok(finding !== null, `the row starts with a finding number: ${line}`);
    assert.ok(file !== null, `the third cell is a file in backticks: ${line}`);
    rows.push({ finding: Number(finding[1]), file: file[1]!, title: cells[3]! });
  }
  return rows;
}

/** Every test() and describe() title of a test file, as a pattern: a `${...}` part matches anything. */
function titlesOf(source: string): RegExp[] {
  const out: RegExp[] = [];
  for (const m of source.matchAll(/\b(?:test|describe)\(\s*(["'`])((?:\\.|(?!\1)[^\\])*)\1/g)) {
    const quote = m[1]!;
    const raw = m[2]!;
    const parts = quote === "`" ? raw.split(/\$\{[^}]*\}/) : [raw];
    const text = parts.map((p) => p.replace(/\\(.)/g, "$1").replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    out.push(new RegExp(`^${text.join("[\\s\\S]*?")}$`));
  }
  return out;
}

const rows = mapRows();

test("the README maps each of the 15 trust findings to a regression test", () => {
  const found = new Set(rows.map((r) => r.finding));
  for (let f = 1; f <= 15; f++) assert.ok(found.has(f), `finding ${f} has no row`);
  assert.deepEqual(rows.filter((r) => r.finding < 1 || r.finding > 15), []);
});

test("every test the map names exists under that title in that file", () => {
  const missing: string[] = [];
  for (const r of rows) {
    assert.match(r.file, /^test\/.+\.test\.ts$/, `finding ${r.finding}: ${r.file} is a test file`);
    const path = join(root, r.file);
    if (!existsSync(path)) {
      missing.push(`finding ${r.finding}: ${r.file} does not exist`);
      continue;
    }
    const titles = titlesOf(readFileSync(path, "utf8"));
    if (!titles.some((t) => t.test(r.title))) missing.push(`finding ${r.finding}: ${r.file} has no test "${r.title}"`);
  }
  assert.deepEqual(missing, []);
});
