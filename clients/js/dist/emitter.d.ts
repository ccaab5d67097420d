/** A minimal typed event emitter (no dependency on Node's or the DOM's). */
/** Removes the listener it was returned for. */
export type Unsubscribe = () => void;
/** Events keyed by name, each with one payload type. */
export declare class Emitter<Events extends {
    [K in keyof Events]: unknown;
}> {
    #private;
    /** Calls `listener` on every `event` until the returned function is called. */
    on<K extends keyof Events>(event: K, listener: (payload: Events[K]) => void): Unsubscribe;
    /** Calls `listener` on the next `event` only. */
    once<K extends keyof Events>(event: K, listener: (payload: Events[K]) => void): Unsubscribe;
    /** Delivers `payload` to the listeners of `event`; a throwing listener does not stop the others. */
    protected emit<K extends keyof Events>(event: K, payload: Events[K]): void;
}
