/**
 * `@presence/client`: the JavaScript client of the presence service's
 * WebSocket protocol, for browsers and Node ≥ 20. No runtime dependencies.
 */
export { ActivityTracker, INPUT_EVENTS, type ActivityOptions } from "./activity.js";
export { backoffCeiling, backoffDelay, type BackoffOptions } from "./backoff.js";
export { PresenceClient, type ClientEvents, type ClientOptions, type ConnectionState, type WebSocketConstructor, } from "./client.js";
export { DEVICE_ID_KEY, persistentDeviceId, randomDeviceId } from "./device.js";
export { Emitter, type Unsubscribe } from "./emitter.js";
export { ClientErrorCode, PresenceError } from "./errors.js";
export * from "./protocol.js";
export { PresenceStore } from "./store.js";
