import { createHmac, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import type { Context, Middleware } from 'koa';
import type { Logger } from 'pino';
import { ConfigError } from '../config/load-config.ts';
import { VolregError } from '../domain/errors.ts';
import { OffThreadPasswords } from '../workers/off-thread-passwords.ts';
import type { RouteAccess } from './router.ts';
import { isAccessDirective, parseAccessRules, type AccessPolicy, type Permission } from '../domain/access-rules.ts';

/**
 * HTTP Basic authentication from an htpasswd file of bcrypt entries (`htpasswd -B`).
 *
 * Two steps: `authenticate` (middleware) checks the credentials of every /v2 and /api/v1 request,
 * including paths no route owns, and `authorize` (the router hook, which knows the repository
 * and action from `ctx.state.access`) decides what the user may do, by the `#volreg` rules of the
 * same file (domain/access-rules.ts), before any handler looks at the repository: a refusal
 * never tells whether the repository exists. /healthz, /readyz and /metrics stay open.
 */

export const REALM = 'volreg';
const PROTECTED = /^\/(v2|api\/v1)(\/|$)/;
// cost 04-31, the range bcrypt defines: another cost matches no password, ever
const BCRYPT = /^\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/;
const CACHE_LIMIT = 1000;

export type Users = ReadonlyMap<string, string>;

/** The users of an htpasswd file and the access rules it holds. */
export interface AuthFile {
  users: Users;
  policy: AccessPolicy;
}

/** What the request's user may do, for handlers that look at a second repository or at a tag's state. */
export interface Permissions {
  may(permission: Permission, repository: string): boolean;
}

declare module 'koa' {
  interface DefaultState {
    /** the authenticated user, when authentication is on */
    user?: string;
    /** the user's permissions, when authentication is on (absent: everything is allowed) */
    permissions?: Permissions;
  }
}

/**
 * Reads an htpasswd file: `user:bcrypt-hash` lines, `#volreg` access rules, comments and blank
 * lines; anything else is a configuration error naming its line.
 */
export async function loadHtpasswd(path: string): Promise<AuthFile> {
  const text = await readFile(path, 'utf8');
  const users = new Map<string, string>();
  const problems: string[] = [];
  const directives: Array<{ line: number; text: string }> = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (isAccessDirective(line)) {
      directives.push({ line: i + 1, text: line });
      return;
    }
    if (line.trim() === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const user = colon > 0 ? line.slice(0, colon) : '';
    const hash = colon > 0 ? line.slice(colon + 1).trim() : '';
    if (!user) {
      problems.push(`VOLREG_AUTH_FILE: line ${i + 1}: not a user:hash entry`);
    } else if (!BCRYPT.test(hash)) {
      problems.push(`VOLREG_AUTH_FILE: line ${i + 1} (user ${JSON.stringify(user)}): only bcrypt entries are supported (create them with htpasswd -B)`);
    } else if (users.has(user)) {
      problems.push(`VOLREG_AUTH_FILE: line ${i + 1}: user ${JSON.stringify(user)} appears twice`);
    } else {
      users.set(user, hash);
    }
  });
  const rules = parseAccessRules(directives);
  problems.push(...rules.problems.map((p) => `VOLREG_AUTH_FILE: ${p}`));
  problems.sort((a, b) => lineOf(a) - lineOf(b));
  if (problems.length > 0) throw new ConfigError(problems);
  if (users.size === 0) throw new ConfigError(['VOLREG_AUTH_FILE: the file has no users; unset the variable to run without authentication']);
  return { users, policy: rules.policy };
}

function lineOf(problem: string): number {
  return Number(/line (\d+)/.exec(problem)?.[1] ?? 0);
}

export interface BasicAuth {
  authenticate: Middleware;
  authorize: (ctx: Context, access: RouteAccess) => Promise<void>;
  /** takes the users and rules of the file read again (SIGHUP: RunningServer.reloadAuth) */
  replace: (file: AuthFile) => void;
  /** stops the password-checking thread */
  close: () => Promise<void>;
}

function challenge(message: string): VolregError {
  return new VolregError('UNAUTHORIZED', message, undefined, { 'WWW-Authenticate': `Basic realm="${REALM}"` });
}

/** 403 DENIED naming the action and repository, the same whether the repository exists or not. */
export function permissionDenied(permission: Permission, repository: string): VolregError {
  return new VolregError('DENIED', `permission denied: ${permission} on repository ${repository}`, { action: permission, repository });
}

/**
 * Which permission a request needs beyond its route's: a PUT with If-Match (a manifest or a
 * snapshot) replaces what the tag holds, so it asks for overwrite as well as push. A PUT without
 * it by a user who may not overwrite is held to create-only by the handler, in the tag's write.
 */
function extraPermission(ctx: Context, access: RouteAccess): Permission | null {
  const replacing = ctx.method === 'PUT' && (access.routeId === 'manifest' || access.routeId === 'volumeTag') && ctx.get('If-Match').trim() !== '';
  return replacing ? 'overwrite' : null;
}

export function basicAuth(file: AuthFile, logger: Logger, passwords = new OffThreadPasswords()): BasicAuth {
  let { users, policy } = file;
  // bcrypt is slow on purpose (tens of ms), and runs on its own thread (off-thread-passwords.ts);
  // a chunked push sends many requests with the same credentials, so successful checks are
  // remembered, keyed by a keyed hash of user:password.
  const key = randomBytes(32);
  const verified = new Map<string, string>();
  const fingerprint = (user: string, password: string): string => createHmac('sha256', key).update(`${user}\0${password}`).digest('hex');
  // an unknown user is checked against a real user's hash too, so the time of a refusal does
  // not tell which user names exist
  let decoy = users.values().next().value as string;

  // Identical checks under way are shared (a client's parallel first requests cost one), and a
  // shared check is dropped only once every request waiting for it has gone.
  const pending = new Map<string, { result: Promise<boolean>; waiting: number; gone: AbortController }>();
  function compareOnce(fp: string, password: string, hash: string, client: string, res: ServerResponse): Promise<boolean> {
    let entry = pending.get(fp);
    if (!entry) {
      const gone = new AbortController();
      const result = passwords.compare(password, hash, { client, signal: gone.signal }).finally(() => pending.delete(fp));
      entry = { result, waiting: 0, gone };
      pending.set(fp, entry);
    }
    const shared = entry;
    shared.waiting++;
    const leave = (): void => {
      if (--shared.waiting === 0) shared.gone.abort();
    };
    res.once('close', leave);
    return shared.result.finally(() => res.off('close', leave));
  }

  async function check(user: string, password: string, client: string, res: ServerResponse): Promise<boolean> {
    const hash = users.get(user);
    const fp = fingerprint(user, password);
    if (hash === undefined) {
      await compareOnce(fp, password, decoy, client, res);
      return false;
    }
    if (verified.get(fp) === hash) return true;
    if (!(await compareOnce(fp, password, hash, client, res))) return false;
    if (verified.size >= CACHE_LIMIT) verified.delete(verified.keys().next().value as string);
    verified.set(fp, hash);
    return true;
  }

  const authenticate: Middleware = async (ctx, next) => {
    if (!PROTECTED.test(ctx.path)) return next();
    const header = ctx.get('Authorization');
    const m = /^Basic +([A-Za-z0-9+/=]+) *$/i.exec(header);
    if (!m) throw challenge('authentication required');
    const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const user = colon >= 0 ? decoded.slice(0, colon) : '';
    const password = colon >= 0 ? decoded.slice(colon + 1) : '';
    // `Basic Og==` (":") is what skopeo sends when it has no credentials: none were given
    if (!user && !password) throw challenge('authentication required');
    // checks take turns by client address; one whose client has gone is not run
    if (!user || !(await check(user, password, ctx.ip, ctx.res))) {
      logger.info({ requestId: ctx.state.requestId, user: user.slice(0, 64) || undefined }, 'authentication failed');
      throw challenge('invalid username or password');
    }
    ctx.state.user = user;
    return next();
  };

  // Decided from the route alone, before the handler reads anything: `catalog` routes filter
  // their listing by `pull` (ctx.state.permissions) instead.
  const authorize = async (ctx: Context, access: RouteAccess): Promise<void> => {
    const user = ctx.state.user;
    if (!user) throw challenge('authentication required');
    const rules = policy; // the rules this request started under, even if a reload comes meanwhile
    const permissions: Permissions = { may: (permission, repository) => rules.allows(user, permission, repository) };
    ctx.state.permissions = permissions;
    if (access.repository === null || access.action === null || access.action === 'catalog') return;
    for (const needed of [access.action, extraPermission(ctx, access)]) {
      if (needed !== null && !permissions.may(needed, access.repository)) {
        logger.info({ requestId: ctx.state.requestId, user, action: needed, repository: access.repository }, 'permission denied');
        throw permissionDenied(needed, access.repository);
      }
    }
  };

  const replace = (next: AuthFile): void => {
    // A file without rules grants everyone everything: fine at start (as before rules existed),
    // but a reload must not lift the rules in force because they went missing (`htpasswd -c`,
    // a file caught half-written)
    if (policy.restricted && !next.policy.restricted) {
      throw new ConfigError(['VOLREG_AUTH_FILE: the file has no #volreg rule any more, which would let every user do everything; restart volreg to run so, or write "#volreg allow * ** all"']);
    }
    users = next.users;
    policy = next.policy;
    decoy = users.values().next().value as string;
    // a password changed or a user removed must not stay accepted from memory
    verified.clear();
  };

  return { authenticate, authorize, replace, close: () => passwords.close() };
}
