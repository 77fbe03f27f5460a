/*
 * Browser test support: a static server on 127.0.0.1 that sends the cross-origin isolation headers
 * (so pages get SharedArrayBuffer), and headless Chromium driven by playwright-core.
 *
 * The server serves the repository root, so a page loads the package straight from its ESM files
 * (`/dist/src/index.js`) with no bundler. Chromium is the system's (Debian's `chromium`, installed
 * by .ci/run); CHROMIUM_PATH overrides where it is looked for.
 *
 * Every wait here has a deadline: a broken page fails a test, it never hangs one.
 */
import { createServer, type Server } from "node:http";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type Page } from "playwright-core";

/** The repository root (dist/test/support -> ../../..). */
export const REPO_ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)), "..", "..", "..");

const MIME: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".wasm": "application/wasm",
  ".png": "image/png",
  ".svg": "image/svg+xml",
};

/** The headers that make a page cross-origin isolated, so that it may create SharedArrayBuffers. */
export const ISOLATION_HEADERS: Readonly<Record<string, string>> = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
};

export interface StaticServer {
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Serve `root` on 127.0.0.1 (a free port). `isolated` sends COOP/COEP (default true); a test of the
 * non-isolated case passes false.
 */
export async function serveStatic(root: string = REPO_ROOT, isolated = true): Promise<StaticServer> {
  const base = resolve(root);
  const server: Server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    const file = normalize(join(base, path));
    if (file !== base && !file.startsWith(base + sep)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      const headers: Record<string, string> = {
        "Content-Type": MIME[extname(file)] ?? "application/octet-stream",
        "Cache-Control": "no-store",
      };
      if (isolated) Object.assign(headers, ISOLATION_HEADERS);
      res.writeHead(200, headers).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("no address");
  return {
    url: `http://127.0.0.1:${addr.port}`,
    close: () => new Promise<void>((ok) => { server.closeAllConnections(); server.close(() => ok()); }),
  };
}

/** The Chromium binary: CHROMIUM_PATH, else Debian's. */
export function chromiumPath(): string | null {
  const candidates = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser"];
  for (const c of candidates) if (c && existsSync(c)) return c;
  return null;
}

/**
 * Launch headless Chromium with the flags this closed network needs. Throws when none is installed.
 * `isolationOnly`: leave out --enable-features=SharedArrayBuffer, so that, as in a user's browser,
 * only cross-origin isolated pages get SharedArrayBuffer.
 */
export async function launchChromium(options: { isolationOnly?: boolean } = {}): Promise<Browser> {
  const executablePath = chromiumPath();
  if (executablePath === null) {
    throw new Error("Chromium not found: install Debian's `chromium` (.ci/run does) or set CHROMIUM_PATH");
  }
  return chromium.launch({
    executablePath,
    headless: true,
    timeout: 60_000,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...(options.isolationOnly === true ? [] : ["--enable-features=SharedArrayBuffer"]),
    ],
  });
}

/** Open `url` in a new page; page errors and console errors are collected in `errors`. */
export async function openPage(browser: Browser, url: string): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
  page.setDefaultTimeout(60_000);
  await page.goto(url, { waitUntil: "load" });
  return { page, errors };
}
