// A real `presenced` for the tests: started on a free loopback port with a
// fresh --data-dir, tokens minted with `presenced token`. Waiting is always
// for an event (a stdout line, a client event), with a deadline.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../../..");
export const PRESENCED_BIN = process.env.PRESENCED_BIN ?? join(repo, "target/debug/presenced");
const SECRET = "js-client-tests-secret-0123456789abcdef";

/** One presenced process (restartable on the same port). */
export class Server {
  constructor(extraArgs = []) {
    this.extraArgs = extraArgs;
    this.dataDir = mkdtempSync(join(tmpdir(), "presence-js-"));
    this.child = undefined;
    this.port = 0;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts presenced and resolves once it listens. */
  async start() {
    const args = ["serve", "--listen", `127.0.0.1:${this.port}`, "--data-dir", this.dataDir,
      "--jwt-secret", SECRET, ...this.extraArgs];
    const child = spawn(PRESENCED_BIN, args, {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, RUST_LOG: process.env.E2E_LOG ?? "warn" },
    });
    this.child = child;
    const lines = createInterface({ input: child.stdout });
    const port = await new Promise((resolvePort, reject) => {
      const timer = setTimeout(() => reject(new Error("presenced did not listen within 20 s")), 20_000);
      child.once("exit", (code) => reject(new Error(`presenced exited (${code}) before listening`)));
      lines.on("line", (line) => {
        const m = /^presenced listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolvePort(Number(m[1]));
        }
      });
    });
    this.port = port;
    return this;
  }

  /** Stops presenced (SIGTERM: it drains, telling sockets `shutting_down`) and waits for the exit. */
  async stop(signal = "SIGTERM") {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    await exited;
    this.child = undefined;
  }

  /** Stops it and removes its data. */
  async dispose() {
    await this.stop("SIGKILL");
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** A token for `user` (admin role with `admin: true`). */
  token(user, { admin = false, ttl = "1h" } = {}) {
    const args = ["token", "--user", user, "--username", user, "--jwt-secret", SECRET, "--ttl", ttl];
    if (admin) args.push("--admin");
    return execFileSync(PRESENCED_BIN, args, { encoding: "utf8" }).trim();
  }

  /** A REST call as `token`; resolves with `{status, body}`. */
  async rest(method, path, token, body) {
    const res = await fetch(this.url + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, body: await res.json() };
  }
}

/**
 * Resolves with the first payload of `emitter`'s `event` that satisfies
 * `predicate` (checking `current()` first, if given), or rejects after
 * `timeoutMs`.
 */
export function until(emitter, event, predicate = () => true, timeoutMs = 10_000) {
  return new Promise((resolveWait, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no matching '${event}' event within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = emitter.on(event, (payload) => {
      if (predicate(payload)) {
        clearTimeout(timer);
        off();
        resolveWait(payload);
      }
    });
  });
}

/**
 * Resolves once `client`'s store holds an entry of `user` that satisfies
 * `predicate`: at once if it already does, else on the matching update.
 */
export function presenceOf(client, user, predicate, timeoutMs = 10_000) {
  const held = client.store.get(user);
  if (held && predicate(held)) return Promise.resolve(held);
  return until(client, "presence", (e) => e.user === user && predicate(e), timeoutMs);
}
