import type { ResourceLimits } from 'node:worker_threads';

/**
 * The V8 heap of volreg's quiet helper threads: the embedded engine's and the hashing one.
 *
 * Why: V8 gives every isolate a young generation of up to 48 MB, which a busy thread fills
 * and keeps resident. These threads keep little alive per request, so a small young
 * generation costs them a few more (cheap) scavenges and saves most of that memory: after
 * 6000 manifest PUTs and GETs the process peaked about 25 MB lower, at the same request rates
 * (bench/README.md). The archive inspection thread is left at V8's default: it allocates a
 * chunk for every piece of gunzip output, and a small young generation cost it about 4%.
 */
export const HELPER_THREAD_LIMITS: ResourceLimits = { maxYoungGenerationSizeMb: 12 };
