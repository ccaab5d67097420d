/**
 * The wire types of `GET /v1/ws` (see `crates/presence-protocol/src/ws`):
 * what the server sends and what a client may send. Field names are the
 * server's, unchanged.
 */

/** What other users see: `online`, `away`, `busy` or `offline`. */
export type DisplayedStatus = "online" | "away" | "busy" | "offline";

/** A user's own view of their status, which may also be `invisible`. */
export type SelfStatus = DisplayedStatus | "invisible";

/** What a user chose: `online` means automatic. */
export type ChosenStatus = "online" | "away" | "busy" | "invisible";

/** The kind of client a socket belongs to. */
export type Platform = "web" | "desktop" | "mobile";

/** Device events a client reports (D2–D6). */
export type DeviceEvent =
  | "activity"
  | "idle"
  | "active"
  | "lock"
  | "unlock"
  | "sleep"
  | "wake"
  | "background"
  | "foreground";

/** One user's presence as others see it. */
export interface PresenceEntry {
  user: string;
  status: DisplayedStatus;
  text: string | null;
  /** Per-user version (W3): a higher version is newer. */
  version: number;
}

/** The user's own full state. */
export interface SelfState {
  user: string;
  status: SelfStatus;
  text: string | null;
  chosen: ChosenStatus;
  custom_status: string | null;
  expires_at: string | null;
  calendar_busy: boolean;
  connection: DisplayedStatus;
  devices: number;
  auto_away: boolean;
  idle_time_limit: number;
  version: number;
}

/** Workspace settings every user may read. */
export interface PublicSettings {
  allow_custom_status_text: boolean;
  allow_invisible: boolean;
  calendar_integration: boolean;
  default_auto_away: boolean;
  default_idle_time_limit: number;
}

/** Limits the server enforces on a socket. */
export interface Limits {
  max_frame_bytes: number;
  max_subscriptions: number;
  max_subscriptions_per_user: number;
  max_query_users: number;
}

/** The first frame of every socket. */
export interface Ready {
  type: "ready";
  me: SelfState;
  settings: PublicSettings;
  presence_active: boolean;
  session: { user: string; device: string; platform: Platform };
  limits: Limits;
}

/** Kinds of `notice`. */
export type NoticeKind =
  | "presence_inactive"
  | "presence_active"
  | "shutting_down"
  | "replaced"
  | "token_expiring";

/** Every frame the server sends. */
export type ServerMessage =
  | Ready
  | {
      type: "presence";
      user: string;
      status: SelfStatus;
      text: string | null;
      version: number;
      me?: SelfState;
    }
  | { type: "snapshot"; ref?: string; users: PresenceEntry[] }
  | { type: "notice"; kind: NoticeKind; expires_at?: string }
  | { type: "error"; code: string; message: string; ref?: string }
  | { type: "ack"; ref: string };

/** A status change: every field optional (T4). */
export interface StatusChange {
  status?: ChosenStatus;
  /** `""` or `null` clears the text. */
  text?: string | null;
  /** RFC 3339 or a `Date`; must lie in the future (T6). */
  expiresAt?: string | Date;
}

/** Close codes of the protocol. */
export const CloseCode = {
  Bye: 1000,
  GoingAway: 1001,
  PolicyViolation: 1008,
  TooLarge: 1009,
  Replaced: 4001,
  TokenExpired: 4002,
  ReauthRefused: 4003,
} as const;
