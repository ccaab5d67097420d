// Backoff bounds: full jitter stays within [0, min(max, initial·2^n)].
import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffCeiling, backoffDelay } from "../dist/index.js";

test("backoff ceiling doubles from initialMs and stops at maxMs", () => {
  const options = { initialMs: 100, maxMs: 1000 };
  const cases = [[0, 100], [1, 200], [2, 400], [3, 800], [4, 1000], [10, 1000], [5000, 1000]];
  for (const [attempt, ceiling] of cases) {
    assert.equal(backoffCeiling(attempt, options), ceiling, `attempt ${attempt}`);
  }
});

test("backoff delay is full jitter: 0 at random 0, just under the ceiling at random → 1", () => {
  const options = { initialMs: 100, maxMs: 1000 };
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = backoffCeiling(attempt, options);
    assert.equal(backoffDelay(attempt, options, () => 0), 0);
    const top = backoffDelay(attempt, options, () => 0.999999);
    assert.ok(top <= ceiling && top >= ceiling - 1, `attempt ${attempt}: ${top} vs ${ceiling}`);
  }
});

test("backoff defaults are 500 ms doubling to 30 s", () => {
  assert.equal(backoffCeiling(0), 500);
  assert.equal(backoffCeiling(6), 30_000);
  assert.equal(backoffCeiling(60), 30_000);
});
