/**
 * A volume's /api/v1 addresses end in `/tags`, `/tags/<tag>` and `/tags/<tag>/content` (and
 * the like). For a name whose last component is `tags`, `<name>/tags` is also the address of
 * the snapshot `<name without /tags>:tags`, and the two can not be told apart. Snapshots are
 * not taken under such a name; a /v2 repository may still have one, and /api/v1 does not list it.
 */
export function volumeNameProblem(name: string): string | null {
  return name.endsWith('/tags') ? 'a volume name can not end in a component named "tags": its /api/v1 addresses would also be those of another volume\'s snapshot' : null;
}
