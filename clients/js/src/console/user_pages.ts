/**
 * The pages every user sees: the status menu of the product document
 * (built-in statuses, a text, the admin's custom statuses, an expiry; the
 * own status shown in real time) and the watch list (users' dots and
 * texts, updated in real time; invisible users look offline).
 */

import type { PresenceEntry, SelfState } from "../protocol.js";
import { PresenceError } from "../errors.js";
import type { CustomStatus } from "./api.js";
import { announce, h, label, replaceChildren, statusBadge } from "./dom.js";
import type { Session } from "./session.js";

/** A page renders into `main` and returns its cleanup. */
export type Page = (session: Session, main: HTMLElement) => () => void;

const EXPIRIES: Array<[string, string]> = [
  ["", "Never"],
  ["30", "In 30 minutes"],
  ["60", "In 1 hour"],
  ["240", "In 4 hours"],
  ["today", "Today (until midnight)"],
];

/** The status menu. */
export const statusPage: Page = (session, main) => {
  const { client } = session;
  const current = h("div", { class: "current", id: "my-status", "aria-live": "polite" });
  const feedback = h("p", { class: "notice", "aria-live": "polite" });
  const showMe = (me: SelfState | undefined) => {
    if (!me) {
      replaceChildren(current, "Connecting…");
      return;
    }
    // Until the person picks one, the menu shows the status in effect.
    if (!form.querySelector("input[name=status]:checked")) {
      const radio = form.querySelector<HTMLInputElement>(`input[name=status][value=${me.chosen}]`);
      if (radio) radio.checked = true;
    }
    replaceChildren(
      current,
      statusBadge(me.status, me.text),
      me.expires_at ? h("span", { class: "muted" }, ` until ${new Date(me.expires_at).toLocaleString()}`) : null,
      me.chosen === "online" ? h("span", { class: "muted" }, " (automatic)") : null,
    );
  };
  const builtIns = (["online", "away", "busy", "invisible"] as const).map((status) =>
    h(
      "label",
      { class: "choice" },
      h("input", { type: "radio", name: "status", value: status, checked: client.me?.chosen === status }),
      h("span", { class: `dot dot-${status === "invisible" ? "offline" : status}`, "aria-hidden": "true" }),
      status === "invisible" ? "Offline (invisible)" : label(status),
    ),
  );
  const text = h("input", {
    id: "status-text",
    type: "text",
    maxlength: 120,
    placeholder: "What's your status?",
    autocomplete: "off",
  });
  const expiry = h(
    "select",
    { id: "status-expiry" },
    ...EXPIRIES.map(([value, name]) => h("option", { value }, name)),
  );
  const textAllowed = client.settings?.allow_custom_status_text ?? true;
  text.disabled = !textAllowed;
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "status-menu-title" },
    h("h2", { id: "status-menu-title" }, "Set your status"),
    h("fieldset", {}, h("legend", {}, "Status"), ...builtIns),
    h("label", { for: "status-text" }, "Status text"),
    text,
    textAllowed ? null : h("p", { class: "muted" }, "Free status text is disabled in this workspace."),
    h("label", { for: "status-expiry" }, "Clear after"),
    expiry,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Save status")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = form.querySelector<HTMLInputElement>("input[name=status]:checked")?.value;
    const change: Parameters<typeof client.setStatus>[0] = {};
    if (chosen) change.status = chosen as "online" | "away" | "busy" | "invisible";
    if (textAllowed) change.text = text.value;
    const expiresAt = expiryDate(expiry.value);
    if (expiresAt) change.expiresAt = expiresAt;
    client.setStatus(change).then(
      () => announce(feedback, "Status saved."),
      (e: unknown) => announce(feedback, describe(e), "error"),
    );
  });

  showMe(client.me);

  const customList = h("ul", { class: "custom-list", id: "custom-statuses" });
  const customCard = h(
    "section",
    { class: "card", "aria-labelledby": "custom-title" },
    h("h2", { id: "custom-title" }, "Custom statuses"),
    customList,
  );
  const loadCustom = () =>
    session.api.customStatuses().then(
      (statuses: CustomStatus[]) => {
        if (statuses.length === 0) {
          replaceChildren(customList, h("li", { class: "muted" }, "Your admins have defined none."));
          return;
        }
        replaceChildren(
          customList,
          ...statuses.map((s) =>
            h(
              "li",
              {},
              h(
                "button",
                {
                  type: "button",
                  class: "custom-choice",
                  "data-id": s.id,
                  onclick: () =>
                    client.useCustomStatus(s.id).then(
                      () => announce(feedback, `Status set to “${s.name}”.`),
                      (e: unknown) => announce(feedback, describe(e), "error"),
                    ),
                },
                statusBadge(s.status_type, s.name),
              ),
            ),
          ),
        );
      },
      (e: unknown) => announce(feedback, describe(e), "error"),
    );
  void loadCustom();

  replaceChildren(
    main,
    h("h1", { tabindex: -1 }, "My status"),
    h("section", { class: "card", "aria-labelledby": "current-title" }, h("h2", { id: "current-title" }, "Now"), current),
    feedback,
    form,
    customCard,
  );
  const offMe = client.on("me", showMe);
  const offReady = client.on("ready", (ready) => showMe(ready.me));
  return () => {
    offMe();
    offReady();
  };
};

const WATCH_KEY = "presence.console.watch";

/** The watch list. */
export const watchPage: Page = (session, main) => {
  const { client } = session;
  const stored = JSON.parse(localStorage.getItem(WATCH_KEY) ?? "[]") as string[];
  const watched = new Set<string>(stored);
  const rows = new Map<string, HTMLElement>();
  const list = h("ul", { class: "watch-list", id: "watch-list", "aria-live": "polite" });
  const feedback = h("p", { class: "notice", "aria-live": "polite" });
  const save = () => localStorage.setItem(WATCH_KEY, JSON.stringify([...watched]));

  const row = (user: string) => {
    let li = rows.get(user);
    if (!li) {
      li = h("li", { "data-user": user });
      rows.set(user, li);
      list.appendChild(li);
    }
    const entry = client.store.get(user);
    replaceChildren(
      li,
      h("span", { class: "user" }, user),
      entry ? statusBadge(entry.status, entry.text) : h("span", { class: "muted" }, "…"),
      h(
        "button",
        {
          type: "button",
          class: "secondary",
          "aria-label": `Stop watching ${user}`,
          onclick: () => {
            watched.delete(user);
            save();
            rows.get(user)?.remove();
            rows.delete(user);
            void client.unsubscribe([user]).catch(() => undefined);
          },
        },
        "Remove",
      ),
    );
  };

  const input = h("input", { id: "watch-user", type: "text", autocomplete: "off", placeholder: "user id, or several separated by commas" });
  const form = h(
    "form",
    { class: "card inline-form" },
    h("label", { for: "watch-user" }, "Watch users"),
    input,
    h("button", { type: "submit" }, "Watch"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const users = input.value
      .split(",")
      .map((u) => u.trim())
      .filter((u) => u.length > 0 && !watched.has(u));
    if (users.length === 0) return;
    for (const user of users) {
      watched.add(user);
      row(user);
    }
    save();
    input.value = "";
    client.subscribe(users).then(
      () => users.forEach(row),
      (e: unknown) => announce(feedback, describe(e), "error"),
    );
  });

  replaceChildren(
    main,
    h("h1", { tabindex: -1 }, "Watch list"),
    form,
    feedback,
    h("section", { class: "card", "aria-label": "Watched users" }, list),
  );
  for (const user of watched) row(user);
  if (watched.size > 0) void client.subscribe([...watched]).catch((e: unknown) => announce(feedback, describe(e), "error"));
  const off = client.on("presence", (entry: PresenceEntry) => {
    if (watched.has(entry.user)) row(entry.user);
  });
  return off;
};

/** The expiry a choice of the menu stands for. */
function expiryDate(choice: string): Date | undefined {
  if (choice === "") return undefined;
  if (choice === "today") {
    const midnight = new Date();
    midnight.setHours(24, 0, 0, 0);
    return midnight;
  }
  return new Date(Date.now() + Number(choice) * 60_000);
}

/** A failure as a person reads it, with the stable code. */
export function describe(e: unknown): string {
  if (e instanceof PresenceError) return `${e.message} (${e.code})`;
  return String(e);
}
