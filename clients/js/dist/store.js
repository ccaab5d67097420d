/**
 * The presence store: the last known presence of every user the client
 * has heard of, from snapshots and updates alike. An entry whose version
 * is not above the one held is dropped (W3), so the order in which a
 * `snapshot` and racing `presence` updates arrive does not matter.
 */
import { Emitter } from "./emitter.js";
/** Users' presence, version-ordered. */
export class PresenceStore extends Emitter {
    #entries = new Map();
    /** The entry held for `user`, if any. */
    get(user) {
        return this.#entries.get(user);
    }
    /** Every entry held. */
    all() {
        return [...this.#entries.values()];
    }
    /**
     * Applies `entry` if it is newer than the one held (or none is held).
     * Returns whether it was applied; a stale or repeated version is dropped.
     */
    apply(entry) {
        const held = this.#entries.get(entry.user);
        if (held && entry.version <= held.version)
            return false;
        const copy = {
            user: entry.user,
            status: entry.status,
            text: entry.text ?? null,
            version: entry.version,
        };
        this.#entries.set(entry.user, copy);
        this.emit("change", copy);
        return true;
    }
    /** Calls `listener` with every new entry of `user`. */
    onUser(user, listener) {
        return this.on("change", (entry) => {
            if (entry.user === user)
                listener(entry);
        });
    }
    /** Forgets `user` (after an unsubscribe, say). */
    forget(user) {
        this.#entries.delete(user);
    }
}
