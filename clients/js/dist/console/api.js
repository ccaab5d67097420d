/**
 * The REST calls of the console (native API under `/v1`; the custom status
 * list for non-admins through the Rocket.Chat-compatible API). Every
 * failure becomes a `PresenceError` with the server's stable code.
 */
import { PresenceError } from "../errors.js";
/** Calls the server as the signed-in user. */
export class Api {
    #token;
    #user;
    constructor(token, user) {
        this.#token = token;
        this.#user = user;
    }
    /** A native `/v1` call; resolves with the JSON body. */
    async call(method, path, body) {
        const init = {
            method,
            headers: {
                authorization: `Bearer ${this.#token}`,
                ...(body === undefined ? {} : { "content-type": "application/json" }),
            },
        };
        if (body !== undefined)
            init.body = JSON.stringify(body);
        return parse(await fetch(path, init));
    }
    /** Custom statuses any user may pick (Rocket.Chat's list, readable by everyone). */
    async customStatuses() {
        const res = await fetch("/api/v1/custom-user-status.list?count=0", {
            headers: { "x-user-id": this.#user, "x-auth-token": this.#token },
        });
        const body = (await res.json());
        if (!res.ok || !body.success || !body.statuses) {
            throw new PresenceError(body.errorType ?? "request_failed", body.error ?? `HTTP ${res.status}`);
        }
        return body.statuses.map((s) => ({ id: s._id, name: s.name, status_type: s.statusType, updated_at: s._updatedAt }));
    }
}
async function parse(res) {
    let body;
    try {
        body = await res.json();
    }
    catch {
        throw new PresenceError("invalid_response", `HTTP ${res.status} without a JSON body`);
    }
    if (!res.ok) {
        const error = body.error;
        throw new PresenceError(error?.code ?? "request_failed", error?.message ?? `HTTP ${res.status}`);
    }
    return body;
}
