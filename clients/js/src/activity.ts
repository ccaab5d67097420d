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
export const INPUT_EVENTS = ["pointerdown", "pointermove", "keydown", "wheel", "touchstart", "focus"] as const;

/** Reports a browser's activity on a client's socket. */
export class ActivityTracker {
  #client: PresenceClient;
  #options: ActivityOptions;
  #now: () => number;
  #idle = false;
  #lastInput: number;
  #lastReport = Number.NEGATIVE_INFINITY;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #cleanup: Array<() => void> = [];

  constructor(client: PresenceClient, options: ActivityOptions = {}) {
    this.#client = client;
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#lastInput = this.#now();
  }

  /** Whether the tracker has reported the person idle. */
  get idle(): boolean {
    return this.#idle;
  }

  /** Starts listening. */
  start(): void {
    const target = this.#options.target ?? (globalThis as unknown as EventTarget);
    const doc = this.#options.document ?? (globalThis as { document?: Document }).document;
    const onInput = () => this.input();
    for (const name of INPUT_EVENTS) {
      target.addEventListener(name, onInput, { passive: true, capture: true });
      this.#cleanup.push(() => target.removeEventListener(name, onInput, { capture: true }));
    }
    if (doc) {
      const onVisibility = () => {
        if (doc.visibilityState === "visible") this.input();
      };
      doc.addEventListener("visibilitychange", onVisibility);
      this.#cleanup.push(() => doc.removeEventListener("visibilitychange", onVisibility));
    }
    if (this.#options.byeOnPageHide ?? true) {
      const onPageHide = () => this.#client.close();
      target.addEventListener("pagehide", onPageHide);
      this.#cleanup.push(() => target.removeEventListener("pagehide", onPageHide));
    }
    // D1: a new connection starts online; an idle person says so again.
    this.#cleanup.push(
      this.#client.on("ready", () => {
        if (this.#idle) this.#client.sendEvent("idle");
        this.#arm();
      }),
    );
    this.#cleanup.push(this.#client.on("me", () => this.#arm()));
    this.#arm();
  }

  /** Stops listening. */
  stop(): void {
    for (const undo of this.#cleanup.splice(0)) undo();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Records input now (what every listened event calls). */
  input(): void {
    const now = this.#now();
    this.#lastInput = now;
    if (this.#idle) {
      this.#idle = false;
      this.#client.sendEvent("active");
      this.#lastReport = now;
      this.#arm();
    } else if (now - this.#lastReport >= (this.#options.activityIntervalMs ?? 30_000)) {
      this.#client.sendEvent("activity");
      this.#lastReport = now;
    }
  }

  #limitMs(): number | undefined {
    if (this.#options.idleTimeLimitMs !== undefined) return this.#options.idleTimeLimitMs;
    const me = this.#client.me;
    return me ? me.idle_time_limit * 1000 : undefined;
  }

  /** (Re)schedules the idle check for when the limit would be reached. */
  #arm(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    const limit = this.#limitMs();
    if (limit === undefined || this.#idle) return;
    const wait = Math.max(0, this.#lastInput + limit - this.#now());
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      const remaining = this.#lastInput + limit - this.#now();
      if (remaining > 0) {
        this.#arm();
        return;
      }
      this.#idle = true;
      this.#client.sendEvent("idle");
    }, wait);
  }
}
