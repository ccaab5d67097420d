/** A minimal typed event emitter (no dependency on Node's or the DOM's). */
/** Events keyed by name, each with one payload type. */
export class Emitter {
    #listeners = new Map();
    /** Calls `listener` on every `event` until the returned function is called. */
    on(event, listener) {
        let set = this.#listeners.get(event);
        if (!set) {
            set = new Set();
            this.#listeners.set(event, set);
        }
        set.add(listener);
        return () => {
            set.delete(listener);
        };
    }
    /** Calls `listener` on the next `event` only. */
    once(event, listener) {
        const off = this.on(event, (payload) => {
            off();
            listener(payload);
        });
        return off;
    }
    /** Delivers `payload` to the listeners of `event`; a throwing listener does not stop the others. */
    emit(event, payload) {
        const set = this.#listeners.get(event);
        if (!set)
            return;
        for (const listener of [...set]) {
            try {
                listener(payload);
            }
            catch (e) {
                queueMicrotask(() => {
                    throw e;
                });
            }
        }
    }
}
