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
export function backoffCeiling(attempt: number, options: BackoffOptions = {}): number {
  const initial = options.initialMs ?? 500;
  const max = options.maxMs ?? 30_000;
  // 2^attempt overflows to Infinity for huge attempts; min() keeps it bounded.
  return Math.min(max, initial * Math.pow(2, Math.max(0, attempt)));
}

/**
 * The delay before attempt `attempt`: `random() · ceiling`, so always
 * within `[0, backoffCeiling(attempt)]`.
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  return Math.floor(random() * backoffCeiling(attempt, options));
}
