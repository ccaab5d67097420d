// The client library's scenarios in a real Chromium page against a real
// presenced: reconnect after a restart, version ordering (W3), and
// activity → away after the idle limit → online on input (D2).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { PresenceClient, randomDeviceId } from "../../clients/js/dist/index.js";
import { Server, presenceOf } from "../../clients/js/test/server.mjs";
import { launch, openPage } from "./browser.mjs";

let server;
let chromium;
const nodeClients = [];

before(async () => {
  // --min-idle-time-limit lets a user's idle limit be 2 s instead of 60 (S2).
  server = await new Server(["--min-idle-time-limit", "1"]).start();
  chromium = await launch();
});
after(async () => {
  for (const c of nodeClients) c.close();
  await chromium?.close();
  await server?.dispose();
});

function watcher(user) {
  const c = new PresenceClient({ url: server.url, token: server.token(user), deviceId: randomDeviceId() });
  nodeClients.push(c);
  return c;
}

/**
 * A page with the library loaded from the server itself (the console's
 * embedded modules) and a client in `window.client`.
 */
async function pageWithClient(user, { activity = false, idleLimitMs } = {}) {
  const page = await openPage(chromium.browser, server.url);
  await page.goto(`${server.url}/console/`);
  await page.evaluate(
    async (token, activity, idleLimitMs) => {
      const lib = await import("/console/assets/index.js");
      const client = new lib.PresenceClient({ url: location.origin, token, backoff: { initialMs: 50, maxMs: 500 } });
      window.lib = lib;
      window.client = client;
      window.seen = [];
      client.on("presence", (p) => window.seen.push(p));
      await client.connect();
      if (activity) {
        window.tracker = new lib.ActivityTracker(client, idleLimitMs ? { idleTimeLimitMs: idleLimitMs } : {});
        window.tracker.start();
      }
    },
    server.token(user),
    activity,
    idleLimitMs,
  );
  return page;
}

test("in a page: reconnect after the server restarts, resubscribed", async () => {
  const page = await pageWithClient("pia");
  const paul = new PresenceClient({
    url: server.url,
    token: server.token("paul"),
    deviceId: randomDeviceId(),
    backoff: { initialMs: 50, maxMs: 500 },
  });
  nodeClients.push(paul);
  await paul.connect();
  await page.evaluate(() => window.client.subscribe(["paul"]));
  await server.stop();
  await page.waitForFunction(() => window.client.state === "reconnecting", { polling: 50, timeout: 10_000 });
  await server.start();
  await page.waitForFunction(() => window.client.state === "open", { polling: 50, timeout: 15_000 });
  // paul reconnects on his own too; once both are back, his change
  // reaches the page, which subscribed again by itself.
  await new Promise((resolve) => (paul.state === "open" ? resolve() : paul.once("ready", resolve)));
  await paul.setStatus({ status: "busy", text: "Back" });
  await page.waitForFunction(
    () => window.client.store.get("paul")?.text === "Back",
    { polling: 50, timeout: 5000 },
  );
  assert.deepEqual(page.offOrigin, []);
  await page.closeContext();
});

test("in a page: w3_stale_versions_are_dropped", async () => {
  const page = await pageWithClient("quinn");
  const quentin = watcher("quentin");
  await quentin.connect();
  await page.evaluate(() => window.client.subscribe(["quentin"]));
  for (const text of ["one", "two", "three"]) await quentin.setStatus({ text });
  await page.waitForFunction(() => window.client.store.get("quentin")?.text === "three", { polling: 50, timeout: 5000 });
  const result = await page.evaluate(() => {
    const store = window.client.store;
    const held = store.get("quentin");
    const versions = window.seen.filter((p) => p.user === "quentin").map((p) => p.version);
    // Replay every update seen, oldest first: all are stale now.
    const replayed = window.seen.filter((p) => p.user === "quentin").map((p) => store.apply(p));
    return { held, versions, replayed, after: store.get("quentin") };
  });
  assert.ok(result.versions.every((v, i) => i === 0 || v > result.versions[i - 1]), `increasing: ${result.versions}`);
  assert.ok(result.replayed.every((applied) => applied === false));
  assert.deepEqual(result.after, result.held);
  await page.closeContext();
});

test("in a page: d2_activity_tracker_goes_away_after_the_idle_limit_and_back_on_input", async () => {
  const rita = server.token("rita");
  // The user's own idle limit: 2 s (allowed by --min-idle-time-limit 1).
  const prefs = await server.rest("PATCH", "/v1/me/preferences", rita, { idle_time_limit: 2, auto_away: true });
  assert.equal(prefs.status, 200, JSON.stringify(prefs.body));
  const watch = watcher("rob");
  await watch.connect();
  await watch.subscribe(["rita"]);

  const page = await pageWithClient("rita", { activity: true });
  await presenceOf(watch, "rita", (e) => e.status === "online");
  const idleSince = Date.now();
  // No input: after the 2 s limit the page reports idle and rita is away.
  await presenceOf(watch, "rita", (e) => e.status === "away", 10_000);
  const waited = Date.now() - idleSince;
  assert.ok(waited >= 1500, `away after ${waited} ms, before the idle limit`);
  assert.equal(await page.evaluate(() => window.tracker.idle), true);
  // A key press is activity: online again.
  await page.keyboard.press("Shift");
  await presenceOf(watch, "rita", (e) => e.status === "online", 5000);
  assert.equal(await page.evaluate(() => window.tracker.idle), false);
  await page.closeContext();
});

test("in a page: pagehide says bye, the device goes offline at once (D7)", async () => {
  const watch = watcher("sam");
  await watch.connect();
  await watch.subscribe(["sue"]);
  const page = await pageWithClient("sue", { activity: true });
  await presenceOf(watch, "sue", (e) => e.status === "online");
  // Navigating away fires pagehide; the tracker closes the client (bye).
  await page.goto("about:blank");
  await presenceOf(watch, "sue", (e) => e.status === "offline", 3000);
  await page.closeContext();
});
