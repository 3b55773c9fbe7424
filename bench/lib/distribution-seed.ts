/**
 * Test-fixture shortcut for distribution only: pushing 10,000 tags through its API takes about
 * two minutes on this machine (it writes several link files per tag), which is setup, not
 * what the tags/list scenario times. So a few tags are pushed through the API and the rest
 * are copies of the first tag's directory in distribution's own storage layout (the tag
 * directory is what its tags/list reads). The listing is then checked against the full
 * expected tag set, so a wrong layout fails the scenario instead of skewing it.
 */
import fs from 'node:fs/promises';
import path from 'node:path';

function tagsDir(dataDir: string, repo: string): string {
  return path.join(dataDir, 'registry', 'docker', 'registry', 'v2', 'repositories', repo, '_manifests', 'tags');
}

/** Copies `model` tag's directory to every tag in `names`; false if the layout is not there. */
export async function seedDistributionTags(dataDir: string, repo: string, model: string, names: readonly string[]): Promise<boolean> {
  const dir = tagsDir(dataDir, repo);
  const source = path.join(dir, model);
  try {
    await fs.access(path.join(source, 'current', 'link'));
  } catch {
    return false;
  }
  const batch = 64;
  for (let i = 0; i < names.length; i += batch) {
    await Promise.all(names.slice(i, i + batch).map((name) => fs.cp(source, path.join(dir, name), { recursive: true })));
  }
  return true;
}
