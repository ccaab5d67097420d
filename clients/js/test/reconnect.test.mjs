// Reconnect after the server restarts: the client backs off within its
// bounds, reconnects, resubscribes and resyncs what it watches.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PresenceClient, backoffCeiling, randomDeviceId } from "../dist/index.js";
import { Server, presenceOf, until } from "./server.mjs";

test("reconnect after a server restart resubscribes and resyncs (W4)", async (t) => {
  const server = await new Server().start();
  t.after(() => server.dispose());
  const backoff = { initialMs: 50, maxMs: 400 };
  const make = (user) =>
    new PresenceClient({ url: server.url, token: server.token(user), deviceId: randomDeviceId(), backoff });
  const watcher = make("ivy");
  const ian = make("ian");
  t.after(() => {
    watcher.close();
    ian.close();
  });
  await watcher.connect();
  await ian.connect();
  await watcher.subscribe(["ian"]);
  await ian.setStatus({ status: "away", text: "Before restart" });
  await presenceOf(watcher, "ian", (e) => e.text === "Before restart");

  const delays = [];
  watcher.on("reconnecting", (r) => delays.push(r));
  const notices = [];
  watcher.on("notice", (n) => notices.push(n.kind));
  const down = until(watcher, "disconnect");
  await server.stop(); // SIGTERM: drains with `shutting_down`
  const lost = await down;
  assert.equal(lost.willReconnect, true);
  assert.ok(notices.includes("shutting_down"), `notices: ${notices}`);
  // While the server is down, attempts fail and back off.
  await until(watcher, "reconnecting", (r) => r.attempt >= 3, 10_000);

  const watcherBack = until(watcher, "ready", () => true, 15_000);
  const ianBack = until(ian, "ready", () => true, 15_000);
  await server.start();
  await Promise.all([watcherBack, ianBack]);
  assert.equal(watcher.state, "open");
  for (const { attempt, delayMs } of delays) {
    assert.ok(delayMs >= 0 && delayMs <= backoffCeiling(attempt - 1, backoff), `attempt ${attempt}: ${delayMs}`);
  }
  // The chosen status survived the restart (M3), and the watcher, which
  // resubscribed on its own, sees ian's changes after it.
  assert.equal(ian.me.chosen, "away");
  await ian.setStatus({ status: "busy", text: "After restart" });
  await presenceOf(watcher, "ian", (e) => e.status === "busy" && e.text === "After restart");
});
