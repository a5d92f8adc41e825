// PlainHistogram (the per-request duration histograms of relay and connector)
// must print on /metrics exactly what prom-client's own Histogram prints for
// the same observations: same bucket lines, cumulative counts, +Inf, _sum,
// _count, in the same place among the registry's other metrics.
import { describe, expect, it } from 'vitest';
import { Counter, Histogram, Registry, type Metric } from 'prom-client';
import { PlainHistogram } from '@tunnel/host';

const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
// On a bound (le is inclusive), between bounds, below the first, past the last, and zero.
const SAMPLES = [0, 0.0004, 0.001, 0.0011, 0.0025, 0.004, 0.05, 0.07, 0.3, 1, 2.5, 9.99, 30, 60, 61, 1e6];

function registries() {
  const theirs = new Registry();
  const ours = new Registry();
  new Counter({ name: 'before_total', help: 'a metric before', registers: [theirs, ours] }).inc(3);
  const h = new Histogram({ name: 'req_seconds', help: 'Time of a request.', buckets: BUCKETS, registers: [theirs] }).labels();
  const p = new PlainHistogram('req_seconds', 'Time of a request.', BUCKETS);
  ours.registerMetric(p as unknown as Metric);
  new Counter({ name: 'after_total', help: 'a metric after', registers: [theirs, ours] }).inc(1);
  return { theirs, ours, h, p };
}

describe('PlainHistogram', () => {
  it('prints what prom-client’s Histogram prints, before any observation and after many', async () => {
    const { theirs, ours, h, p } = registries();
    expect(await ours.metrics()).toBe(await theirs.metrics());
    for (const v of SAMPLES) {
      h.observe(v);
      p.observe(v);
    }
    const text = await ours.metrics();
    expect(text).toBe(await theirs.metrics());
    expect(text).toContain('req_seconds_bucket{le="0.001"} 3');
    expect(text).toContain('req_seconds_bucket{le="+Inf"} 16');
    expect(text).toContain('req_seconds_count 16');
  });

  it('as JSON too, and reset by the registry like the others', async () => {
    const { theirs, ours, h, p } = registries();
    for (const v of SAMPLES) {
      h.observe(v);
      p.observe(v);
    }
    // prom-client adds an empty exemplar field to each value; nothing here reads exemplars.
    const plain = (ms: Awaited<ReturnType<Registry['getMetricsAsJSON']>>) =>
      ms.map((m) => ({ ...m, values: m.values.map((v) => ({ labels: v.labels, value: v.value, metricName: (v as { metricName?: string }).metricName })) }));
    expect(plain(await ours.getMetricsAsJSON())).toEqual(plain(await theirs.getMetricsAsJSON()));
    ours.resetMetrics();
    theirs.resetMetrics();
    h.observe(0.2);
    p.observe(0.2);
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });

  it('a non-finite observation is dropped, not counted as +Inf', async () => {
    const p = new PlainHistogram('x_seconds', 'x', [1]);
    p.observe(Number.NaN);
    p.observe(Number.POSITIVE_INFINITY);
    expect(p.get().values.at(-1)!.value).toBe(0);
    expect(() => new PlainHistogram('y', 'y', [1, 1])).toThrow(/increase/);
  });
});
