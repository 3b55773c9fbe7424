/**
 * Who may do what to which repository: the `#volreg` lines of the htpasswd file.
 *
 * They are comment lines to htpasswd, which copies them unchanged when it adds a user, changes a
 * password or deletes one, so the one file stays manageable with `htpasswd -B`:
 *
 *   #volreg group admins alice bob
 *   #volreg allow @admins ** pull,push,overwrite,delete
 *   #volreg allow web1 hosts/web1/** pull,push
 *   #volreg allow * shared/* pull
 *
 * Rules only grant (no rule denies), so their order does not matter. A file with no rule grants
 * every user everything, as before rules existed.
 */

export const PERMISSIONS = ['pull', 'push', 'overwrite', 'delete'] as const;
export type Permission = (typeof PERMISSIONS)[number];

const DIRECTIVE = /^#volreg(\s|$)/;
const NAME = /^[A-Za-z0-9._-]+$/;
// the repository grammar's characters, and * wildcards
const PATTERN = /^[a-z0-9._\-/*]+$/;

interface Rule {
  readonly users: ReadonlySet<string>;
  readonly groups: readonly string[];
  readonly everyone: boolean;
  readonly repository: RegExp;
  readonly permissions: ReadonlySet<Permission>;
}

export interface AccessPolicy {
  /** whether the file holds any rule; without one every user may do everything */
  readonly restricted: boolean;
  allows(user: string, permission: Permission, repository: string): boolean;
}

/** Whether an htpasswd line is a volreg directive rather than a comment. */
export function isAccessDirective(line: string): boolean {
  return DIRECTIVE.test(line);
}

/**
 * A repository pattern as a regular expression: `*` matches within one path component, `**`
 * across components (`hosts/web1/**` matches `hosts/web1/app` and `hosts/web1/a/b`, not
 * `hosts/web1` itself; `**` alone matches every repository).
 */
export function repositoryPattern(pattern: string): RegExp | null {
  if (!PATTERN.test(pattern) || /\*{3,}/.test(pattern) || pattern.startsWith('/') || pattern.endsWith('/') || pattern.includes('//')) return null;
  const source = pattern
    .split(/(\*\*|\*)/)
    .map((part) => (part === '**' ? '.+' : part === '*' ? '[^/]+' : part.replace(/[.\-]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}$`);
}

function parsePermissions(text: string): Set<Permission> | string {
  const out = new Set<Permission>();
  for (const word of text.split(',')) {
    if (word === 'all') PERMISSIONS.forEach((p) => out.add(p));
    else if ((PERMISSIONS as readonly string[]).includes(word)) out.add(word as Permission);
    else return `unknown action ${JSON.stringify(word)} (use ${PERMISSIONS.join(', ')} or all, separated by commas)`;
  }
  return out;
}

/**
 * Parses the directive lines (with their 1-based line numbers). Every problem is one message
 * naming its line; none means the policy is sound.
 */
export function parseAccessRules(lines: ReadonlyArray<{ line: number; text: string }>): { policy: AccessPolicy; problems: string[] } {
  const problems: string[] = [];
  const groups = new Map<string, Set<string>>();
  const groupLines = new Map<string, number>();
  const pending: Array<{ line: number; who: string[]; repository: RegExp; permissions: Set<Permission> }> = [];

  for (const { line, text } of lines) {
    const words = text.trim().split(/\s+/).slice(1);
    const problem = (message: string): void => void problems.push(`line ${line}: ${message}`);
    const verb = words[0];
    if (verb === 'group') {
      const [, name, ...members] = words;
      if (name === undefined || members.length === 0) problem('expected "#volreg group NAME USER..."');
      else if (!NAME.test(name)) problem(`group name ${JSON.stringify(name)} may hold only letters, digits, '.', '_' and '-'`);
      else if (groups.has(name)) problem(`group ${JSON.stringify(name)} is already defined on line ${groupLines.get(name)}`);
      else {
        groups.set(name, new Set(members));
        groupLines.set(name, line);
      }
    } else if (verb === 'allow') {
      if (words.length !== 4) {
        problem('expected "#volreg allow WHO REPOSITORY-PATTERN ACTIONS" (WHO: a user, @group or *, several separated by commas)');
        continue;
      }
      const [, who, pattern, actions] = words as [string, string, string, string];
      const repository = repositoryPattern(pattern);
      const permissions = parsePermissions(actions);
      if (repository === null) problem(`repository pattern ${JSON.stringify(pattern)} is not a repository name with * or ** in it (e.g. hosts/web1/**, team/*, **)`);
      else if (typeof permissions === 'string') problem(permissions);
      else pending.push({ line, who: who.split(','), repository, permissions });
    } else {
      problem(`unknown directive ${JSON.stringify(verb ?? '')} (expected "#volreg allow ..." or "#volreg group ...")`);
    }
  }

  const rules: Rule[] = [];
  for (const rule of pending) {
    const users = new Set<string>();
    const named: string[] = [];
    let everyone = false;
    for (const who of rule.who) {
      if (who === '*') everyone = true;
      else if (who.startsWith('@')) {
        if (groups.has(who.slice(1))) named.push(who.slice(1));
        else problems.push(`line ${rule.line}: group ${JSON.stringify(who.slice(1))} is not defined (#volreg group ${who.slice(1)} USER...)`);
      } else if (who !== '') users.add(who);
      else problems.push(`line ${rule.line}: empty name in the list of users`);
    }
    rules.push({ users, groups: named, everyone, repository: rule.repository, permissions: rule.permissions });
  }
  problems.sort((a, b) => Number(/\d+/.exec(a)![0]) - Number(/\d+/.exec(b)![0]));

  const restricted = lines.length > 0;
  const policy: AccessPolicy = {
    restricted,
    allows(user, permission, repository) {
      if (!restricted) return true;
      return rules.some(
        (r) =>
          r.permissions.has(permission) &&
          (r.everyone || r.users.has(user) || r.groups.some((g) => groups.get(g)!.has(user))) &&
          r.repository.test(repository),
      );
    },
  };
  return { policy, problems };
}
