/**
 * The admin pages: "Manage → Workspace → User Status" (custom statuses:
 * list, search, create, edit, delete, mapped presence), the workspace
 * settings, the presence service (enabled, count, cap, peak, re-enable,
 * with the refusal shown while the count is not below the cap) and, in
 * cluster mode, the nodes and shards.
 */

import type { CapView, CustomStatus, Settings } from "./api.js";
import { announce, h, label, replaceChildren, statusBadge } from "./dom.js";
import { describe, type Page } from "./user_pages.js";

const MAPPED = ["online", "away", "busy", "offline"] as const;

function mappedSelect(id: string, selected: string, labelText: string): HTMLSelectElement {
  return h(
    "select",
    { id, "aria-label": labelText },
    ...MAPPED.map((s) => h("option", { value: s, selected: s === selected }, label(s))),
  );
}

/** Custom statuses. */
export const customStatusesPage: Page = (session, main) => {
  const { api } = session;
  const feedback = h("p", { class: "notice", "aria-live": "polite" });
  const search = h("input", { id: "custom-search", type: "search", autocomplete: "off" });
  const tbody = h("tbody", {});
  let statuses: CustomStatus[] = [];

  const render = () => {
    const needle = search.value.trim().toLowerCase();
    const shown = statuses.filter((s) => s.name.toLowerCase().includes(needle));
    if (shown.length === 0) {
      replaceChildren(tbody, h("tr", {}, h("td", { colspan: 3, class: "muted" }, needle ? "No match." : "None yet.")));
      return;
    }
    replaceChildren(tbody, ...shown.map(editRow));
  };
  const load = () =>
    api.call<{ statuses: CustomStatus[] }>("GET", "/v1/admin/custom-statuses").then(
      (body) => {
        statuses = body.statuses.sort((a, b) => a.name.localeCompare(b.name));
        render();
      },
      (e: unknown) => announce(feedback, describe(e), "error"),
    );

  const editRow = (s: CustomStatus) => {
    const name = h("input", { type: "text", value: s.name, maxlength: 120, "aria-label": `Name of ${s.name}` });
    const type = mappedSelect(`type-${s.id}`, s.status_type, `Presence of ${s.name}`);
    const save = h(
      "button",
      {
        type: "button",
        onclick: () =>
          api.call<CustomStatus>("PATCH", `/v1/admin/custom-statuses/${encodeURIComponent(s.id)}`, {
            name: name.value,
            status_type: type.value,
          }).then(
            (updated) => {
              announce(feedback, `Saved “${updated.name}”.`);
              void load();
            },
            (e: unknown) => announce(feedback, describe(e), "error"),
          ),
      },
      "Save",
    );
    const remove = h(
      "button",
      {
        type: "button",
        class: "danger",
        onclick: () => {
          if (!confirm(`Delete “${s.name}”? Its users keep their presence and the name as plain text.`)) return;
          api.call<CustomStatus>("DELETE", `/v1/admin/custom-statuses/${encodeURIComponent(s.id)}`).then(
            () => {
              announce(feedback, `Deleted “${s.name}”.`);
              void load();
            },
            (e: unknown) => announce(feedback, describe(e), "error"),
          );
        },
      },
      "Delete",
    );
    return h(
      "tr",
      { "data-id": s.id },
      h("td", {}, name),
      h("td", {}, type, " ", statusBadge(s.status_type)),
      h("td", { class: "actions" }, save, remove),
    );
  };

  const newName = h("input", { id: "new-status-name", type: "text", maxlength: 120, required: true, autocomplete: "off" });
  const newType = mappedSelect("new-status-type", "busy", "Presence");
  const create = h(
    "form",
    { class: "card", "aria-labelledby": "create-title" },
    h("h2", { id: "create-title" }, "New custom status"),
    h("label", { for: "new-status-name" }, "Name"),
    newName,
    h("label", { for: "new-status-type" }, "Presence"),
    newType,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create")),
  );
  create.addEventListener("submit", (event) => {
    event.preventDefault();
    api.call<CustomStatus>("POST", "/v1/admin/custom-statuses", { name: newName.value, status_type: newType.value }).then(
      (created) => {
        announce(feedback, `Created “${created.name}”.`);
        newName.value = "";
        void load();
      },
      (e: unknown) => announce(feedback, describe(e), "error"),
    );
  });
  search.addEventListener("input", render);

  replaceChildren(
    main,
    h("h1", { tabindex: -1 }, "Custom statuses"),
    feedback,
    create,
    h(
      "section",
      { class: "card", "aria-labelledby": "list-title" },
      h("h2", { id: "list-title" }, "All custom statuses"),
      h("label", { for: "custom-search" }, "Search"),
      search,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { id: "custom-table" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Presence"), h("th", { scope: "col" }, "Actions"))),
          tbody,
        ),
      ),
    ),
  );
  void load();
  return () => undefined;
};

/** Workspace settings. */
export const settingsPage: Page = (session, main) => {
  const { api } = session;
  const feedback = h("p", { class: "notice", "aria-live": "polite" });
  const check = (id: string, text: string) =>
    [h("input", { id, type: "checkbox" }), h("label", { for: id, class: "check" }, text)] as const;
  const [allowText, allowTextLabel] = check("allow-text", "Allow custom status text");
  const [allowInvisible, allowInvisibleLabel] = check("allow-invisible", "Allow invisible");
  const [calendar, calendarLabel] = check("calendar", "Calendar integration");
  const [autoAway, autoAwayLabel] = check("auto-away", "Away when idle (default for users)");
  const idle = h("input", { id: "idle-limit", type: "number", min: 1, step: 1, inputmode: "numeric" });
  const cap = h("input", { id: "cap", type: "number", min: 0, step: 1, inputmode: "numeric" });
  const show = (s: Settings) => {
    allowText.checked = s.allow_custom_status_text;
    allowInvisible.checked = s.allow_invisible;
    calendar.checked = s.calendar_integration;
    autoAway.checked = s.default_auto_away;
    idle.value = String(s.default_idle_time_limit);
    cap.value = String(s.cap);
  };
  const form = h(
    "form",
    { class: "card" },
    h("div", { class: "check-row" }, allowText, allowTextLabel),
    h("div", { class: "check-row" }, allowInvisible, allowInvisibleLabel),
    h("div", { class: "check-row" }, calendar, calendarLabel),
    h("div", { class: "check-row" }, autoAway, autoAwayLabel),
    h("label", { for: "idle-limit" }, "Idle time limit (seconds, default for users)"),
    idle,
    h("label", { for: "cap" }, "Presence cap (connections; 0 = unlimited)"),
    cap,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Save settings")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    api.call<Settings>("PATCH", "/v1/admin/settings", {
      allow_custom_status_text: allowText.checked,
      allow_invisible: allowInvisible.checked,
      calendar_integration: calendar.checked,
      default_auto_away: autoAway.checked,
      default_idle_time_limit: Number(idle.value),
      cap: Number(cap.value),
    }).then(
      (s) => {
        show(s);
        announce(feedback, "Settings saved.");
      },
      (e: unknown) => announce(feedback, describe(e), "error"),
    );
  });
  replaceChildren(main, h("h1", { tabindex: -1 }, "Workspace settings"), feedback, form);
  api.call<Settings>("GET", "/v1/admin/settings").then(show, (e: unknown) => announce(feedback, describe(e), "error"));
  return () => undefined;
};

/** The presence service (the cap, X1–X5). */
export const servicePage: Page = (session, main) => {
  const { api, client } = session;
  const feedback = h("p", { class: "notice", "aria-live": "polite", id: "service-feedback" });
  const state = h("dl", { class: "facts", id: "cap-state" });
  const show = (c: CapView) =>
    replaceChildren(
      state,
      h("dt", {}, "Presence"),
      h("dd", { id: "cap-enabled", "data-enabled": String(c.enabled) }, c.enabled ? "Enabled" : "Disabled (over the cap)"),
      h("dt", {}, "Connections"),
      h("dd", { id: "cap-count" }, String(c.count)),
      h("dt", {}, "Cap"),
      h("dd", { id: "cap-cap" }, c.cap === 0 ? "Unlimited" : String(c.cap)),
      h("dt", {}, "Peak"),
      h("dd", { id: "cap-peak" }, String(c.peak)),
    );
  const refresh = () => api.call<CapView>("GET", "/v1/admin/cap").then(show, (e: unknown) => announce(feedback, describe(e), "error"));
  const enable = h(
    "button",
    {
      type: "button",
      id: "cap-enable",
      onclick: () =>
        api.call<CapView>("POST", "/v1/admin/cap/enable").then(
          (c) => {
            show(c);
            announce(feedback, "Presence re-enabled.");
          },
          (e: unknown) => {
            announce(feedback, describe(e), "error");
            void refresh();
          },
        ),
    },
    "Re-enable presence",
  );
  replaceChildren(
    main,
    h("h1", { tabindex: -1 }, "Presence service"),
    h(
      "section",
      { class: "card" },
      state,
      h("p", { class: "muted" }, "Over the cap, real-time presence stops until an admin re-enables it, which is refused until the count is below the cap."),
      h("div", { class: "actions" }, enable, h("button", { type: "button", class: "secondary", onclick: () => void refresh() }, "Refresh")),
    ),
    feedback,
  );
  void refresh();
  // The count moves without notice; the enabled state comes with one (X3).
  const timer = setInterval(() => void refresh(), 2000);
  const off = client.on("notice", (n) => {
    if (n.kind === "presence_inactive" || n.kind === "presence_active") void refresh();
  });
  return () => {
    clearInterval(timer);
    off();
  };
};
