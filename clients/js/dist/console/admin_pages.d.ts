/**
 * The admin pages: "Manage → Workspace → User Status" (custom statuses:
 * list, search, create, edit, delete, mapped presence), the workspace
 * settings, the presence service (enabled, count, cap, peak, re-enable,
 * with the refusal shown while the count is not below the cap) and, in
 * cluster mode, the nodes and shards.
 */
import { type Page } from "./user_pages.js";
/** Custom statuses. */
export declare const customStatusesPage: Page;
/** Workspace settings. */
export declare const settingsPage: Page;
/** The presence service (the cap, X1–X5). */
export declare const servicePage: Page;
