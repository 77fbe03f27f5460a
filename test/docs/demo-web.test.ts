/* The demo with --web (npm run inspect) as a child process: it prints the inspector's URL, serves
 * snapshots of its heap while it runs, still ends with validate() passing, and a port in use is a
 * clear error (exit 2). */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { get as httpGet } from "node:http";
import { createServer } from "node:net";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const MAIN = fileURLToPath(new URL("../../demo/main.js", import.meta.url));

interface Child {
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

function start(args: string[], timeoutMs: number): Child {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const exited = new Promise<number | null>((resolve) =>
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve(code);
    }),
  );
  return { stdout: () => stdout, stderr: () => stderr, exited };
}

/** A port that was free a moment ago. */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((ok) => s.listen(0, "127.0.0.1", ok));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((ok) => s.close(() => ok()));
  return port;
}

/** Every event of a server-sent stream until the server ends it: [event name, data]. */
function readStream(url: string): Promise<[string, string][]> {
  return new Promise((resolve, reject) => {
    httpGet(url, (res) => {
      let buf = "";
      res.setEncoding("utf8").on("data", (d: string) => (buf += d));
      res.on("end", () =>
        resolve(
          buf
            .split("\n\n")
            .filter((b) => b.includes("data: "))
            .map((b) => [/^event: (.*)$/m.exec(b)?.[1] ?? "message", /^data: (.*)$/m.exec(b)![1]!]),
        ),
      );
    }).on("error", reject);
  });
}

test("--web serves the inspector while the demo runs, and the demo still validates", { timeout: 120_000 }, async () => {
  const port = await freePort();
  const c = start(["--web", "--port", String(port), "--seconds", "2", "--workers", "2", "--size", "8m", "--seed", "7"], 110_000);
  const deadline = Date.now() + 60_000;
  let m: RegExpExecArray | null = null;
  while ((m = /^inspector: (http:\/\/127\.0\.0\.1:\d+\/) {2}\(open it in a browser\)$/m.exec(c.stdout())) === null) {
    assert.ok(Date.now() < deadline, `no inspector line\n${c.stdout()}\n${c.stderr()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const url = m[1]!;
  assert.equal(url, `http://127.0.0.1:${port}/`);
  // The repeat line repeats the port too.
  assert.match(c.stdout(), new RegExp(`^  repeat with: node dist/demo/main\\.js --workers 2 --seconds 2 --size 8388608 --seed 0x00000007 --web --port ${port}$`, "m"));
  const stream = readStream(new URL("events", url).href);
  const page = await fetch(url);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<title>shmalloc inspector<\/title>/);
  const snap = (await (await fetch(new URL("snapshot.json", url))).json()) as {
    title: string;
    stats: { totalPages: number; slabs: { name: string }[] };
    extra: { agents: { name: string }[]; sizes: { label: string }[] };
  };
  assert.equal(snap.title, "shmalloc demo: hash table, 2 workers, seed 0x00000007");
  assert.ok(snap.stats.slabs.some((s) => s.name === "ht_node"));
  assert.deepEqual(snap.extra.agents.map((a) => a.name), ["worker 0", "worker 1"]);
  assert.equal(snap.extra.sizes[0]!.label, "8");
  const code = await c.exited;
  assert.equal(code, 0, c.stderr());
  assert.match(c.stdout(), /^validate: ok — (\d+)\/\1 pages free, 0 leaked$/m);
  // The server closed with the demo.
  await assert.rejects(fetch(url));
  // The stream's last snapshot shows the heap as the demo left it: workers gone, table emptied.
  const events = await stream;
  assert.deepEqual(events.at(-1), ["end", JSON.stringify({ reason: "the program stopped serving the inspector" })]);
  const last = JSON.parse(events.filter(([e]) => e === "message").at(-1)![1]) as { stats: { attached: number; freePages: number; totalPages: number }; extra: { counters: Record<string, number> } };
  assert.equal(last.stats.attached, 1);
  assert.equal(last.stats.freePages, last.stats.totalPages);
  assert.equal(last.extra.counters["table entries"], 0);
});

test("--web on a port in use exits 2 and says so, before any worker starts", { timeout: 60_000 }, async () => {
  const busy = createServer();
  await new Promise<void>((ok) => busy.listen(0, "127.0.0.1", ok));
  const port = (busy.address() as { port: number }).port;
  try {
    const c = start(["--web", "--port", String(port), "--workers", "2", "--size", "8m"], 50_000);
    assert.equal(await c.exited, 2);
    assert.equal(c.stderr(), `error: cannot serve the inspector on 127.0.0.1:${port}: port ${port} on 127.0.0.1 is in use; choose another port, or 0 for any free one\n`);
    assert.doesNotMatch(c.stdout(), /workers:/);
  } finally {
    await new Promise<void>((ok) => busy.close(() => ok()));
  }
});
