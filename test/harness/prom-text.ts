// A strict reader of the Prometheus text exposition format (0.0.4), for tests:
// every line must be a HELP, TYPE, comment or sample line of the grammar;
// families are contiguous with TYPE before their samples; sample names fit
// their family's type; no series repeats; histograms are cumulative with a
// +Inf bucket equal to _count. Throws with the line number on any violation.

export type PromType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface PromFamily {
  name: string;
  type: PromType;
  help?: string;
  samples: PromSample[];
}

const METRIC = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const FLOAT = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

/** Values are what Go's strconv.ParseFloat accepts (the format's rule): NaN and ±Inf in any case. */
function parseValue(s: string, where: string): number {
  if (/^[+]?inf(inity)?$/i.test(s)) return Infinity;
  if (/^-inf(inity)?$/i.test(s)) return -Infinity;
  if (/^nan$/i.test(s)) return NaN;
  if (!FLOAT.test(s)) throw new Error(`${where}: bad value ${JSON.stringify(s)}`);
  return Number(s);
}

/** Parses `{a="x",b="y"}` starting at s[i] === '{'; returns labels and the index after '}'. */
function parseLabels(s: string, i: number, where: string): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  i++; // {
  for (;;) {
    if (s[i] === '}') return { labels, end: i + 1 };
    const eq = s.indexOf('=', i);
    if (eq === -1) throw new Error(`${where}: label without '='`);
    const name = s.slice(i, eq);
    if (!LABEL.test(name)) throw new Error(`${where}: bad label name ${JSON.stringify(name)}`);
    if (name in labels) throw new Error(`${where}: label ${name} given twice`);
    if (s[eq + 1] !== '"') throw new Error(`${where}: label value of ${name} is not quoted`);
    let j = eq + 2;
    let v = '';
    for (;;) {
      const c = s[j];
      if (c === undefined) throw new Error(`${where}: unterminated label value`);
      if (c === '"') break;
      if (c === '\\') {
        const n = s[j + 1];
        if (n === '\\') v += '\\';
        else if (n === '"') v += '"';
        else if (n === 'n') v += '\n';
        else throw new Error(`${where}: bad escape \\${n ?? ''} in label value`);
        j += 2;
        continue;
      }
      v += c;
      j++;
    }
    labels[name] = v;
    i = j + 1;
    if (s[i] === ',') i++;
    else if (s[i] !== '}') throw new Error(`${where}: expected ',' or '}' after label ${name}`);
  }
}

const SUFFIXES: Record<PromType, string[]> = {
  counter: ['', '_total', '_created'],
  gauge: [''],
  histogram: ['_bucket', '_sum', '_count', '_created'],
  summary: ['', '_sum', '_count', '_created'],
  untyped: [''],
};

export function parsePromText(text: string): Map<string, PromFamily> {
  if (text.length > 0 && !text.endsWith('\n')) throw new Error('exposition does not end with a newline');
  const families = new Map<string, PromFamily>();
  const finished = new Set<string>();
  const seriesSeen = new Set<string>();
  let current: PromFamily | null = null;
  const lines = text.split('\n');
  lines.pop();
  const open = (name: string, where: string): PromFamily => {
    if (current && current.name === name) return current;
    if (current) finished.add(current.name);
    if (finished.has(name)) throw new Error(`${where}: family ${name} is not contiguous`);
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, type: 'untyped', samples: [] }));
    current = f;
    return f;
  };
  lines.forEach((line, n) => {
    const where = `line ${n + 1} (${JSON.stringify(line.slice(0, 80))})`;
    if (line === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (!m) {
        if (/^# (HELP|TYPE)\b/.test(line)) throw new Error(`${where}: malformed ${line.slice(2, 6)} line`);
        return; // plain comment
      }
      const [, kind, name, rest] = m as unknown as [string, string, string, string | undefined];
      if (!METRIC.test(name)) throw new Error(`${where}: bad metric name ${name}`);
      const f = open(name, where);
      if (kind === 'HELP') {
        if (f.help !== undefined) throw new Error(`${where}: second HELP for ${name}`);
        f.help = rest ?? '';
      } else {
        if (f.samples.length > 0) throw new Error(`${where}: TYPE after samples of ${name}`);
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest ?? '')) throw new Error(`${where}: bad type ${rest}`);
        f.type = rest as PromType;
      }
      return;
    }
    const nameEnd = line.search(/[{ ]/);
    if (nameEnd <= 0) throw new Error(`${where}: not a sample line`);
    const name = line.slice(0, nameEnd);
    if (!METRIC.test(name)) throw new Error(`${where}: bad metric name ${name}`);
    let i = nameEnd;
    let labels: Record<string, string> = {};
    if (line[i] === '{') {
      const r = parseLabels(line, i, where);
      labels = r.labels;
      i = r.end;
    }
    if (line[i] !== ' ') throw new Error(`${where}: expected a space before the value`);
    const parts = line.slice(i + 1).split(' ');
    if (parts.length < 1 || parts.length > 2 || parts[0] === '') throw new Error(`${where}: expected VALUE [TIMESTAMP]`);
    const value = parseValue(parts[0]!, where);
    if (parts[1] !== undefined && !/^-?\d+$/.test(parts[1])) throw new Error(`${where}: bad timestamp`);
    // The family: the current one if the name fits it, else a new untyped one.
    let fam: PromFamily | null = current;
    const fits = (f: PromFamily) => SUFFIXES[f.type].some((s) => name === f.name + s);
    if (!fam || !fits(fam)) fam = open(name, where);
    if (!fits(fam)) throw new Error(`${where}: sample ${name} does not belong to ${fam.type} ${fam.name}`);
    if (fam.type === 'histogram' && name.endsWith('_bucket') && labels.le === undefined) throw new Error(`${where}: histogram bucket without le`);
    if (fam.type === 'counter' && value < 0) throw new Error(`${where}: negative counter`);
    const key = name + JSON.stringify(Object.entries(labels).sort());
    if (seriesSeen.has(key)) throw new Error(`${where}: series repeated`);
    seriesSeen.add(key);
    fam.samples.push({ name, labels, value });
  });
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return families;
}

function checkHistogram(f: PromFamily): void {
  const groups = new Map<string, { buckets: Array<[number, number]>; count?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const g = groups.get(key) ?? { buckets: [] };
    groups.set(key, g);
    if (s.name.endsWith('_bucket')) g.buckets.push([le === '+Inf' ? Infinity : Number(le), s.value]);
    else if (s.name.endsWith('_count')) g.count = s.value;
  }
  for (const [key, g] of groups) {
    for (let i = 1; i < g.buckets.length; i++) {
      if (!(g.buckets[i]![0] > g.buckets[i - 1]![0])) throw new Error(`${f.name}${key}: bucket bounds not increasing`);
      if (g.buckets[i]![1] < g.buckets[i - 1]![1]) throw new Error(`${f.name}${key}: buckets not cumulative`);
    }
    const inf = g.buckets[g.buckets.length - 1];
    if (!inf || inf[0] !== Infinity) throw new Error(`${f.name}${key}: no +Inf bucket`);
    if (g.count !== inf[1]) throw new Error(`${f.name}${key}: +Inf bucket ${inf[1]} != _count ${g.count}`);
  }
}

/** Sum of a family's samples named `sample` whose labels include `match`. */
export function sumOf(fams: Map<string, PromFamily>, family: string, match: Record<string, string> = {}, sample = family): number {
  const f = fams.get(family);
  if (!f) return 0;
  let n = 0;
  for (const s of f.samples) {
    if (s.name !== sample) continue;
    if (Object.entries(match).every(([k, v]) => s.labels[k] === v)) n += s.value;
  }
  return n;
}
