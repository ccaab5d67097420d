/**
 * The REST calls of the console (native API under `/v1`; the custom status
 * list for non-admins through the Rocket.Chat-compatible API). Every
 * failure becomes a `PresenceError` with the server's stable code.
 */
/** Calls the server as the signed-in user. */
export declare class Api {
    #private;
    constructor(token: string, user: string);
    /** A native `/v1` call; resolves with the JSON body. */
    call<T>(method: string, path: string, body?: unknown): Promise<T>;
    /** Custom statuses any user may pick (Rocket.Chat's list, readable by everyone). */
    customStatuses(): Promise<CustomStatus[]>;
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
