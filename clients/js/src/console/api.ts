/**
 * The REST calls of the console (native API under `/v1`; the custom status
 * list for non-admins through the Rocket.Chat-compatible API). Every
 * failure becomes a `PresenceError` with the server's stable code.
 */

import { PresenceError } from "../errors.js";

/** Calls the server as the signed-in user. */
export class Api {
  readonly #token: string;
  readonly #user: string;

  constructor(token: string, user: string) {
    this.#token = token;
    this.#user = user;
  }

  /** A native `/v1` call; resolves with the JSON body. */
  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const init: RequestInit = {
      method,
      headers: {
        authorization: `Bearer ${this.#token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
    };
    if (body !== undefined) init.body = JSON.stringify(body);
    return parse<T>(await fetch(path, init));
  }

  /** Custom statuses any user may pick (Rocket.Chat's list, readable by everyone). */
  async customStatuses(): Promise<CustomStatus[]> {
    const res = await fetch("/api/v1/custom-user-status.list?count=0", {
      headers: { "x-user-id": this.#user, "x-auth-token": this.#token },
    });
    const body = (await res.json()) as {
      success: boolean;
      statuses?: Array<{ _id: string; name: string; statusType: string; _updatedAt: string }>;
      error?: string;
      errorType?: string;
    };
    if (!res.ok || !body.success || !body.statuses) {
      throw new PresenceError(body.errorType ?? "request_failed", body.error ?? `HTTP ${res.status}`);
    }
    return body.statuses.map((s) => ({ id: s._id, name: s.name, status_type: s.statusType, updated_at: s._updatedAt }));
  }
}

/** An admin-defined custom status. */
export interface CustomStatus {
  id: string;
  name: string;
  status_type: string;
  updated_at: string;
}

/** The workspace settings an admin reads and patches. */
export interface Settings {
  allow_custom_status_text: boolean;
  allow_invisible: boolean;
  calendar_integration: boolean;
  default_auto_away: boolean;
  default_idle_time_limit: number;
  cap: number;
}

/** The presence cap state (X5). */
export interface CapView {
  count: number;
  cap: number;
  peak: number;
  enabled: boolean;
}

async function parse<T>(res: Response): Promise<T> {
  let body: unknown;
  try {
    body = await res.json();
  } catch {
    throw new PresenceError("invalid_response", `HTTP ${res.status} without a JSON body`);
  }
  if (!res.ok) {
    const error = (body as { error?: { code?: string; message?: string } }).error;
    throw new PresenceError(error?.code ?? "request_failed", error?.message ?? `HTTP ${res.status}`);
  }
  return body as T;
}
