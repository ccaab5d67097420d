// The console's cluster page against a real cluster: a redis-server and
// two presenced nodes, four shards; the page lists both nodes and a leader
// for every shard.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import { Server } from "../../clients/js/test/server.mjs";
import { launch, openPage, screenshot, signIn } from "./browser.mjs";

let redis;
let nodes = [];
let chromium;

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

async function startRedis() {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("redis-server did not start within 10 s")), 10_000);
    child.once("exit", (code) => reject(new Error(`redis-server exited (${code})`)));
    lines.on("line", (line) => {
      if (line.includes("Ready to accept connections")) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  lines.on("line", () => undefined);
  return { url: `redis://127.0.0.1:${port}`, stop: () => child.kill("SIGKILL") };
}

before(async () => {
  redis = await startRedis();
  for (const id of ["node-a", "node-b"]) {
    nodes.push(await new Server(["--redis", redis.url, "--shards", "4", "--node-id", id]).start());
  }
  chromium = await launch();
});
after(async () => {
  await chromium?.close();
  for (const node of nodes) await node.dispose();
  redis?.stop();
});

test("the cluster page lists the nodes and every shard's leader", async () => {
  const [a] = nodes;
  const page = await openPage(chromium.browser, a.url);
  await signIn(page, a.url, a.token("ops", { admin: true }));
  await page.goto(`${a.url}/console/#/admin/cluster`);
  // Leases are taken within a few seconds of start; the page refreshes itself.
  await page.waitForFunction(
    () => {
      const rows = [...document.querySelectorAll("#shard-table tbody tr")];
      const nodes = [...document.querySelectorAll("#node-list li")].map((li) => li.dataset.node);
      return rows.length === 4 && rows.every((r) => r.dataset.leader !== "") && nodes.includes("node-a") && nodes.includes("node-b");
    },
    { polling: 100, timeout: 20_000 },
  ).catch(async (e) => {
    await screenshot(page, "console-admin-cluster-failed");
    throw e;
  });
  const leaders = await page.$$eval("#shard-table tbody tr", (rows) => rows.map((r) => r.dataset.leader));
  assert.ok(leaders.every((l) => l === "node-a" || l === "node-b"), `leaders: ${leaders}`);
  // Every shard's stream lag is shown, also for the shards the other node
  // leads (entries after the stored cursor, read from Redis).
  const lags = await page.$$eval("#shard-table tbody tr", (rows) => rows.map((r) => r.cells[r.cells.length - 1].textContent));
  assert.ok(lags.every((l) => /^\d+$/.test(l)), `lags: ${lags}`);
  await screenshot(page, "console-admin-cluster-2-nodes");
  assert.deepEqual(page.offOrigin, []);
  await page.closeContext();
});
