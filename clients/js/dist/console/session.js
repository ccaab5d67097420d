/**
 * The signed-in session of the console: the pasted token (kept in
 * `sessionStorage`, so it ends with the tab), who it names, and the
 * client connection built on it. The server never mints tokens for the web.
 */
import { PresenceClient } from "../client.js";
import { ActivityTracker } from "../activity.js";
import { Api } from "./api.js";
const TOKEN_KEY = "presence.console.token";
/** Reads the claims of a JWT without verifying it; `undefined` if it is not one. */
export function readClaims(token) {
    const parts = token.split(".");
    if (parts.length !== 3 || !parts[1])
        return undefined;
    try {
        const json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
        const claims = JSON.parse(json);
        if (typeof claims.sub !== "string")
            return undefined;
        const roles = Array.isArray(claims.roles) ? claims.roles : [];
        return {
            user: claims.sub,
            admin: roles.includes("admin"),
            name: typeof claims.name === "string" ? claims.name : undefined,
            expiresAt: typeof claims.exp === "number" ? new Date(claims.exp * 1000) : undefined,
        };
    }
    catch {
        return undefined;
    }
}
/** A signed-in user's connection and REST access. */
export class Session {
    client;
    api;
    claims;
    #tracker;
    constructor(token, claims) {
        this.claims = claims;
        this.api = new Api(token, claims.user);
        this.client = new PresenceClient({ url: location.origin, token });
        this.#tracker = new ActivityTracker(this.client);
    }
    /** The token held for this tab, if any. */
    static storedToken() {
        return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
    }
    /** Keeps `token` for this tab. */
    static store(token) {
        sessionStorage.setItem(TOKEN_KEY, token);
    }
    /** Connects and starts reporting activity. */
    start() {
        void this.client.connect().catch(() => undefined);
        this.#tracker.start();
    }
    /** Says goodbye (the device goes offline at once) and forgets the token. */
    end() {
        this.#tracker.stop();
        this.client.close();
        sessionStorage.removeItem(TOKEN_KEY);
    }
}
