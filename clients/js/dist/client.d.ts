/**
 * `PresenceClient`: one WebSocket to `presenced`, kept open.
 *
 * - It connects with a token or a token provider, and answers
 *   `notice {kind: "token_expiring"}` with `reauth` when it has a provider.
 * - It reconnects with full-jitter exponential backoff after every loss
 *   (`shutting_down` included), and after each `ready` resubscribes the
 *   users it watches and resyncs them into its {@link PresenceStore}. It
 *   does not reconnect after `replaced` (another connection of the same
 *   device took over) or after {@link PresenceClient.close}.
 * - Requests (`setStatus`, `useCustomStatus`, `subscribe`, `query`, …)
 *   carry a `ref` and return promises settled by the `ack`, `snapshot` or
 *   `error` with the same `ref`. A request made while the socket is down
 *   waits for the next `ready` (within `requestTimeoutMs`); one in flight
 *   when the socket drops is rejected with `connection_lost`, since only an
 *   `ack` proves a change was applied (R1).
 */
import { type BackoffOptions } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { PresenceError } from "./errors.js";
import { type DeviceEvent, type Limits, type NoticeKind, type Platform, type PresenceEntry, type PublicSettings, type Ready, type SelfState, type StatusChange } from "./protocol.js";
import { PresenceStore } from "./store.js";
/** A WebSocket constructor: the browser's, Node's, or any compatible one. */
export type WebSocketConstructor = new (url: string) => WebSocket;
/** How to reach the server and behave. */
export interface ClientOptions {
    /** The server's base URL: `http(s)://host:port` or `ws(s)://host:port`. */
    url: string;
    /** A fixed token. Either this or `tokenProvider`. */
    token?: string;
    /**
     * Called before every connection and on `token_expiring` (then sent as
     * `reauth`); return a fresh token for the same user.
     */
    tokenProvider?: () => string | Promise<string>;
    /** `web` (default), `desktop` or `mobile`. */
    platform?: Platform;
    /** Default: one id per browser, kept in `localStorage`. */
    deviceId?: string;
    /** Reconnect delays (full jitter). */
    backoff?: BackoffOptions;
    /** How long a request waits for its reply. Default 10 000 ms. */
    requestTimeoutMs?: number;
    /** Default: `globalThis.WebSocket` (Node 20 needs `--experimental-websocket`). */
    WebSocket?: WebSocketConstructor;
    /** Randomness of the backoff, for tests. Default `Math.random`. */
    random?: () => number;
}
/** Where the connection stands. */
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "replaced" | "closed";
/** Events of a client. */
export interface ClientEvents {
    /** Every `ready` (the first and each after a reconnect). */
    ready: Ready;
    /** The connection state changed. */
    state: ConnectionState;
    /** A watched user's presence changed (a newer version, W3). */
    presence: PresenceEntry;
    /** The user's own state changed. */
    me: SelfState;
    /** A `notice` arrived. */
    notice: {
        kind: NoticeKind;
        expires_at?: string;
    };
    /** An `error` that answers no request of this client. */
    error: PresenceError;
    /** The socket closed. */
    disconnect: {
        code: number;
        reason: string;
        willReconnect: boolean;
    };
    /** A reconnect is scheduled after `delayMs`. */
    reconnecting: {
        attempt: number;
        delayMs: number;
    };
}
/** A connection to `presenced`. */
export declare class PresenceClient extends Emitter<ClientEvents> {
    #private;
    /** Everything known about other users' presence. */
    readonly store: PresenceStore;
    /** The device id this client connects as. */
    readonly deviceId: string;
    /** The platform this client connects as. */
    readonly platform: Platform;
    constructor(options: ClientOptions);
    /** The connection state. */
    get state(): ConnectionState;
    /** The user's own state, from `ready` and own updates; `undefined` before the first `ready`. */
    get me(): SelfState | undefined;
    /** The workspace settings from the last `ready`. */
    get settings(): PublicSettings | undefined;
    /** The socket limits from the last `ready`. */
    get limits(): Limits | undefined;
    /** `false` while the presence cap has disabled real-time updates (X2). */
    get presenceActive(): boolean;
    /** The users this client watches (resubscribed after every reconnect). */
    get subscriptions(): string[];
    /**
     * Opens the connection; resolves with the first `ready`. Rejects only if
     * the client is closed or replaced before that; failed attempts are
     * retried with backoff meanwhile.
     */
    connect(): Promise<Ready>;
    /**
     * Says `bye` (the device is removed at once, D7), closes the socket and
     * stops reconnecting. Pending requests are rejected with `closed`.
     */
    close(): void;
    /** Sets the own status and/or text (T4, T6). Resolves on `ack`. */
    setStatus(change: StatusChange): Promise<void>;
    /** Selects an admin-defined custom status (C2). Resolves on `ack`. */
    useCustomStatus(id: string): Promise<void>;
    /** Reports a calendar event (K2). Resolves on `ack`. */
    calendar(eventId: string, busy: boolean): Promise<void>;
    /**
     * Watches `users` (kept across reconnects); resolves with their current
     * presence, which is also applied to the store.
     */
    subscribe(users: string[]): Promise<PresenceEntry[]>;
    /** Stops watching `users`. Resolves on `ack`. */
    unsubscribe(users: string[]): Promise<void>;
    /** Reads `users`' presence once; applied to the store as well. */
    query(users: string[]): Promise<PresenceEntry[]>;
    /**
     * Reports a device event (`activity`, `idle`, `active`, `lock`, …).
     * Fire-and-forget: dropped while disconnected (the server restarts a
     * device `online` on reconnect, D1).
     */
    sendEvent(event: DeviceEvent): void;
}
