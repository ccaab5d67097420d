/**
 * DOM helpers of the console: elements are built with `h()`, never from
 * HTML strings, so no user text is ever parsed as markup and nothing needs
 * `innerHTML` (the page's Content-Security-Policy forbids inline code).
 */
type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | boolean | number | undefined | ((event: Event) => void)>;
/** Creates `<tag>` with attributes (`on*` keys add listeners) and children. */
export declare function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Attrs, ...children: Child[]): HTMLElementTagNameMap[K];
/** Appends children, skipping empty ones. */
export declare function append(parent: Node, ...children: Child[]): void;
/** Replaces all children of `parent`. */
export declare function replaceChildren(parent: Element, ...children: Child[]): void;
/** A status dot with a text label (colour is never the only cue). */
export declare function statusBadge(status: string, text?: string | null): HTMLElement;
/** The human name of a status. */
export declare function label(status: string): string;
/** A polite live region that announces `message` (errors are assertive). */
export declare function announce(region: HTMLElement, message: string, kind?: "ok" | "error"): void;
export {};
