// The web console in headless Chromium against a real presenced:
// every page (screenshots in target/browser-artifacts/), no request to
// another origin, the CSP, labels, keyboard and phone width; custom
// statuses across three sessions in real time (C3); the presence cap.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { PresenceClient, randomDeviceId } from "../../clients/js/dist/index.js";
import { Server } from "../../clients/js/test/server.mjs";
import { launch, openPage, screenshot, signIn, waitForText } from "./browser.mjs";

let server;
let chromium;

before(async () => {
  server = await new Server().start();
  chromium = await launch();
});
after(async () => {
  await chromium?.close();
  await server?.dispose();
});

const PAGES = ["status", "watch", "admin/statuses", "admin/settings", "admin/service", "admin/cluster"];

/** Inputs without a label (by `<label for>`, wrapping label, or aria-label). */
function unlabelled(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll("input, select, textarea")]
      .filter((el) => el.type !== "hidden" && el.labels.length === 0 && !el.getAttribute("aria-label"))
      .map((el) => el.outerHTML),
  );
}

test("/console is served with a strict Content-Security-Policy", async () => {
  for (const path of ["/console", "/console/", "/console/console.css", "/console/assets/console/app.js"]) {
    const res = await fetch(server.url + path);
    assert.equal(res.status, 200, path);
    const csp = res.headers.get("content-security-policy");
    for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]) {
      assert.ok(csp.includes(directive), `${path}: ${csp} lacks ${directive}`);
    }
    assert.equal(res.headers.get("x-content-type-options"), "nosniff");
  }
  const missing = await fetch(server.url + "/console/assets/nope.js");
  assert.equal(missing.status, 404);
});

test("every console page: screenshot, no other origin, labels, keyboard, CSP enforced", async () => {
  const page = await openPage(chromium.browser, server.url);
  await page.goto(`${server.url}/console/`);
  await page.waitForSelector("#token");
  await screenshot(page, "console-signin");
  // Keyboard only: the token field has focus, Tab reaches the button, Enter submits.
  assert.equal(await page.evaluate(() => document.activeElement?.id), "token");
  await page.keyboard.type(server.token("root", { admin: true }));
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Sign in");
  await page.keyboard.press("Enter");
  await page.waitForSelector('#conn-state[data-state="open"]');

  for (const name of PAGES) {
    await page.goto(`${server.url}/console/#/${name}`);
    await page.waitForFunction((path) => document.querySelector(`nav a[aria-current="page"]`)?.dataset.path === path,
      { polling: 50, timeout: 5000 }, `#/${name}`);
    await page.waitForNetworkIdle({ idleTime: 200, timeout: 5000 }).catch(() => undefined);
    await screenshot(page, `console-${name.replace("/", "-")}`);
    assert.deepEqual(await unlabelled(page), [], `unlabelled fields on ${name}`);
  }
  // Nav links are reachable by keyboard: focus the first one and follow it.
  await page.focus('nav a[data-path="#/watch"]');
  await page.keyboard.press("Enter");
  await page.waitForSelector('nav a[aria-current="page"][data-path="#/watch"]');

  // The policy is enforced: an injected inline script does not run.
  const ran = await page.evaluate(() => {
    const s = document.createElement("script");
    s.textContent = "window.__inline = true";
    document.body.appendChild(s);
    return window.__inline === true;
  });
  assert.equal(ran, false, "inline script ran despite the CSP");
  assert.deepEqual(page.offOrigin, [], "requests to another origin");
  assert.deepEqual(page.errors.filter((e) => !e.includes("Content Security Policy")), []);
  await page.closeContext();
});

test("the console is readable at 390 px (phone width)", async () => {
  const page = await openPage(chromium.browser, server.url, { width: 390, height: 844 });
  await signIn(page, server.url, server.token("root", { admin: true }));
  for (const name of ["status", "watch", "admin/statuses", "admin/service"]) {
    await page.goto(`${server.url}/console/#/${name}`);
    await page.waitForSelector(`nav a[aria-current="page"][data-path="#/${name}"]`);
    await page.waitForNetworkIdle({ idleTime: 200, timeout: 5000 }).catch(() => undefined);
    await screenshot(page, `console-phone-${name.replace("/", "-")}`);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `${name}: content is ${width} px wide at a 390 px viewport`);
  }
  assert.deepEqual(page.offOrigin, []);
  await page.closeContext();
});

test("c3: admin creates a custom status, a user selects it, a watcher sees dot and text within 1 s; rename, search, delete, invisible follow", async () => {
  const admin = await openPage(chromium.browser, server.url);
  const user = await openPage(chromium.browser, server.url);
  const watcher = await openPage(chromium.browser, server.url);
  await signIn(admin, server.url, server.token("ada", { admin: true }));
  await signIn(watcher, server.url, server.token("uma"));

  // The admin creates "In a meeting", mapped to busy.
  await admin.goto(`${server.url}/console/#/admin/statuses`);
  await admin.waitForSelector("#new-status-name");
  await admin.type("#new-status-name", "In a meeting");
  await admin.select("#new-status-type", "busy");
  await admin.click("form[aria-labelledby=create-title] button[type=submit]");
  await admin.waitForFunction(() => [...document.querySelectorAll("#custom-table tbody input")].some((i) => i.value === "In a meeting"),
    { polling: 50, timeout: 5000 });
  await screenshot(admin, "c3-admin-created");

  // The watcher watches tom.
  await watcher.goto(`${server.url}/console/#/watch`);
  await watcher.waitForSelector("#watch-user");
  await watcher.type("#watch-user", "tom");
  await watcher.keyboard.press("Enter");
  await watcher.waitForSelector('li[data-user="tom"] .badge[data-status="offline"]');

  // tom signs in (the status menu is his first page) and picks it.
  await signIn(user, server.url, server.token("tom"));
  await watcher.waitForSelector('li[data-user="tom"] .badge[data-status="online"]');
  await user.waitForSelector("#custom-statuses .custom-choice");
  const picked = Date.now();
  await user.click("#custom-statuses .custom-choice");
  await watcher.waitForFunction(() => {
    const badge = document.querySelector('li[data-user="tom"] .badge');
    return badge?.dataset.status === "busy" && badge.textContent.includes("In a meeting");
  }, { polling: 20, timeout: 1000 });
  const shownAfter = Date.now() - picked;
  await waitForText(user, "#my-status", "In a meeting");
  await screenshot(watcher, "c3-watcher-sees-status");

  // The admin renames it: the watcher sees the new text (C3).
  const row = await admin.waitForSelector('#custom-table tbody tr[data-id] input[type=text]');
  await row.click({ clickCount: 3 });
  await admin.keyboard.press("Backspace");
  await row.type("In a workshop");
  const renamed = Date.now();
  await admin.click("#custom-table tbody tr[data-id] td.actions button");
  await watcher.waitForFunction(() => document.querySelector('li[data-user="tom"] .badge')?.textContent.includes("In a workshop"),
    { polling: 20, timeout: 1000 });
  const renameShownAfter = Date.now() - renamed;
  await waitForText(user, "#my-status", "In a workshop");
  await screenshot(watcher, "c3-watcher-sees-rename");
  console.log(`c3: shown to the watcher ${shownAfter} ms after the pick, ${renameShownAfter} ms after the rename`);

  // Search filters the list.
  await admin.type("#custom-search", "zzz");
  await waitForText(admin, "#custom-table tbody", "No match.");
  await admin.$eval("#custom-search", (input) => (input.value = ""));
  await admin.type("#custom-search", "works");
  await admin.waitForFunction(() => document.querySelectorAll("#custom-table tbody tr[data-id]").length === 1,
    { polling: 50, timeout: 2000 });

  // Deleting it leaves tom busy with the name as plain text (C3).
  admin.once("dialog", (dialog) => dialog.accept());
  await admin.click("#custom-table tbody tr[data-id] button.danger");
  await waitForText(admin, "main .notice", "Deleted");
  await waitForText(user, "#my-status", "In a workshop");
  const afterDelete = await watcher.$eval('li[data-user="tom"] .badge', (b) => [b.dataset.status, b.textContent]);
  assert.equal(afterDelete[0], "busy");
  assert.ok(afterDelete[1].includes("In a workshop"));

  // tom goes invisible from the menu: the watcher sees him offline, without text (A3, T3).
  await user.click('input[name=status][value="invisible"]');
  await user.$eval("#status-text", (input) => (input.value = ""));
  await user.click("form[aria-labelledby=status-menu-title] button[type=submit]");
  await watcher.waitForFunction(() => {
    const badge = document.querySelector('li[data-user="tom"] .badge');
    return badge?.dataset.status === "offline" && badge.querySelector(".status-text") === null;
  }, { polling: 20, timeout: 1000 });
  await waitForText(user, "#my-status", "Invisible");
  for (const page of [admin, user, watcher]) {
    assert.deepEqual(page.offOrigin, []);
    await page.closeContext();
  }
});

test("x4: the console shows presence disabled over the cap, the refused re-enable, then a successful one", async () => {
  const admin = await openPage(chromium.browser, server.url);
  await signIn(admin, server.url, server.token("cap-admin", { admin: true }));
  // Cap 3 through the settings page.
  await admin.goto(`${server.url}/console/#/admin/settings`);
  await admin.waitForFunction(() => document.querySelector("#cap")?.value === "200", { polling: 50, timeout: 5000 });
  await admin.$eval("#cap", (input) => (input.value = ""));
  await admin.type("#cap", "3");
  await admin.click("form button[type=submit]");
  await waitForText(admin, "main .notice", "Settings saved.");

  // Over the cap: the admin's socket and three more.
  const extra = [];
  for (const user of ["cap1", "cap2", "cap3"]) {
    const c = new PresenceClient({ url: server.url, token: server.token(user), deviceId: randomDeviceId() });
    await c.connect();
    extra.push(c);
  }
  await admin.goto(`${server.url}/console/#/admin/service`);
  await admin.waitForSelector('#cap-enabled[data-enabled="false"]', { timeout: 10_000 });
  await admin.waitForSelector("#banner:not([hidden])");
  await admin.click("#cap-enable");
  await waitForText(admin, "#service-feedback", "broadcast_enable_refused");
  await screenshot(admin, "cap-refused");

  // Below the cap again: re-enabling works.
  extra.pop().close();
  extra.pop().close();
  await admin.waitForFunction(() => Number(document.querySelector("#cap-count")?.textContent) < 3, { polling: 100, timeout: 10_000 });
  await admin.click("#cap-enable");
  await admin.waitForSelector('#cap-enabled[data-enabled="true"]', { timeout: 5000 });
  await waitForText(admin, "#service-feedback", "re-enabled");
  await admin.waitForSelector("#banner[hidden]");
  await screenshot(admin, "cap-reenabled");
  for (const c of extra) c.close();
  // Leave the cap as it was for other tests.
  await server.rest("PATCH", "/v1/admin/settings", server.token("cap-admin", { admin: true }), { cap: 200 });
  assert.deepEqual(admin.offOrigin, []);
  await admin.closeContext();
});
