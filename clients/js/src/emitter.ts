/** A minimal typed event emitter (no dependency on Node's or the DOM's). */

/** Removes the listener it was returned for. */
export type Unsubscribe = () => void;

/** Events keyed by name, each with one payload type. */
export class Emitter<Events extends { [K in keyof Events]: unknown }> {
  #listeners = new Map<keyof Events, Set<(payload: never) => void>>();

  /** Calls `listener` on every `event` until the returned function is called. */
  on<K extends keyof Events>(event: K, listener: (payload: Events[K]) => void): Unsubscribe {
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener as (payload: never) => void);
    return () => {
      set.delete(listener as (payload: never) => void);
    };
  }

  /** Calls `listener` on the next `event` only. */
  once<K extends keyof Events>(event: K, listener: (payload: Events[K]) => void): Unsubscribe {
    const off = this.on(event, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  /** Delivers `payload` to the listeners of `event`; a throwing listener does not stop the others. */
  protected emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as (payload: Events[K]) => void)(payload);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
