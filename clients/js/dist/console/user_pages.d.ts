/**
 * The pages every user sees: the status menu of the product document
 * (built-in statuses, a text, the admin's custom statuses, an expiry; the
 * own status shown in real time) and the watch list (users' dots and
 * texts, updated in real time; invisible users look offline).
 */
import type { Session } from "./session.js";
/** A page renders into `main` and returns its cleanup. */
export type Page = (session: Session, main: HTMLElement) => () => void;
/** The status menu. */
export declare const statusPage: Page;
/** The watch list. */
export declare const watchPage: Page;
/** A failure as a person reads it, with the stable code. */
export declare function describe(e: unknown): string;
