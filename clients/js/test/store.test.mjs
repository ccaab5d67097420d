// W3 in the store: an entry whose version is not above the held one is dropped.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PresenceStore } from "../dist/index.js";

test("w3_store_drops_stale_and_repeated_versions", () => {
  const store = new PresenceStore();
  const seen = [];
  store.onUser("alice", (e) => seen.push(e.version));
  const check = (version, status, applied) =>
    assert.equal(store.apply({ user: "alice", status, text: null, version }), applied, `version ${version}`);
  check(5, "online", true);
  check(3, "away", false); // older
  check(5, "busy", false); // repeated
  check(9, "busy", true);
  check(7, "offline", false);
  assert.equal(store.get("alice").status, "busy");
  assert.deepEqual(seen, [5, 9]);
});
