// The client against a real presenced: acks and errors by ref, subscribe
// and live updates, W3 on the wire, replaced, reauth.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { PresenceClient, PresenceError, randomDeviceId } from "../dist/index.js";
import { Server, presenceOf, until } from "./server.mjs";

let server;
const clients = [];

before(async () => {
  server = await new Server().start();
});
after(async () => {
  for (const c of clients) c.close();
  await server.dispose();
});

function client(user, options = {}) {
  const c = new PresenceClient({
    url: server.url,
    token: server.token(user, options.admin ? { admin: true } : {}),
    deviceId: options.deviceId ?? randomDeviceId(),
    backoff: { initialMs: 50, maxMs: 500 },
    requestTimeoutMs: 5000,
    ...options.client,
  });
  clients.push(c);
  return c;
}

test("connect resolves with ready and the own state", async () => {
  const c = client("ann");
  const ready = await c.connect();
  assert.equal(ready.session.user, "ann");
  assert.equal(ready.session.device, c.deviceId);
  assert.equal(c.state, "open");
  assert.equal(c.me.status, "online");
});

test("set_status resolves on ack and the own update follows (T2)", async () => {
  const c = client("bea");
  await c.connect();
  const own = until(c, "me", (me) => me.status === "busy" && me.text === "Deep work");
  await c.setStatus({ status: "busy", text: "Deep work" });
  await own;
  assert.equal(c.me.chosen, "busy");
});

test("errors reject with the server's stable code and the request's ref", async () => {
  const c = client("cid");
  await c.connect();
  const cases = [
    [() => c.setStatus({ text: "x".repeat(121) }), "status_text_too_long"],
    [() => c.useCustomStatus("no-such-status"), "custom_status_not_found"],
    [() => c.setStatus({ status: "busy", expiresAt: new Date(Date.now() - 60_000) }), "expiry_not_in_future"],
    [() => c.query([""]), "invalid_user_id"],
  ];
  for (const [call, code] of cases) {
    await assert.rejects(call, (e) => {
      assert.ok(e instanceof PresenceError);
      assert.equal(e.code, code);
      assert.ok(e.ref, "the error echoes the ref");
      return true;
    });
  }
  // The socket survives rejected requests.
  await c.setStatus({ status: "away" });
});

test("subscribe returns a snapshot and w2 live updates reach the store", async () => {
  const watcher = client("dee");
  const dan = client("dan");
  await watcher.connect();
  const [entry] = await watcher.subscribe(["dan"]);
  assert.equal(entry.user, "dan");
  assert.equal(entry.status, "offline");
  await dan.connect();
  const seen = until(watcher, "presence", (e) => e.user === "dan" && e.status === "busy" && e.text === "Call");
  await dan.setStatus({ status: "busy", text: "Call" });
  await seen;
  assert.equal(watcher.store.get("dan").text, "Call");
});

test("w3_client_drops_updates_older_than_held", async () => {
  const watcher = client("eve");
  const emma = client("emma");
  await watcher.connect();
  await emma.connect();
  await watcher.subscribe(["emma"]);
  const firstSeen = until(watcher, "presence", (e) => e.user === "emma" && e.text === "one");
  await emma.setStatus({ text: "one" });
  const first = await firstSeen;
  const secondSeen = until(watcher, "presence", (e) => e.user === "emma" && e.text === "two");
  await emma.setStatus({ text: "two" });
  const second = await secondSeen;
  assert.ok(second.version > first.version);
  // A late copy of the older update (as a racing snapshot could deliver) is dropped.
  assert.equal(watcher.store.apply(first), false);
  // A query answered with the current version changes nothing either.
  await watcher.query(["emma"]);
  assert.equal(watcher.store.get("emma").text, "two");
  assert.equal(watcher.store.get("emma").version, second.version);
});

test("a second connection of the same device replaces the first, which does not reconnect", async () => {
  const deviceId = randomDeviceId();
  const first = client("fay", { deviceId });
  await first.connect();
  const replaced = until(first, "state", (s) => s === "replaced");
  const second = client("fay", { deviceId });
  await second.connect();
  await replaced;
  await assert.rejects(first.setStatus({ status: "busy" }), (e) => e.code === "closed");
  await second.setStatus({ status: "busy" });
});

test("r2_token_provider_answers_token_expiring_with_reauth", async () => {
  // A one-second token is inside the notice window at once: the server
  // sends token_expiring immediately and the client reauths.
  let calls = 0;
  const c = client("gus", {
    client: {
      token: undefined,
      tokenProvider: () => {
        calls += 1;
        return server.token("gus", { ttl: calls === 1 ? "1s" : "1h" });
      },
    },
  });
  const notice = until(c, "notice", (n) => n.kind === "token_expiring");
  await c.connect();
  await notice;
  // The reauth's ack has come back once a later request is answered
  // (replies keep order on one socket).
  await c.query(["gus"]);
  assert.equal(calls, 2);
  assert.equal(c.state, "open");
});

test("close sends bye: the device is removed at once (D7)", async () => {
  const watcher = client("hal");
  const hugo = client("hugo");
  await watcher.connect();
  await hugo.connect();
  await watcher.subscribe(["hugo"]);
  await presenceOf(watcher, "hugo", (e) => e.status === "online");
  const offline = until(watcher, "presence", (e) => e.user === "hugo" && e.status === "offline", 3000);
  hugo.close();
  await offline;
  assert.equal(hugo.state, "closed");
});
