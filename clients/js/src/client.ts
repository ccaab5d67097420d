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

import { backoffDelay, type BackoffOptions } from "./backoff.js";
import { persistentDeviceId } from "./device.js";
import { Emitter } from "./emitter.js";
import { ClientErrorCode, PresenceError } from "./errors.js";
import {
  CloseCode,
  type DeviceEvent,
  type Limits,
  type NoticeKind,
  type Platform,
  type PresenceEntry,
  type PublicSettings,
  type Ready,
  type SelfState,
  type ServerMessage,
  type StatusChange,
} from "./protocol.js";
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
  notice: { kind: NoticeKind; expires_at?: string };
  /** An `error` that answers no request of this client. */
  error: PresenceError;
  /** The socket closed. */
  disconnect: { code: number; reason: string; willReconnect: boolean };
  /** A reconnect is scheduled after `delayMs`. */
  reconnecting: { attempt: number; delayMs: number };
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: PresenceError) => void;
  timer: ReturnType<typeof setTimeout>;
  /** Frame to send; `undefined` once sent. */
  frame: Record<string, unknown> | undefined;
}

/** A connection to `presenced`. */
export class PresenceClient extends Emitter<ClientEvents> {
  /** Everything known about other users' presence. */
  readonly store = new PresenceStore();
  /** The device id this client connects as. */
  readonly deviceId: string;
  /** The platform this client connects as. */
  readonly platform: Platform;

  #options: ClientOptions;
  #WebSocket: WebSocketConstructor;
  #socket: WebSocket | undefined;
  #state: ConnectionState = "idle";
  #me: SelfState | undefined;
  #settings: PublicSettings | undefined;
  #limits: Limits | undefined;
  #presenceActive = true;
  #attempt = 0;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #nextRef = 1;
  #pending = new Map<string, Pending>();
  #subscriptions = new Set<string>();
  #firstReady: { resolve: (r: Ready) => void; reject: (e: PresenceError) => void } | undefined;
  #replaced = false;

  constructor(options: ClientOptions) {
    super();
    if (!options.token && !options.tokenProvider) {
      throw new TypeError("PresenceClient needs a token or a tokenProvider");
    }
    const ctor = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!ctor) {
      throw new TypeError(
        "no WebSocket implementation: pass options.WebSocket (Node 20: run with --experimental-websocket)",
      );
    }
    this.#options = options;
    this.#WebSocket = ctor;
    this.platform = options.platform ?? "web";
    this.deviceId = options.deviceId ?? persistentDeviceId(this.platform);
    this.store.on("change", (entry) => this.emit("presence", entry));
  }

  /** The connection state. */
  get state(): ConnectionState {
    return this.#state;
  }
  /** The user's own state, from `ready` and own updates; `undefined` before the first `ready`. */
  get me(): SelfState | undefined {
    return this.#me;
  }
  /** The workspace settings from the last `ready`. */
  get settings(): PublicSettings | undefined {
    return this.#settings;
  }
  /** The socket limits from the last `ready`. */
  get limits(): Limits | undefined {
    return this.#limits;
  }
  /** `false` while the presence cap has disabled real-time updates (X2). */
  get presenceActive(): boolean {
    return this.#presenceActive;
  }
  /** The users this client watches (resubscribed after every reconnect). */
  get subscriptions(): string[] {
    return [...this.#subscriptions];
  }

  /**
   * Opens the connection; resolves with the first `ready`. Rejects only if
   * the client is closed or replaced before that; failed attempts are
   * retried with backoff meanwhile.
   */
  connect(): Promise<Ready> {
    if (this.#state !== "idle") {
      throw new PresenceError(ClientErrorCode.Closed, "connect() may be called once");
    }
    const ready = new Promise<Ready>((resolve, reject) => {
      this.#firstReady = { resolve, reject };
    });
    void this.#open();
    return ready;
  }

  /**
   * Says `bye` (the device is removed at once, D7), closes the socket and
   * stops reconnecting. Pending requests are rejected with `closed`.
   */
  close(): void {
    if (this.#state === "closed") return;
    const socket = this.#socket;
    if (socket && socket.readyState === 1) {
      try {
        socket.send(JSON.stringify({ type: "bye" }));
      } catch {
        // The socket is going anyway.
      }
    }
    this.#shutdown("closed", "the client was closed");
    if (socket && socket.readyState <= 1) socket.close(CloseCode.Bye, "bye");
  }

  /** Sets the own status and/or text (T4, T6). Resolves on `ack`. */
  setStatus(change: StatusChange): Promise<void> {
    const frame: Record<string, unknown> = { type: "set_status" };
    if (change.status !== undefined) frame.status = change.status;
    if (change.text !== undefined) frame.text = change.text;
    if (change.expiresAt !== undefined) {
      frame.expires_at = change.expiresAt instanceof Date ? change.expiresAt.toISOString() : change.expiresAt;
    }
    return this.#request(frame) as Promise<void>;
  }

  /** Selects an admin-defined custom status (C2). Resolves on `ack`. */
  useCustomStatus(id: string): Promise<void> {
    return this.#request({ type: "use_custom_status", id }) as Promise<void>;
  }

  /** Reports a calendar event (K2). Resolves on `ack`. */
  calendar(eventId: string, busy: boolean): Promise<void> {
    return this.#request({ type: "calendar", event_id: eventId, busy }) as Promise<void>;
  }

  /**
   * Watches `users` (kept across reconnects); resolves with their current
   * presence, which is also applied to the store.
   */
  async subscribe(users: string[]): Promise<PresenceEntry[]> {
    for (const user of users) this.#subscriptions.add(user);
    return (await this.#request({ type: "subscribe", users })) as PresenceEntry[];
  }

  /** Stops watching `users`. Resolves on `ack`. */
  async unsubscribe(users: string[]): Promise<void> {
    for (const user of users) {
      this.#subscriptions.delete(user);
      this.store.forget(user);
    }
    await this.#request({ type: "unsubscribe", users });
  }

  /** Reads `users`' presence once; applied to the store as well. */
  query(users: string[]): Promise<PresenceEntry[]> {
    return this.#request({ type: "query", users }) as Promise<PresenceEntry[]>;
  }

  /**
   * Reports a device event (`activity`, `idle`, `active`, `lock`, …).
   * Fire-and-forget: dropped while disconnected (the server restarts a
   * device `online` on reconnect, D1).
   */
  sendEvent(event: DeviceEvent): void {
    this.#sendNow({ type: event });
  }

  async #open(): Promise<void> {
    this.#setState(this.#attempt === 0 ? "connecting" : "reconnecting");
    let token: string;
    try {
      token = this.#options.tokenProvider
        ? await this.#options.tokenProvider()
        : (this.#options.token as string);
    } catch (e) {
      this.emit("error", new PresenceError("token_provider_failed", String(e)));
      this.#scheduleReconnect();
      return;
    }
    if (this.#state === "closed" || this.#state === "replaced") return;
    const url = this.#socketUrl(token);
    let socket: WebSocket;
    try {
      socket = new this.#WebSocket(url);
    } catch (e) {
      this.emit("error", new PresenceError("connect_failed", String(e)));
      this.#scheduleReconnect();
      return;
    }
    this.#socket = socket;
    socket.onmessage = (event: MessageEvent) => {
      if (this.#socket !== socket) return;
      let message: ServerMessage;
      try {
        message = JSON.parse(String(event.data)) as ServerMessage;
      } catch {
        return;
      }
      this.#onMessage(message);
    };
    // Browsers follow an error with a close event; Node 20's WebSocket
    // fires only `error` when the connection cannot be made. Whichever
    // comes first ends this socket, once.
    const end = (code: number, reason: string) => {
      if (this.#socket !== socket) return;
      this.#onClose(code, reason);
    };
    socket.onclose = (event: CloseEvent) => end(event.code, event.reason);
    socket.onerror = () => {
      end(1006, "error");
      try {
        socket.close();
      } catch {
        // Already closed.
      }
    };
  }

  #socketUrl(token: string): string {
    const base = new URL(this.#options.url);
    if (base.protocol === "http:") base.protocol = "ws:";
    if (base.protocol === "https:") base.protocol = "wss:";
    const path = base.pathname.endsWith("/") ? base.pathname.slice(0, -1) : base.pathname;
    base.pathname = path + "/v1/ws";
    base.search = "";
    base.searchParams.set("token", token);
    base.searchParams.set("device_id", this.deviceId);
    base.searchParams.set("platform", this.platform);
    return base.toString();
  }

  #onMessage(message: ServerMessage): void {
    switch (message.type) {
      case "ready":
        this.#onReady(message);
        break;
      case "presence":
        if (message.me) {
          this.#applyMe(message.me);
        } else if (message.status !== "invisible") {
          this.store.apply({
            user: message.user,
            status: message.status,
            text: message.text,
            version: message.version,
          });
        }
        break;
      case "snapshot":
        for (const entry of message.users) this.store.apply(entry);
        if (message.ref !== undefined) this.#settle(message.ref, message.users, undefined);
        break;
      case "ack":
        this.#settle(message.ref, undefined, undefined);
        break;
      case "error": {
        const error = new PresenceError(message.code, message.message, message.ref);
        if (message.ref !== undefined && this.#pending.has(message.ref)) {
          this.#settle(message.ref, undefined, error);
        } else {
          this.emit("error", error);
        }
        break;
      }
      case "notice":
        this.#onNotice(message.kind, message.expires_at);
        break;
    }
  }

  #onReady(ready: Ready): void {
    this.#attempt = 0;
    this.#settings = ready.settings;
    this.#limits = ready.limits;
    this.#presenceActive = ready.presence_active;
    this.#applyMe(ready.me, true);
    this.#setState("open");
    // Resubscribe and resync what this client watches, then send what
    // waited for the connection.
    for (const chunk of this.#chunks([...this.#subscriptions])) {
      this.#request({ type: "subscribe", users: chunk }).catch((e: PresenceError) => this.emit("error", e));
    }
    for (const [ref, pending] of this.#pending) {
      if (pending.frame) {
        this.#sendNow({ ...pending.frame, ref });
        pending.frame = undefined;
      }
    }
    this.emit("ready", ready);
    if (this.#firstReady) {
      this.#firstReady.resolve(ready);
      this.#firstReady = undefined;
    }
  }

  #onNotice(kind: NoticeKind, expiresAt: string | undefined): void {
    this.emit("notice", expiresAt === undefined ? { kind } : { kind, expires_at: expiresAt });
    switch (kind) {
      case "presence_inactive":
        this.#presenceActive = false;
        break;
      case "presence_active":
        // X3: updates were missed while inactive; read them again.
        this.#presenceActive = true;
        for (const chunk of this.#chunks([...this.#subscriptions])) {
          this.query(chunk).catch((e: PresenceError) => this.emit("error", e));
        }
        break;
      case "replaced":
        // Another connection of this device took over: do not fight it.
        this.#replaced = true;
        break;
      case "token_expiring":
        void this.#reauth();
        break;
      case "shutting_down":
        // The server closes with 1001 next; the close reconnects.
        break;
    }
  }

  async #reauth(): Promise<void> {
    const provider = this.#options.tokenProvider;
    if (!provider) return;
    try {
      const token = await provider();
      await this.#request({ type: "reauth", token });
    } catch (e) {
      this.emit("error", e instanceof PresenceError ? e : new PresenceError("token_provider_failed", String(e)));
    }
  }

  #onClose(code: number, reason: string): void {
    this.#socket = undefined;
    for (const [ref, pending] of this.#pending) {
      if (!pending.frame) {
        this.#settle(ref, undefined, new PresenceError(ClientErrorCode.ConnectionLost, "the connection was lost before the reply", ref));
      }
    }
    if (this.#state === "closed") return;
    if (this.#replaced || code === CloseCode.Replaced) {
      this.emit("disconnect", { code, reason, willReconnect: false });
      this.#shutdown("replaced", "another connection of this device took over");
      return;
    }
    // A token that expired or was refused only comes back with a provider.
    const tokenDead = code === CloseCode.TokenExpired || code === CloseCode.ReauthRefused;
    if (tokenDead && !this.#options.tokenProvider) {
      this.emit("disconnect", { code, reason, willReconnect: false });
      this.#shutdown("closed", `the token is no longer valid (${reason || code})`);
      return;
    }
    this.emit("disconnect", { code, reason, willReconnect: true });
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    if (this.#state === "closed" || this.#state === "replaced") return;
    const delayMs = backoffDelay(this.#attempt, this.#options.backoff, this.#options.random);
    this.#attempt += 1;
    this.#setState("reconnecting");
    this.emit("reconnecting", { attempt: this.#attempt, delayMs });
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      void this.#open();
    }, delayMs);
  }

  #shutdown(state: "closed" | "replaced", why: string): void {
    this.#setState(state);
    if (this.#reconnectTimer !== undefined) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    this.#socket = undefined;
    for (const ref of [...this.#pending.keys()]) {
      this.#settle(ref, undefined, new PresenceError(ClientErrorCode.Closed, why, ref));
    }
    if (this.#firstReady) {
      this.#firstReady.reject(new PresenceError(ClientErrorCode.Closed, why));
      this.#firstReady = undefined;
    }
  }

  #applyMe(me: SelfState, fromReady = false): void {
    const held = this.#me;
    // W3 for the own state too; `ready` may repeat the held version.
    if (held && (fromReady ? me.version < held.version : me.version <= held.version)) return;
    this.#me = me;
    this.emit("me", me);
  }

  #request(frame: Record<string, unknown>): Promise<unknown> {
    if (this.#state === "closed" || this.#state === "replaced") {
      return Promise.reject(new PresenceError(ClientErrorCode.Closed, "the client is closed"));
    }
    const ref = String(this.#nextRef++);
    const timeoutMs = this.#options.requestTimeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#settle(ref, undefined, new PresenceError(ClientErrorCode.Timeout, `no reply within ${timeoutMs} ms`, ref));
      }, timeoutMs);
      const pending: Pending = { resolve, reject, timer, frame };
      this.#pending.set(ref, pending);
      if (this.#state === "open" && this.#sendNow({ ...frame, ref })) pending.frame = undefined;
    });
  }

  #settle(ref: string, value: unknown, error: PresenceError | undefined): void {
    const pending = this.#pending.get(ref);
    if (!pending) return;
    this.#pending.delete(ref);
    clearTimeout(pending.timer);
    if (error) pending.reject(error);
    else pending.resolve(value);
  }

  #sendNow(frame: Record<string, unknown>): boolean {
    const socket = this.#socket;
    if (!socket || socket.readyState !== 1 || this.#state !== "open") return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  #chunks(users: string[]): string[][] {
    const size = Math.max(1, this.#limits?.max_query_users ?? 100);
    const out: string[][] = [];
    for (let i = 0; i < users.length; i += size) out.push(users.slice(i, i + size));
    return out;
  }

  #setState(state: ConnectionState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.emit("state", state);
  }
}
