/**
 * The device id of this client: one per browser (kept in `localStorage`),
 * so a reload resumes the same device (D1, D7) instead of showing a second
 * one. Where there is no storage (Node, private modes that refuse it) a
 * fresh random id is used.
 */

/** The `localStorage` key the device id is kept under. */
export const DEVICE_ID_KEY = "presence.device_id";

/** A random device id such as `web-3f9c0a…`. */
export function randomDeviceId(prefix = "web"): string {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return prefix + "-" + [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** This browser's device id, created and stored on first use. */
export function persistentDeviceId(prefix = "web"): string {
  let storage: Storage | undefined;
  try {
    storage = (globalThis as { localStorage?: Storage }).localStorage;
  } catch {
    storage = undefined;
  }
  if (!storage) return randomDeviceId(prefix);
  try {
    const held = storage.getItem(DEVICE_ID_KEY);
    if (held) return held;
    const id = randomDeviceId(prefix);
    storage.setItem(DEVICE_ID_KEY, id);
    return id;
  } catch {
    return randomDeviceId(prefix);
  }
}
