/**
 * The device id of this client: one per browser (kept in `localStorage`),
 * so a reload resumes the same device (D1, D7) instead of showing a second
 * one. Where there is no storage (Node, private modes that refuse it) a
 * fresh random id is used.
 */
/** The `localStorage` key the device id is kept under. */
export declare const DEVICE_ID_KEY = "presence.device_id";
/** A random device id such as `web-3f9c0a…`. */
export declare function randomDeviceId(prefix?: string): string;
/** This browser's device id, created and stored on first use. */
export declare function persistentDeviceId(prefix?: string): string;
