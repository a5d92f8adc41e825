/**
 * A Prometheus histogram with no labels whose observe() is a bucket scan and
 * three additions on plain numbers. prom-client's Histogram validates and
 * hashes its labels on every observe, which cost 1–3% of a process's CPU when
 * the relay and the connector each observed once per request (`BENCH_PROFILE=1`).
 * It is registered on the process's prom-client Registry (registerMetric reads
 * name, help, type and get(); resetMetrics calls reset()), and get() returns
 * what prom-client's Histogram returns, so /metrics prints the same lines:
 * cumulative `_bucket{le="…"}`, `le="+Inf"`, `_sum`, `_count`.
 */
export class PlainHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  /** Per bucket, not cumulative; the last one is +Inf. */
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly upperBounds: readonly number[],
  ) {
    for (let i = 1; i < upperBounds.length; i++) {
      if (!(upperBounds[i]! > upperBounds[i - 1]!)) throw new RangeError(`${name}: bucket bounds must increase`);
    }
    this.counts = new Array<number>(upperBounds.length + 1).fill(0);
  }

  /** One observation (seconds, for the duration histograms); a non-finite value is dropped. */
  observe(value: number): void {
    if (!Number.isFinite(value)) return;
    const b = this.upperBounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }

  get(): { name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> } {
    const values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> = [];
    const bucket = `${this.name}_bucket`;
    let cumulative = 0;
    for (let i = 0; i < this.upperBounds.length; i++) {
      cumulative += this.counts[i]!;
      values.push({ labels: { le: this.upperBounds[i]! }, value: cumulative, metricName: bucket });
    }
    values.push({ labels: { le: '+Inf' }, value: this.count, metricName: bucket });
    values.push({ labels: {}, value: this.sum, metricName: `${this.name}_sum` });
    values.push({ labels: {}, value: this.count, metricName: `${this.name}_count` });
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}
