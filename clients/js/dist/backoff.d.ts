/**
 * Reconnect delays: "full jitter" exponential backoff. Attempt `n`
 * (0-based) waits a uniformly random time in `[0, min(maxMs, initialMs·2ⁿ)]`,
 * which spreads a crowd of clients that lost the same server over the
 * whole window instead of reconnecting in waves.
 */
/** Bounds of the backoff, in milliseconds. */
export interface BackoffOptions {
    /** The ceiling of the first retry's delay. Default 500. */
    initialMs?: number;
    /** The largest delay ever used. Default 30 000. */
    maxMs?: number;
}
/** The ceiling of attempt `attempt`'s delay: `min(maxMs, initialMs·2^attempt)`. */
export declare function backoffCeiling(attempt: number, options?: BackoffOptions): number;
/**
 * The delay before attempt `attempt`: `random() · ceiling`, so always
 * within `[0, backoffCeiling(attempt)]`.
 */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;
