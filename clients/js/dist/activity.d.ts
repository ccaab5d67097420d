/**
 * Browser activity tracking (D2, D5, D7): turns what the person does into
 * the device events of the protocol.
 *
 * - Input (pointer, keys, wheel, touch, focus) is reported as `activity`
 *   at most once per `activityIntervalMs`, which keeps the server's idle
 *   timer running.
 * - No input for the user's idle time limit (`me.idle_time_limit`, or
 *   `idleTimeLimitMs`) sends `idle`; the next input sends `active`. The
 *   server applies them only when the user's auto-away is on (D2).
 * - A tab that becomes visible again counts as input.
 * - An idle client re-reports `idle` after every reconnect, because a new
 *   connection starts `online` (D1).
 * - `pagehide` closes the client, which sends `bye`: the device goes
 *   offline at once rather than after the grace period (D7).
 */
import type { PresenceClient } from "./client.js";
/** What to watch and how often to report. */
export interface ActivityOptions {
    /** Where input events are listened for. Default `globalThis` (the window). */
    target?: EventTarget;
    /** The document whose `visibilitychange` is watched. Default `globalThis.document`. */
    document?: Document;
    /** Overrides the user's idle time limit, in milliseconds. */
    idleTimeLimitMs?: number;
    /** The least time between two `activity` reports. Default 30 000 ms. */
    activityIntervalMs?: number;
    /** Close the client (`bye`) on `pagehide`. Default true. */
    byeOnPageHide?: boolean;
    /** The clock, for tests. Default `Date.now`. */
    now?: () => number;
}
/** Input events that mean the person is there. */
export declare const INPUT_EVENTS: readonly ["pointerdown", "pointermove", "keydown", "wheel", "touchstart", "focus"];
/** Reports a browser's activity on a client's socket. */
export declare class ActivityTracker {
    #private;
    constructor(client: PresenceClient, options?: ActivityOptions);
    /** Whether the tracker has reported the person idle. */
    get idle(): boolean;
    /** Starts listening. */
    start(): void;
    /** Stops listening. */
    stop(): void;
    /** Records input now (what every listened event calls). */
    input(): void;
}
