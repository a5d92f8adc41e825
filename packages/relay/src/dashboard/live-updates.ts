// Server-sent events: every open dashboard gets the fleet state once a
// second, built once per tick whatever the number of viewers. A page whose
// session expires is sent `logout` and closed. The tick runs only while a
// page is open.

import type http from 'node:http';
import type { Logger } from 'pino';
import type { DashboardState } from './fleet-state.js';

export class LiveUpdates {
  private readonly subscribers = new Set<{ res: http.ServerResponse; exp: number }>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly snapshot: (maxAgeMs: number) => Promise<DashboardState>,
    private readonly log: Logger,
    private readonly tickMs: number,
  ) {}

  get viewers(): number {
    return this.subscribers.size;
  }

  /** Answers with the event stream; `exp` is when the viewer's session ends. */
  open(res: http.ServerResponse, exp: number): boolean {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
      connection: 'keep-alive',
    });
    res.write('retry: 2000\n\n');
    const sub = { res, exp };
    this.subscribers.add(sub);
    res.once('close', () => {
      this.subscribers.delete(sub);
      if (this.subscribers.size === 0 && this.timer) {
        clearInterval(this.timer);
        this.timer = null;
      }
    });
    if (!this.timer) {
      this.timer = setInterval(() => void this.broadcast(), this.tickMs);
      this.timer.unref();
    }
    void this.snapshot(250).then(
      (s) => {
        if (!res.writableEnded && !res.destroyed) res.write(frame(s));
      },
      () => {},
    );
    return true;
  }

  /** Pushes a fresh state now (after an action, so every open page sees it at once). */
  async broadcast(): Promise<void> {
    if (this.subscribers.size === 0) return;
    let state: DashboardState;
    try {
      state = await this.snapshot(0);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'dashboard snapshot failed');
      return;
    }
    const text = frame(state);
    const now = Date.now();
    for (const s of this.subscribers) {
      if (s.res.writableEnded || s.res.destroyed) {
        this.subscribers.delete(s);
        continue;
      }
      if (s.exp <= now) {
        this.subscribers.delete(s);
        s.res.end('event: logout\ndata: {}\n\n');
        continue;
      }
      s.res.write(text);
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const s of this.subscribers) s.res.end();
    this.subscribers.clear();
  }
}

function frame(s: DashboardState): string {
  return `event: state\ndata: ${JSON.stringify(s)}\n\n`;
}
