import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

// Every workspace declares the packages its sources import: resolving one only
// through npm's hoisting works in this repo and breaks for anyone installing
// the workspace on its own.

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => path.join(e.parentPath, e.name));
}

/** The package a bare specifier names (`@scope/name/sub` → `@scope/name`). */
function packageOf(spec: string): string {
  const parts = spec.split('/');
  return spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

function importedPackages(dir: string): Set<string> {
  const out = new Set<string>();
  // Static imports/exports and dynamic import() with a literal specifier.
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)'([^']+)'/g;
  for (const file of sources(dir)) {
    for (const m of readFileSync(file, 'utf8').matchAll(re)) {
      const spec = m[1]!;
      if (spec.startsWith('.') || spec.startsWith('node:')) continue;
      out.add(packageOf(spec));
    }
  }
  return out;
}

describe('workspace dependencies', () => {
  for (const ws of readdirSync(path.join(root, 'packages'))) {
    it(`${ws}: every package imported by src/ is declared in its package.json`, () => {
      const pkg = JSON.parse(readFileSync(path.join(root, 'packages', ws, 'package.json'), 'utf8')) as { name: string; dependencies?: Record<string, string> };
      const declared = new Set(Object.keys(pkg.dependencies ?? {}));
      const missing = [...importedPackages(path.join(root, 'packages', ws, 'src'))].filter((p) => p !== pkg.name && !declared.has(p)).sort();
      expect(missing, `${pkg.name} imports undeclared packages`).toEqual([]);
    });
  }

  // Loaded by name at run time, not imported: ws loads bufferutil when present, pino loads its pretty transport by name.
  const LOADED_BY_NAME = new Set(['bufferutil', 'pino-pretty']);
  for (const ws of readdirSync(path.join(root, 'packages'))) {
    it(`${ws}: declares no dependency its src/ does not import (a stale one hides where a package is really used)`, () => {
      const pkg = JSON.parse(readFileSync(path.join(root, 'packages', ws, 'package.json'), 'utf8')) as { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> };
      const imported = importedPackages(path.join(root, 'packages', ws, 'src'));
      const declared = [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.optionalDependencies ?? {})];
      expect(declared.filter((d) => !imported.has(d) && !LOADED_BY_NAME.has(d)).sort()).toEqual([]);
    });
  }

  // A workspace missing from either list builds or installs only by accident
  // (through a sibling's reference or hoisting), and a fresh clone breaks.
  it('every workspace under packages/ is in the root workspaces and the tsconfig build', () => {
    const dirs = readdirSync(path.join(root, 'packages')).sort();
    const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { workspaces: string[] };
    expect([...pkg.workspaces].map((w) => w.replace(/^packages\//, '')).sort()).toEqual(dirs);
    const tsconfig = JSON.parse(readFileSync(path.join(root, 'tsconfig.json'), 'utf8')) as { references: { path: string }[] };
    const built = tsconfig.references.map((r) => r.path).filter((p) => p.startsWith('packages/')).map((p) => p.replace(/^packages\//, '').replace(/\/tsconfig\.build\.json$/, ''));
    expect(built.sort()).toEqual(dirs);
  });

  // The wire library is used by both ends and by tools; what a daemon needs
  // from its host (logging, systemd) lives in @tunnel/host.
  it('protocol depends on no logger and imports nothing from @tunnel/host', () => {
    const pkg = JSON.parse(readFileSync(path.join(root, 'packages', 'protocol', 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
    expect(Object.keys(pkg.dependencies ?? {}).filter((d) => /pino|@tunnel\/host/.test(d))).toEqual([]);
    expect([...importedPackages(path.join(root, 'packages', 'protocol', 'src'))].filter((d) => /pino|@tunnel\/host/.test(d))).toEqual([]);
  });
});
