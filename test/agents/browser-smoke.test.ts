/*
 * The package in a real browser: headless Chromium loads dist/src/index.js straight from its ESM
 * files (no bundler) from a cross-origin isolated page on 127.0.0.1, makes a heap, and validates it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { launchChromium, openPage, serveStatic } from "../support/browser.js";

test("the package loads in Chromium from its ESM files and runs in an isolated page", async () => {
  const server = await serveStatic();
  const browser = await launchChromium();
  try {
    const { page, errors } = await openPage(browser, `${server.url}/test/browser/smoke.html`);
    await page.waitForFunction(() => (globalThis as unknown as { result?: unknown }).result !== undefined, null, { timeout: 30_000 });
    const r = (await page.evaluate(() => (globalThis as unknown as { result: unknown }).result)) as { isolated: boolean; free: number; total: number };
    assert.deepEqual(errors, []);
    assert.equal(r.isolated, true);
    assert.equal(r.free, r.total);
  } finally {
    await browser.close();
    await server.close();
  }
});
