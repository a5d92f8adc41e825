import type { LimitHits } from '../relay-limits.js';

/**
 * Ceiling on connector registrations in progress (from the upgrade request
 * to `registered`, or until the socket closes). The credential check and the
 * store writes of a registration cost the relay real work: after a relay of
 * the fleet dies, its connectors all dial the survivors at once, and a relay
 * that accepted every upgrade would time most of them out (each connector
 * gives up after 10 s) and register none in time. Past the ceiling an
 * upgrade is answered 503 with a jittered Retry-After, so the connectors
 * come back spread out while the relay finishes what it accepted.
 */
export class RegistrationGate {
  private pending = 0;

  constructor(
    /** 0 turns the ceiling off. */
    private readonly max: number,
    private readonly hits: LimitHits,
    private readonly random: () => number = Math.random,
  ) {}

  get inProgress(): number {
    return this.pending;
  }

  /**
   * A slot for one registration, or the seconds to put in Retry-After.
   * The release is idempotent: call it on every way out (registered,
   * refused, socket closed).
   */
  enter(): { release: () => void } | { retryAfterSeconds: number } {
    if (this.max > 0 && this.pending >= this.max) {
      this.hits.hit('pending_registrations');
      // 1–4 s: the herd that was refused together does not come back together.
      return { retryAfterSeconds: 1 + Math.floor(this.random() * 4) };
    }
    this.pending++;
    let held = true;
    return {
      release: () => {
        if (!held) return;
        held = false;
        this.pending--;
      },
    };
  }
}
