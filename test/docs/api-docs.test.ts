/*
 * Every name the package exports, and every public member of its classes, is documented in
 * README.md. The public surface is read from the built declarations (dist/src/index.d.ts, what a
 * user's TypeScript sees) with the TypeScript compiler: exports of values and of types, and the
 * members of Heap, KmemCache, Trace and HeapError that are neither private nor protected (members
 * marked @internal are stripped from the declarations). "Documented" means the name appears as a
 * word inside some `code span` or code block of the README. Add an export without documenting it
 * and this test fails, naming it.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import * as shmalloc from "../../src/index.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const readme = readFileSync(join(root, "README.md"), "utf8");
const code = [...readme.matchAll(/```[\s\S]*?```|`[^`\n]+`/g)].map((m) => m[0]).join("\n");
const documented = (name: string): boolean => new RegExp(`(^|[^\\w$])${name.replace(/\$/g, "\\$")}([^\\w$]|$)`).test(code);

const dts = join(root, "dist", "src", "index.d.ts");
const program = ts.createProgram([dts], { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022, noEmit: true });
const checker = program.getTypeChecker();
const moduleSymbol = checker.getSymbolAtLocation(program.getSourceFile(dts)!)!;
const exported = checker.getExportsOfModule(moduleSymbol);

function resolve(sym: ts.Symbol): ts.Symbol {
  return sym.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(sym) : sym;
}

/** Public, and declared by this package (not by Error or another lib class it extends). */
function isPublic(member: ts.Symbol): boolean {
  const decls = member.declarations ?? [];
  if (decls.length === 0) return true;
  if (decls.every((d) => !d.getSourceFile().fileName.startsWith(join(root, "dist", "src")))) return false;
  return decls.every((d) => {
    const name = (d as ts.NamedDeclaration).name;
    return (ts.getCombinedModifierFlags(d) & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) === 0 && !(name !== undefined && ts.isPrivateIdentifier(name));
  });
}

/** Public instance and static members of an exported class, base classes included. */
function publicMembers(className: string): string[] {
  const sym = resolve(exported.find((s) => s.name === className)!);
  const decl = sym.declarations!.find(ts.isClassDeclaration)!;
  const instance = checker.getDeclaredTypeOfSymbol(sym);
  const statics = checker.getTypeOfSymbolAtLocation(sym, decl);
  const names = new Set<string>();
  for (const m of checker.getPropertiesOfType(instance)) if (isPublic(m)) names.add(m.name);
  for (const m of checker.getPropertiesOfType(statics)) if (isPublic(m) && m.name !== "prototype") names.add(m.name);
  return [...names].sort();
}

test("the declarations were built and read", () => {
  assert.ok(exported.length >= 30, `only ${exported.length} exports found in ${dts}`);
  // The runtime exports are a subset of what the declarations export.
  for (const name of Object.keys(shmalloc)) assert.ok(exported.some((s) => s.name === name), `${name} is exported at run time but not declared`);
});

test("every export of the package is documented in README.md", () => {
  const missing = exported.map((s) => s.name).filter((n) => !documented(n));
  assert.deepEqual(missing, [], `exported but not in README.md: ${missing.join(", ")}`);
});

for (const cls of ["Heap", "KmemCache", "Trace", "HeapError"]) {
  test(`every public member of ${cls} is documented in README.md`, () => {
    const members = publicMembers(cls);
    assert.ok(members.length > 0);
    const missing = members.filter((n) => !documented(n));
    assert.deepEqual(missing, [], `public members of ${cls} not in README.md: ${missing.join(", ")}`);
  });
}

test("internal members are not part of the declared surface", () => {
  assert.ok(!publicMembers("Trace").includes("emit"), "Trace.emit is internal");
  assert.ok(!publicMembers("Trace").includes("mask"), "Trace.mask is internal");
  assert.ok(!publicMembers("Heap").includes("cacheAlloc"), "cacheAlloc is internal");
  assert.ok(publicMembers("Heap").includes("attachedSlots"));
});
