import { Counter, Gauge, type Registry } from 'prom-client';

/**
 * The two shapes nearly every relay metric has: its value is kept elsewhere
 * as plain numbers (the request path never touches a label object) and
 * prom-client reads it at scrape time. Declared through these, each metric
 * is its name, its help and where its value comes from.
 */

/** A gauge read at scrape time; `undefined` leaves it absent (e.g. no certificate without TLS). */
export function scrapeGauge(registry: Registry, name: string, help: string, read: () => number | undefined): void {
  new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      const v = read();
      if (v !== undefined) this.set(v);
    },
  });
}

/**
 * A counter whose totals are read at scrape time: one number, or one per
 * value of `label` (`read` gives [label value, total] pairs).
 */
export function scrapeCounter(registry: Registry, name: string, help: string, read: () => number): void;
export function scrapeCounter(registry: Registry, name: string, help: string, label: string, read: () => Iterable<readonly [string, number]>): void;
export function scrapeCounter(
  registry: Registry,
  name: string,
  help: string,
  labelOrRead: string | (() => number),
  byLabel?: () => Iterable<readonly [string, number]>,
): void {
  const label = typeof labelOrRead === 'string' ? labelOrRead : undefined;
  new Counter({
    name,
    help,
    labelNames: label ? [label] : [],
    registers: [registry],
    collect() {
      this.reset();
      if (typeof labelOrRead === 'function') {
        this.inc(labelOrRead());
        return;
      }
      for (const [value, n] of byLabel!()) this.inc({ [label!]: value }, n);
    },
  });
}
