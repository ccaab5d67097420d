/**
 * The presence store: the last known presence of every user the client
 * has heard of, from snapshots and updates alike. An entry whose version
 * is not above the one held is dropped (W3), so the order in which a
 * `snapshot` and racing `presence` updates arrive does not matter.
 */
import { Emitter, type Unsubscribe } from "./emitter.js";
import type { PresenceEntry } from "./protocol.js";
interface StoreEvents {
    /** A user's entry changed (a newer version was applied). */
    change: PresenceEntry;
}
/** Users' presence, version-ordered. */
export declare class PresenceStore extends Emitter<StoreEvents> {
    #private;
    /** The entry held for `user`, if any. */
    get(user: string): PresenceEntry | undefined;
    /** Every entry held. */
    all(): PresenceEntry[];
    /**
     * Applies `entry` if it is newer than the one held (or none is held).
     * Returns whether it was applied; a stale or repeated version is dropped.
     */
    apply(entry: PresenceEntry): boolean;
    /** Calls `listener` with every new entry of `user`. */
    onUser(user: string, listener: (entry: PresenceEntry) => void): Unsubscribe;
    /** Forgets `user` (after an unsubscribe, say). */
    forget(user: string): void;
}
export {};
