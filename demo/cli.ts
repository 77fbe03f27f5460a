/** Command-line options of the demo (`npm start -- --help`). */
import { availableParallelism } from "node:os";
import { parseSeed } from "./prng.js";

export interface DemoOptions {
  workers: number;
  seconds: number;
  size: number;
  seed: number;
  /** The seed was given on the command line (otherwise it was drawn at random). */
  seedGiven: boolean;
  help: boolean;
  /** Serve the inspector page while the demo runs (--web); then --seconds defaults to no limit. */
  web: boolean;
  /** The inspector's port (0: any free one). */
  port: number;
}

/** Largest heap shmalloc accepts (MAX_HEAP_SIZE): addresses stay positive 32-bit integers. */
const MAX_SIZE = 2 ** 31 - 4096;
/** One CPU slot per worker plus the main thread; shmalloc allows up to 1024 slots. */
export const MAX_WORKERS = 256;

export function defaultWorkers(): number {
  return Math.max(2, availableParallelism());
}

export const USAGE = `Usage: npm start -- [options]      (or: node dist/demo/main.js [options])

Runs a concurrent hash table on one shmalloc heap: worker threads insert, look up, replace,
delete and hand entries to each other; readers walk the buckets inside RCU read sections;
removed entries are freed with kfreeRcu. A live view shows the allocator's state while it runs.
At the end the table is emptied, the heap shrunk and validated, and every page accounted for.

Options:
  --workers N    worker threads (default: the number of cores, at least 2; now ${defaultWorkers()})
  --seconds S    how long the workers run, in seconds, fractions allowed (default 10)
  --size SIZE    heap size: bytes, or a number with a unit k/m/g (KiB/MiB/GiB; "64m", "256MiB",
                 "1g", "67108864"); default 64m, at most 2047m. Small heaps put the allocator under
                 memory pressure: failed allocations are counted, not fatal.
  --seed X       seed of the workload's random generator: a number (decimal or 0x-hex) or any
                 text (hashed); default random. Printed at start so that a run can be repeated.
  --web          serve the live inspector on http://127.0.0.1 and print its URL (npm run inspect);
                 the demo then runs until Ctrl-C unless --seconds is given
  --port N       the inspector's port (default 0: any free one)
  --help, -h     show this help

Exit status: 0 when the run ended with validate() passing and every page free; 1 when a check
failed (a value's signature mismatch, a worker error, a leak, validate() throwing); 2 for bad
options.`;

/** Parse a size: "4096", "64m", "64MiB", "64MB", "1g", "512k" (units are binary). */
export function parseSize(text: string): number {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:([kmg])(?:i?b)?|b)?\s*$/i.exec(text);
  if (m === null) throw new Error(`--size: cannot read "${text}" (try 64m, 256MiB or a number of bytes)`);
  const unit = (m[2] ?? "").toLowerCase();
  const mul = unit === "k" ? 1024 : unit === "m" ? 1024 ** 2 : unit === "g" ? 1024 ** 3 : 1;
  const bytes = Math.round(Number(m[1]) * mul);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new Error(`--size: "${text}" is not a positive size`);
  if (bytes > MAX_SIZE) throw new Error(`--size: ${text} is larger than the largest heap, ${MAX_SIZE} bytes (2 GiB - 4 KiB)`);
  return bytes;
}

export function parseArgs(argv: readonly string[]): DemoOptions {
  const o: DemoOptions = { workers: defaultWorkers(), seconds: 10, size: 64 << 20, seed: 0, seedGiven: false, help: false, web: false, port: 0 };
  let secondsGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--help" || arg === "-h") {
      o.help = true;
      continue;
    }
    if (arg === "--web") {
      o.web = true;
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    if (name !== "--workers" && name !== "--seconds" && name !== "--size" && name !== "--seed" && name !== "--port") {
      throw new Error(`unknown option "${arg}"`);
    }
    let value: string;
    if (eq > 0 && arg.startsWith("--")) value = arg.slice(eq + 1);
    else {
      const next = argv[i + 1];
      if (next === undefined) throw new Error(`${name} needs a value`);
      value = next;
      i++;
    }
    switch (name) {
      case "--workers": {
        const n = Number(value);
        if (!/^[0-9]+$/.test(value.trim()) || n < 1 || n > MAX_WORKERS) throw new Error(`--workers: "${value}" is not a whole number in 1..${MAX_WORKERS}`);
        o.workers = n;
        break;
      }
      case "--seconds": {
        const s = Number(value);
        if (value.trim() === "" || !Number.isFinite(s) || s <= 0 || s > 86400) throw new Error(`--seconds: "${value}" is not a number of seconds in (0, 86400]`);
        o.seconds = s;
        secondsGiven = true;
        break;
      }
      case "--size":
        o.size = parseSize(value);
        break;
      case "--seed":
        if (value.trim() === "") throw new Error("--seed needs a value");
        o.seed = parseSeed(value);
        o.seedGiven = true;
        break;
      case "--port": {
        const n = Number(value);
        if (!/^[0-9]+$/.test(value.trim()) || n > 65535) throw new Error(`--port: "${value}" is not a port number in 0..65535`);
        o.port = n;
        break;
      }
    }
  }
  if (o.web && !secondsGiven) o.seconds = Infinity;
  return o;
}
