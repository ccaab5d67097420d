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
import { backoffDelay } from "./backoff.js";
import { persistentDeviceId } from "./device.js";
import { Emitter } from "./emitter.js";
import { ClientErrorCode, PresenceError } from "./errors.js";
import { CloseCode, } from "./protocol.js";
import { PresenceStore } from "./store.js";
/** A connection to `presenced`. */
export class PresenceClient extends Emitter {
    /** Everything known about other users' presence. */
    store = new PresenceStore();
    /** The device id this client connects as. */
    deviceId;
    /** The platform this client connects as. */
    platform;
    #options;
    #WebSocket;
    #socket;
    #state = "idle";
    #me;
    #settings;
    #limits;
    #presenceActive = true;
    #attempt = 0;
    #reconnectTimer;
    #nextRef = 1;
    #pending = new Map();
    #subscriptions = new Set();
    #firstReady;
    #replaced = false;
    constructor(options) {
        super();
        if (!options.token && !options.tokenProvider) {
            throw new TypeError("PresenceClient needs a token or a tokenProvider");
        }
        const ctor = options.WebSocket ?? globalThis.WebSocket;
        if (!ctor) {
            throw new TypeError("no WebSocket implementation: pass options.WebSocket (Node 20: run with --experimental-websocket)");
        }
        this.#options = options;
        this.#WebSocket = ctor;
        this.platform = options.platform ?? "web";
        this.deviceId = options.deviceId ?? persistentDeviceId(this.platform);
        this.store.on("change", (entry) => this.emit("presence", entry));
    }
    /** The connection state. */
    get state() {
        return this.#state;
    }
    /** The user's own state, from `ready` and own updates; `undefined` before the first `ready`. */
    get me() {
        return this.#me;
    }
    /** The workspace settings from the last `ready`. */
    get settings() {
        return this.#settings;
    }
    /** The socket limits from the last `ready`. */
    get limits() {
        return this.#limits;
    }
    /** `false` while the presence cap has disabled real-time updates (X2). */
    get presenceActive() {
        return this.#presenceActive;
    }
    /** The users this client watches (resubscribed after every reconnect). */
    get subscriptions() {
        return [...this.#subscriptions];
    }
    /**
     * Opens the connection; resolves with the first `ready`. Rejects only if
     * the client is closed or replaced before that; failed attempts are
     * retried with backoff meanwhile.
     */
    connect() {
        if (this.#state !== "idle") {
            throw new PresenceError(ClientErrorCode.Closed, "connect() may be called once");
        }
        const ready = new Promise((resolve, reject) => {
            this.#firstReady = { resolve, reject };
        });
        void this.#open();
        return ready;
    }
    /**
     * Says `bye` (the device is removed at once, D7), closes the socket and
     * stops reconnecting. Pending requests are rejected with `closed`.
     */
    close() {
        if (this.#state === "closed")
            return;
        const socket = this.#socket;
        if (socket && socket.readyState === 1) {
            try {
                socket.send(JSON.stringify({ type: "bye" }));
            }
            catch {
                // The socket is going anyway.
            }
        }
        this.#shutdown("closed", "the client was closed");
        if (socket && socket.readyState <= 1)
            socket.close(CloseCode.Bye, "bye");
    }
    /** Sets the own status and/or text (T4, T6). Resolves on `ack`. */
    setStatus(change) {
        const frame = { type: "set_status" };
        if (change.status !== undefined)
            frame.status = change.status;
        if (change.text !== undefined)
            frame.text = change.text;
        if (change.expiresAt !== undefined) {
            frame.expires_at = change.expiresAt instanceof Date ? change.expiresAt.toISOString() : change.expiresAt;
        }
        return this.#request(frame);
    }
    /** Selects an admin-defined custom status (C2). Resolves on `ack`. */
    useCustomStatus(id) {
        return this.#request({ type: "use_custom_status", id });
    }
    /** Reports a calendar event (K2). Resolves on `ack`. */
    calendar(eventId, busy) {
        return this.#request({ type: "calendar", event_id: eventId, busy });
    }
    /**
     * Watches `users` (kept across reconnects); resolves with their current
     * presence, which is also applied to the store.
     */
    async subscribe(users) {
        for (const user of users)
            this.#subscriptions.add(user);
        return (await this.#request({ type: "subscribe", users }));
    }
    /** Stops watching `users`. Resolves on `ack`. */
    async unsubscribe(users) {
        for (const user of users) {
            this.#subscriptions.delete(user);
            this.store.forget(user);
        }
        await this.#request({ type: "unsubscribe", users });
    }
    /** Reads `users`' presence once; applied to the store as well. */
    query(users) {
        return this.#request({ type: "query", users });
    }
    /**
     * Reports a device event (`activity`, `idle`, `active`, `lock`, …).
     * Fire-and-forget: dropped while disconnected (the server restarts a
     * device `online` on reconnect, D1).
     */
    sendEvent(event) {
        this.#sendNow({ type: event });
    }
    async #open() {
        this.#setState(this.#attempt === 0 ? "connecting" : "reconnecting");
        let token;
        try {
            token = this.#options.tokenProvider
                ? await this.#options.tokenProvider()
                : this.#options.token;
        }
        catch (e) {
            this.emit("error", new PresenceError("token_provider_failed", String(e)));
            this.#scheduleReconnect();
            return;
        }
        if (this.#state === "closed" || this.#state === "replaced")
            return;
        const url = this.#socketUrl(token);
        let socket;
        try {
            socket = new this.#WebSocket(url);
        }
        catch (e) {
            this.emit("error", new PresenceError("connect_failed", String(e)));
            this.#scheduleReconnect();
            return;
        }
        this.#socket = socket;
        socket.onmessage = (event) => {
            if (this.#socket !== socket)
                return;
            let message;
            try {
                message = JSON.parse(String(event.data));
            }
            catch {
                return;
            }
            this.#onMessage(message);
        };
        // Browsers follow an error with a close event; Node 20's WebSocket
        // fires only `error` when the connection cannot be made. Whichever
        // comes first ends this socket, once.
        const end = (code, reason) => {
            if (this.#socket !== socket)
                return;
            this.#onClose(code, reason);
        };
        socket.onclose = (event) => end(event.code, event.reason);
        socket.onerror = () => {
            end(1006, "error");
            try {
                socket.close();
            }
            catch {
                // Already closed.
            }
        };
    }
    #socketUrl(token) {
        const base = new URL(this.#options.url);
        if (base.protocol === "http:")
            base.protocol = "ws:";
        if (base.protocol === "https:")
            base.protocol = "wss:";
        const path = base.pathname.endsWith("/") ? base.pathname.slice(0, -1) : base.pathname;
        base.pathname = path + "/v1/ws";
        base.search = "";
        base.searchParams.set("token", token);
        base.searchParams.set("device_id", this.deviceId);
        base.searchParams.set("platform", this.platform);
        return base.toString();
    }
    #onMessage(message) {
        switch (message.type) {
            case "ready":
                this.#onReady(message);
                break;
            case "presence":
                if (message.me) {
                    this.#applyMe(message.me);
                }
                else if (message.status !== "invisible") {
                    this.store.apply({
                        user: message.user,
                        status: message.status,
                        text: message.text,
                        version: message.version,
                    });
                }
                break;
            case "snapshot":
                for (const entry of message.users)
                    this.store.apply(entry);
                if (message.ref !== undefined)
                    this.#settle(message.ref, message.users, undefined);
                break;
            case "ack":
                this.#settle(message.ref, undefined, undefined);
                break;
            case "error": {
                const error = new PresenceError(message.code, message.message, message.ref);
                if (message.ref !== undefined && this.#pending.has(message.ref)) {
                    this.#settle(message.ref, undefined, error);
                }
                else {
                    this.emit("error", error);
                }
                break;
            }
            case "notice":
                this.#onNotice(message.kind, message.expires_at);
                break;
        }
    }
    #onReady(ready) {
        this.#attempt = 0;
        this.#settings = ready.settings;
        this.#limits = ready.limits;
        this.#presenceActive = ready.presence_active;
        this.#applyMe(ready.me, true);
        this.#setState("open");
        // Resubscribe and resync what this client watches, then send what
        // waited for the connection.
        for (const chunk of this.#chunks([...this.#subscriptions])) {
            this.#request({ type: "subscribe", users: chunk }).catch((e) => this.emit("error", e));
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
    #onNotice(kind, expiresAt) {
        this.emit("notice", expiresAt === undefined ? { kind } : { kind, expires_at: expiresAt });
        switch (kind) {
            case "presence_inactive":
                this.#presenceActive = false;
                break;
            case "presence_active":
                // X3: updates were missed while inactive; read them again.
                this.#presenceActive = true;
                for (const chunk of this.#chunks([...this.#subscriptions])) {
                    this.query(chunk).catch((e) => this.emit("error", e));
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
    async #reauth() {
        const provider = this.#options.tokenProvider;
        if (!provider)
            return;
        try {
            const token = await provider();
            await this.#request({ type: "reauth", token });
        }
        catch (e) {
            this.emit("error", e instanceof PresenceError ? e : new PresenceError("token_provider_failed", String(e)));
        }
    }
    #onClose(code, reason) {
        this.#socket = undefined;
        for (const [ref, pending] of this.#pending) {
            if (!pending.frame) {
                this.#settle(ref, undefined, new PresenceError(ClientErrorCode.ConnectionLost, "the connection was lost before the reply", ref));
            }
        }
        if (this.#state === "closed")
            return;
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
    #scheduleReconnect() {
        if (this.#state === "closed" || this.#state === "replaced")
            return;
        const delayMs = backoffDelay(this.#attempt, this.#options.backoff, this.#options.random);
        this.#attempt += 1;
        this.#setState("reconnecting");
        this.emit("reconnecting", { attempt: this.#attempt, delayMs });
        this.#reconnectTimer = setTimeout(() => {
            this.#reconnectTimer = undefined;
            void this.#open();
        }, delayMs);
    }
    #shutdown(state, why) {
        this.#setState(state);
        if (this.#reconnectTimer !== undefined)
            clearTimeout(this.#reconnectTimer);
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
    #applyMe(me, fromReady = false) {
        const held = this.#me;
        // W3 for the own state too; `ready` may repeat the held version.
        if (held && (fromReady ? me.version < held.version : me.version <= held.version))
            return;
        this.#me = me;
        this.emit("me", me);
    }
    #request(frame) {
        if (this.#state === "closed" || this.#state === "replaced") {
            return Promise.reject(new PresenceError(ClientErrorCode.Closed, "the client is closed"));
        }
        const ref = String(this.#nextRef++);
        const timeoutMs = this.#options.requestTimeoutMs ?? 10_000;
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.#settle(ref, undefined, new PresenceError(ClientErrorCode.Timeout, `no reply within ${timeoutMs} ms`, ref));
            }, timeoutMs);
            const pending = { resolve, reject, timer, frame };
            this.#pending.set(ref, pending);
            if (this.#state === "open" && this.#sendNow({ ...frame, ref }))
                pending.frame = undefined;
        });
    }
    #settle(ref, value, error) {
        const pending = this.#pending.get(ref);
        if (!pending)
            return;
        this.#pending.delete(ref);
        clearTimeout(pending.timer);
        if (error)
            pending.reject(error);
        else
            pending.resolve(value);
    }
    #sendNow(frame) {
        const socket = this.#socket;
        if (!socket || socket.readyState !== 1 || this.#state !== "open")
            return false;
        socket.send(JSON.stringify(frame));
        return true;
    }
    #chunks(users) {
        const size = Math.max(1, this.#limits?.max_query_users ?? 100);
        const out = [];
        for (let i = 0; i < users.length; i += size)
            out.push(users.slice(i, i + size));
        return out;
    }
    #setState(state) {
        if (this.#state === state)
            return;
        this.#state = state;
        this.emit("state", state);
    }
}
