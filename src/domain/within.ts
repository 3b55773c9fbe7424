/** What `within` answers when the promise did not settle in time. */
export const LATE = Symbol('late');

/**
 * `p`'s outcome if it settles within `ms`, else LATE (p goes on; await it again for its
 * outcome). For streams that gather pieces: what is gathered goes on when the next piece is slow.
 */
export function within<T>(p: Promise<T>, ms: number): Promise<T | typeof LATE> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<typeof LATE>((resolve) => {
    timer = setTimeout(resolve, ms, LATE);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
