/**
 * DOM helpers of the console: elements are built with `h()`, never from
 * HTML strings, so no user text is ever parsed as markup and nothing needs
 * `innerHTML` (the page's Content-Security-Policy forbids inline code).
 */

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | boolean | number | undefined | ((event: Event) => void)>;

/** Creates `<tag>` with attributes (`on*` keys add listeners) and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, ...children);
  return el;
}

/** Appends children, skipping empty ones. */
export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  }
}

/** Replaces all children of `parent`. */
export function replaceChildren(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, ...children);
}

/** A status dot with a text label (colour is never the only cue). */
export function statusBadge(status: string, text?: string | null): HTMLElement {
  return h(
    "span",
    { class: "badge", "data-status": status },
    h("span", { class: `dot dot-${status}`, "aria-hidden": "true" }),
    h("span", { class: "status-name" }, label(status)),
    text ? h("span", { class: "status-text" }, text) : null,
  );
}

/** The human name of a status. */
export function label(status: string): string {
  switch (status) {
    case "online":
      return "Online";
    case "away":
      return "Away";
    case "busy":
      return "Busy";
    case "invisible":
      return "Invisible";
    case "offline":
      return "Offline";
    default:
      return status;
  }
}

/** A polite live region that announces `message` (errors are assertive). */
export function announce(region: HTMLElement, message: string, kind: "ok" | "error" = "ok"): void {
  region.setAttribute("role", kind === "error" ? "alert" : "status");
  region.className = `notice notice-${kind}`;
  region.textContent = message;
}
