import type { Context } from 'koa';
import type { Preconditions } from '../domain/preconditions.ts';

/**
 * The preconditions of a tag's write with the user's permissions added: a user who may not
 * overwrite in the repository writes create-only (domain/preconditions.ts), checked in the
 * tag's write itself, so a push racing another to a new tag cannot move it once written.
 */
export function withPermissions(preconditions: Preconditions, ctx: Context, repository: string): Preconditions {
  const permissions = ctx.state.permissions;
  if (permissions === undefined || permissions.may('overwrite', repository)) return preconditions;
  return { ...preconditions, createOnly: { repository } };
}
