/**
 * The signed-in session of the console: the pasted token (kept in
 * `sessionStorage`, so it ends with the tab), who it names, and the
 * client connection built on it. The server never mints tokens for the web.
 */
import { PresenceClient } from "../client.js";
import { Api } from "./api.js";
/** Who a token names, read from its (unverified) claims; the server verifies. */
export interface Claims {
    user: string;
    admin: boolean;
    name: string | undefined;
    expiresAt: Date | undefined;
}
/** Reads the claims of a JWT without verifying it; `undefined` if it is not one. */
export declare function readClaims(token: string): Claims | undefined;
/** A signed-in user's connection and REST access. */
export declare class Session {
    #private;
    readonly client: PresenceClient;
    readonly api: Api;
    readonly claims: Claims;
    constructor(token: string, claims: Claims);
    /** The token held for this tab, if any. */
    static storedToken(): string | undefined;
    /** Keeps `token` for this tab. */
    static store(token: string): void;
    /** Connects and starts reporting activity. */
    start(): void;
    /** Says goodbye (the device goes offline at once) and forgets the token. */
    end(): void;
}
