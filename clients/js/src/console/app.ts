/**
 * The web console served by `presenced` at `/console`: sign in with a
 * pasted token, then the status menu, the watch list and, for admins, the
 * workspace pages. Routing is by hash (`#/status`, `#/admin/statuses` …)
 * so every page is one static document under a strict CSP.
 */

import type { ConnectionState } from "../client.js";
import { customStatusesPage, servicePage, settingsPage } from "./admin_pages.js";
import { clusterPage } from "./cluster_page.js";
import { announce, h, replaceChildren } from "./dom.js";
import { readClaims, Session } from "./session.js";
import { statusPage, watchPage, type Page } from "./user_pages.js";

interface Route {
  path: string;
  title: string;
  page: Page;
  admin: boolean;
}

const ROUTES: Route[] = [
  { path: "#/status", title: "My status", page: statusPage, admin: false },
  { path: "#/watch", title: "Watch list", page: watchPage, admin: false },
  { path: "#/admin/statuses", title: "Custom statuses", page: customStatusesPage, admin: true },
  { path: "#/admin/settings", title: "Settings", page: settingsPage, admin: true },
  { path: "#/admin/service", title: "Presence service", page: servicePage, admin: true },
  { path: "#/admin/cluster", title: "Cluster", page: clusterPage, admin: true },
];

const main = document.getElementById("main") as HTMLElement;
const nav = document.getElementById("nav") as HTMLElement;
const who = document.getElementById("who") as HTMLElement;
const banner = document.getElementById("banner") as HTMLElement;

let session: Session | undefined;
let cleanup: () => void = () => undefined;

document.getElementById("skip")?.addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

function signIn(): void {
  cleanup();
  cleanup = () => undefined;
  replaceChildren(nav);
  replaceChildren(who);
  banner.hidden = true;
  const token = h("textarea", { id: "token", rows: 4, required: true, spellcheck: "false", autocomplete: "off" });
  const feedback = h("p", { class: "notice", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title", tabindex: -1 }, "Sign in"),
    h("p", {}, "Paste a token issued for you (for development: ", h("code", {}, "presenced token --user NAME"), "). The console never creates tokens."),
    h("label", { for: "token" }, "Token"),
    token,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in")),
    feedback,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = token.value.trim();
    if (!readClaims(value)) {
      announce(feedback, "That is not a token (a JWT has three dot-separated parts).", "error");
      return;
    }
    Session.store(value);
    start(value);
  });
  replaceChildren(main, form);
  token.focus();
}

function start(token: string): void {
  const claims = readClaims(token);
  if (!claims) {
    signIn();
    return;
  }
  session = new Session(token, claims);
  const current = session;
  const state = h("span", { id: "conn-state", class: "conn", role: "status" }, "Connecting…");
  const showState = (s: ConnectionState) => {
    state.dataset.state = s;
    state.textContent =
      s === "open" ? "Connected" : s === "replaced" ? "Replaced by another tab" : s === "closed" ? "Disconnected" : "Connecting…";
  };
  current.client.on("state", showState);
  const showBanner = (active: boolean) => {
    banner.hidden = active;
    banner.textContent = active ? "" : "Presence is disabled: the connection count is over the cap. Statuses are not updated in real time.";
  };
  current.client.on("ready", (ready) => showBanner(ready.presence_active));
  current.client.on("notice", (n) => {
    if (n.kind === "presence_inactive") showBanner(false);
    if (n.kind === "presence_active") showBanner(true);
  });
  current.client.on("disconnect", (d) => {
    if (!d.willReconnect && (d.code === 4002 || d.code === 4003)) {
      current.end();
      signIn();
    }
  });
  replaceChildren(
    who,
    h("span", { class: "user" }, claims.name ?? claims.user, claims.admin ? " (admin)" : ""),
    state,
    h(
      "button",
      {
        type: "button",
        class: "secondary",
        onclick: () => {
          current.end();
          session = undefined;
          signIn();
        },
      },
      "Sign out",
    ),
  );
  replaceChildren(
    nav,
    h(
      "ul",
      {},
      ...ROUTES.filter((r) => !r.admin || claims.admin).map((r) =>
        h("li", {}, h("a", { href: r.path, "data-path": r.path }, r.title)),
      ),
    ),
  );
  current.start();
  route();
}

function route(): void {
  if (!session) return;
  const wanted = ROUTES.find((r) => r.path === location.hash && (!r.admin || session?.claims.admin));
  const target = wanted ?? ROUTES[0]!;
  if (!wanted) {
    history.replaceState(null, "", target.path);
  }
  cleanup();
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.path === target.path) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${target.title} · Presence console`;
  cleanup = target.page(session, main);
  main.querySelector<HTMLElement>("h1")?.focus();
}

window.addEventListener("hashchange", route);

const stored = Session.storedToken();
if (stored) start(stored);
else signIn();
