import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

/**
 * The `volreg` command the tests spawn. Through bin/volreg.js every run compiles the sources
 * with tsx first (about a second of CPU per spawn, several under load, and the e2e tests spawn
 * hundreds); `npm test` therefore compiles them once, to dist-test/ (`npm run build:test-cli`),
 * and the tests run dist-test/src/cli/main.js with plain node. Not dist/: `npm start`, which a
 * test runs, rewrites dist/ in place while other test files would be running it.
 *
 * A stale build is never tested: dist-test/ is used only when it holds exactly one .js for each
 * .ts of src/ and migrations/, none older than its source (a source edited, added or removed
 * since the build); otherwise the tests run bin/volreg.js, as an operator's `npx volreg` does,
 * and say so once on stderr.
 */

/** `packageBin` (bin/volreg.js) is what runs when dist-test/ is stale */
export function chooseCli(repoRoot: string, packageBin: string): { bin: string; stale?: string } {
  const built = join(repoRoot, 'dist-test');
  const stale = whyStale(repoRoot, built);
  return stale ? { bin: packageBin, stale } : { bin: join(built, 'src', 'cli', 'main.js') };
}

function whyStale(repoRoot: string, built: string): string | undefined {
  for (const dir of ['src', 'migrations']) {
    const sources = filesUnder(join(repoRoot, dir), '.ts');
    const outputs = filesUnder(join(built, dir), '.js');
    if (!outputs) return `${relative(repoRoot, built)}/ is not built`;
    for (const [rel, mtime] of sources ?? []) {
      const out = outputs.get(rel.replace(/\.ts$/, '.js'));
      if (out === undefined) return `${dir}/${rel} is not in ${relative(repoRoot, built)}/`;
      if (out < mtime) return `${dir}/${rel} changed since ${relative(repoRoot, built)}/ was built`;
    }
    for (const rel of outputs.keys()) {
      if (!sources?.has(rel.replace(/\.js$/, '.ts'))) return `${relative(repoRoot, built)}/${dir}/${rel} has no source any more`;
    }
  }
  return undefined;
}

/** relative path -> mtime (ms) of every file ending in `ext` under `root`; undefined when there is no `root` */
function filesUnder(root: string, ext: string): Map<string, number> | undefined {
  const found = new Map<string, number>();
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, e.name);
      if (e.isDirectory()) walk(path);
      else if (e.name.endsWith(ext)) found.set(relative(root, path), statSync(path).mtimeMs);
    }
  };
  try {
    walk(root);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && found.size === 0) return undefined;
    throw err;
  }
  return found;
}
