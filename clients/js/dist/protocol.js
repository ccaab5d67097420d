/**
 * The wire types of `GET /v1/ws` (see `crates/presence-protocol/src/ws`):
 * what the server sends and what a client may send. Field names are the
 * server's, unchanged.
 */
/** Close codes of the protocol. */
export const CloseCode = {
    Bye: 1000,
    GoingAway: 1001,
    PolicyViolation: 1008,
    TooLarge: 1009,
    Replaced: 4001,
    TokenExpired: 4002,
    ReauthRefused: 4003,
};
