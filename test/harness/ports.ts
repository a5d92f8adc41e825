import { createServer } from 'node:net';
import { readFileSync } from 'node:fs';

// A port picked with listen(0) and closed again comes from the kernel's
// ephemeral range, which every outgoing connection of every parallel test
// file also draws from: between the close and the moment the test binds it,
// a client socket (or another file's freePort) may take it. So ports handed
// out here come from below the ephemeral range, in a slice of their own per
// vitest worker; a bind probe still skips one some other program holds.

const FLOOR = 20_000;
/** Where the kernel starts handing out ephemeral ports (32768 on Linux by default). */
const CEILING = ephemeralStart();
const WORKERS = 8;

function ephemeralStart(): number {
  try {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (low && low > FLOOR + WORKERS * 100) return low;
  } catch {
    /* not Linux: the IANA dynamic range starts at 49152 */
  }
  return 49_152;
}

const slice = Math.floor((CEILING - FLOOR) / WORKERS);
const worker = (Number(process.env.VITEST_POOL_ID ?? process.env.VITEST_WORKER_ID ?? 1) - 1) % WORKERS;
const sliceStart = FLOOR + Math.max(0, worker) * slice;
// A random start within the slice: two vitest runs at once (rare, but a
// developer may run one file while the suite runs) seldom walk the same ports.
let next = Math.floor(Math.random() * slice);

function probe(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A TCP port on 127.0.0.1 that is free now and that no other test file of this run is handed. */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries < slice; tries++) {
    const port = sliceStart + (next++ % slice);
    if (await probe(port)) return port;
  }
  throw new Error(`freePort: no free port in ${sliceStart}-${sliceStart + slice - 1}`);
}
