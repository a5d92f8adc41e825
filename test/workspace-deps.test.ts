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
});
