/**
 * The one error type of the client: every rejected promise carries a
 * stable `code`, either the server's (`docs/errors.md`: `text_too_long`,
 * `invisible_disabled`, `custom_status_not_found`, …) or one of the
 * client's own, listed in {@link ClientErrorCode}.
 */
/** Codes the client itself produces. */
export declare const ClientErrorCode: {
    /** No reply arrived within `requestTimeoutMs`. */
    readonly Timeout: "timeout";
    /**
     * The socket closed while the request was in flight: it may or may not
     * have been applied (R1 says only an `ack` proves it was).
     */
    readonly ConnectionLost: "connection_lost";
    /** The client was closed (`close()`, or the device was replaced). */
    readonly Closed: "closed";
};
/** An error with a stable `code`. */
export declare class PresenceError extends Error {
    /** Stable, machine-readable. */
    readonly code: string;
    /** The `ref` of the request this answers, if any. */
    readonly ref: string | undefined;
    constructor(code: string, message: string, ref?: string);
}
