#!/usr/bin/env node
/*
 * The build: tsc's program and emit (tsconfig.json, diagnostics as tsc prints them), with one
 * transform on the library's own files (src/): every use of a `const` whose value is a number
 * known at compile time (a literal, or an arithmetic expression of literals and such constants)
 * becomes that number, with the constant's name in a comment beside it; e + C, where C is such a
 * constant 0 and e a number, becomes e.
 *
 * Why: V8 loads a module-level const from its context slot and checks it against the hole
 * (temporal dead zone) at every use: four bytes of bytecode where a literal takes one or two.
 * Optimized code folds the load, but V8 inlines a callee into its caller only within a budget
 * counted in bytecode bytes (--max-inlined-bytecode-size-cumulative, 920), so the fast paths'
 * layout constants decided whether kmalloc and kfree were inlined into a user's loop. The source
 * keeps the named constants (one definition each, in core/layout.ts and the like); only the
 * emitted JavaScript carries the numbers.
 *
 * usage: node tools/build.mjs [-p tsconfig.json] [--outDir DIR]
 */
import path from "node:path";
import { parseArgs } from "node:util";
import ts from "typescript";

const { values: args } = parseArgs({
  options: { project: { type: "string", short: "p", default: "tsconfig.json" }, outDir: { type: "string" } },
});

const host = { ...ts.sys, onUnRecoverableConfigFileDiagnostic: (d) => fail([d]) };
const parsed = ts.getParsedCommandLineOfConfigFile(path.resolve(args.project), args.outDir ? { outDir: path.resolve(args.outDir) } : {}, host);
if (parsed === undefined) process.exit(1);
if (parsed.errors.length > 0) fail(parsed.errors);
const root = path.dirname(path.resolve(args.project));
const srcDir = path.join(root, "src") + path.sep;

const program = ts.createProgram({ rootNames: parsed.fileNames, options: parsed.options, projectReferences: parsed.projectReferences });
const checker = program.getTypeChecker();

function fail(diags) {
  const fmt = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => process.cwd(), getNewLine: () => "\n" };
  process.stderr.write(process.stdout.isTTY ? ts.formatDiagnosticsWithColorAndContext(diags, fmt) : ts.formatDiagnostics(diags, fmt));
  process.exit(2);
}

const pre = ts.getPreEmitDiagnostics(program);
if (pre.some((d) => d.category === ts.DiagnosticCategory.Error)) fail(pre);

/** The const declaration list a declaration or binding element belongs to, if any. */
function constList(decl) {
  let n = decl;
  while (n !== undefined && (ts.isBindingElement(n) || ts.isObjectBindingPattern(n) || ts.isArrayBindingPattern(n))) n = n.parent;
  if (n === undefined || !ts.isVariableDeclaration(n) || !ts.isVariableDeclarationList(n.parent)) return undefined;
  return (n.parent.flags & ts.NodeFlags.Const) !== 0 ? n : undefined;
}

const cache = new Map();

/** The number a constant's symbol stands for, or undefined. */
function symbolValue(sym, depth) {
  if (sym === undefined || depth > 32) return undefined;
  if ((sym.flags & ts.SymbolFlags.Alias) !== 0) sym = checker.getAliasedSymbol(sym);
  if (cache.has(sym)) return cache.get(sym);
  let v;
  const decl = sym.valueDeclaration;
  if (decl !== undefined && constList(decl) !== undefined) {
    const t = checker.getTypeOfSymbolAtLocation(sym, decl);
    if ((t.flags & ts.TypeFlags.NumberLiteral) !== 0) v = t.value;
    else if (ts.isVariableDeclaration(decl) && ts.isIdentifier(decl.name) && decl.initializer !== undefined) v = exprValue(decl.initializer, depth + 1);
    else if (ts.isBindingElement(decl) && decl.initializer === undefined) {
      // const { A } = ns: the value of ns.A.
      const prop = decl.propertyName ?? decl.name;
      const list = constList(decl);
      if (ts.isIdentifier(prop) && ts.isObjectBindingPattern(decl.parent) && decl.parent.parent === list && list.initializer !== undefined) {
        const source = checker.getTypeAtLocation(list.initializer);
        v = symbolValue(source.getProperty(prop.text), depth + 1);
      }
    }
  }
  if (typeof v !== "number" || !Number.isFinite(v) || Object.is(v, -0)) v = undefined;
  cache.set(sym, v);
  return v;
}

const BINARY = {
  [ts.SyntaxKind.PlusToken]: (a, b) => a + b,
  [ts.SyntaxKind.MinusToken]: (a, b) => a - b,
  [ts.SyntaxKind.AsteriskToken]: (a, b) => a * b,
  [ts.SyntaxKind.SlashToken]: (a, b) => a / b,
  [ts.SyntaxKind.AsteriskAsteriskToken]: (a, b) => a ** b,
  [ts.SyntaxKind.LessThanLessThanToken]: (a, b) => a << b,
  [ts.SyntaxKind.GreaterThanGreaterThanToken]: (a, b) => a >> b,
  [ts.SyntaxKind.GreaterThanGreaterThanGreaterThanToken]: (a, b) => a >>> b,
  [ts.SyntaxKind.BarToken]: (a, b) => a | b,
  [ts.SyntaxKind.AmpersandToken]: (a, b) => a & b,
  [ts.SyntaxKind.CaretToken]: (a, b) => a ^ b,
};

/** The number an initializer evaluates to at compile time, or undefined. */
function exprValue(e, depth) {
  if (ts.isNumericLiteral(e)) return Number(e.text);
  if (ts.isParenthesizedExpression(e)) return exprValue(e.expression, depth);
  if (ts.isIdentifier(e)) return symbolValue(checker.getSymbolAtLocation(e), depth);
  if (ts.isPrefixUnaryExpression(e)) {
    const a = exprValue(e.operand, depth);
    if (a === undefined) return undefined;
    if (e.operator === ts.SyntaxKind.MinusToken) return -a;
    if (e.operator === ts.SyntaxKind.PlusToken) return a;
    if (e.operator === ts.SyntaxKind.TildeToken) return ~a;
    return undefined;
  }
  if (ts.isBinaryExpression(e)) {
    const op = BINARY[e.operatorToken.kind];
    if (op === undefined) return undefined;
    const a = exprValue(e.left, depth);
    const b = a === undefined ? undefined : exprValue(e.right, depth);
    return b === undefined ? undefined : op(a, b);
  }
  return undefined;
}

/**
 * The number X.p stands for, where X is a const bound to an object literal `as const` (or
 * Object.freeze of one) and p one of its number-valued properties: the readonly tables (VM, LOCK, GFP).
 */
function propertyValue(pa) {
  const sym = checker.getSymbolAtLocation(pa);
  // Object.freeze's Readonly<> gives mapped properties, whose declarations are the originals.
  const decl = sym?.valueDeclaration ?? sym?.declarations?.[0];
  if (decl === undefined || !ts.isPropertyAssignment(decl) || !ts.isObjectLiteralExpression(decl.parent)) return undefined;
  let n = decl.parent.parent;
  if (!ts.isAsExpression(n) || !ts.isTypeReferenceNode(n.type) || !ts.isIdentifier(n.type.typeName) || n.type.typeName.text !== "const") return undefined;
  n = n.parent;
  if (ts.isCallExpression(n) && n.expression.getText() === "Object.freeze" && n.arguments.length === 1) n = n.parent;
  if (!ts.isVariableDeclaration(n) || constList(n) === undefined) return undefined;
  const t = checker.getTypeAtLocation(pa);
  const v = (t.flags & ts.TypeFlags.NumberLiteral) !== 0 ? t.value : exprValue(decl.initializer, 1);
  return typeof v === "number" && Number.isFinite(v) && !Object.is(v, -0) ? v : undefined;
}

/** True where an identifier (or X.p) is read as a value (not a name being declared, a property name, a specifier). */
function isValueUse(id) {
  const p = id.parent;
  if (ts.isPropertyAccessExpression(p)) return p.expression === id;
  if (ts.isVariableDeclaration(p) || ts.isBindingElement(p) || ts.isParameter(p) || ts.isPropertyDeclaration(p)) return p.initializer === id;
  if (ts.isPropertyAssignment(p)) return p.initializer === id;
  if (ts.isShorthandPropertyAssignment(p) || ts.isImportSpecifier(p) || ts.isExportSpecifier(p) || ts.isNamespaceImport(p)) return false;
  if (ts.isBinaryExpression(p)) return !(p.left === id && p.operatorToken.kind >= ts.SyntaxKind.FirstAssignment && p.operatorToken.kind <= ts.SyntaxKind.LastAssignment);
  return (
    ts.isElementAccessExpression(p) ||
    ts.isCallExpression(p) ||
    ts.isNewExpression(p) ||
    ts.isParenthesizedExpression(p) ||
    ts.isConditionalExpression(p) ||
    ts.isReturnStatement(p) ||
    ts.isArrayLiteralExpression(p) ||
    ts.isCaseClause(p) ||
    ts.isTemplateSpan(p) ||
    ts.isAsExpression(p) ||
    ts.isNonNullExpression(p) ||
    (ts.isPrefixUnaryExpression(p) && p.operator !== ts.SyntaxKind.PlusPlusToken && p.operator !== ts.SyntaxKind.MinusMinusToken)
  );
}

let inlined = 0;
const inlineConsts = (ctx) => (sf) => {
  if (!path.resolve(sf.fileName).startsWith(srcDir)) return sf;
  const visit = (node) => {
    // e + C or e - C with C a constant 0 and e a number: e alone (an offset of word 0 costs an AddSmi).
    if (ts.isBinaryExpression(node) && (node.operatorToken.kind === ts.SyntaxKind.PlusToken || node.operatorToken.kind === ts.SyntaxKind.MinusToken)) {
      const r = node.right;
      const zero = (ts.isIdentifier(r) && isValueUse(r) && symbolValue(checker.getSymbolAtLocation(r), 0) === 0) ||
        (ts.isPropertyAccessExpression(r) && ts.isIdentifier(r.expression) && propertyValue(r) === 0);
      const t = zero ? checker.getTypeAtLocation(node.left) : undefined;
      if (t !== undefined && (t.flags & ts.TypeFlags.NumberLike) !== 0 && (t.flags & ts.TypeFlags.Union) === 0) {
        inlined++;
        const e = ts.factory.createParenthesizedExpression(ts.visitNode(node.left, visit));
        ts.addSyntheticTrailingComment(e, ts.SyntaxKind.MultiLineCommentTrivia, ` ${node.operatorToken.getText()} ${r.getText()} `, false);
        return e;
      }
    }
    const named = ts.isIdentifier(node) || (ts.isPropertyAccessExpression(node) && ts.isIdentifier(node.expression));
    if (named && node.parent !== undefined && isValueUse(node)) {
      const v = ts.isIdentifier(node) ? symbolValue(checker.getSymbolAtLocation(node), 0) : propertyValue(node);
      if (v !== undefined) {
        inlined++;
        let lit = ts.factory.createNumericLiteral(String(Math.abs(v)));
        ts.addSyntheticTrailingComment(lit, ts.SyntaxKind.MultiLineCommentTrivia, ` ${node.getText()} `, false);
        if (v < 0) lit = ts.factory.createParenthesizedExpression(ts.factory.createPrefixUnaryExpression(ts.SyntaxKind.MinusToken, lit));
        return lit;
      }
    }
    return ts.visitEachChild(node, visit, ctx);
  };
  return ts.visitNode(sf, visit);
};

const res = program.emit(undefined, undefined, undefined, false, { before: [inlineConsts] });
if (res.emitSkipped || res.diagnostics.length > 0) fail(res.diagnostics);
if (process.env.SHMALLOC_BUILD_VERBOSE) console.log(`build: ${inlined} constant uses inlined`);
