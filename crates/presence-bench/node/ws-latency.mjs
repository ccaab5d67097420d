#!/usr/bin/env node
// Delivery latency as a Node.js `ws` client sees it (issue 10, F0).
//
// Why a Node client: `presence-bench` (Rust, tungstenite) never showed the
// 40 ms tail that every browser and Node client paid before accepted
// sockets got TCP_NODELAY. Once a connection has answered a server ping,
// Linux delays the client's ACKs, and Nagle's algorithm holds the server's
// next small frame until that ACK arrives. This script reproduces what such
// a client measures.
//
// It starts the given `presenced` binary on loopback (embedded backend,
// ephemeral store, cap off, limits raised for the load), opens `watchers`
// sockets that each subscribe to `subscriptions` of `users` publishers
// (50 watchers per change by default, DESIGN §6), lets every socket answer
// a few server pings (`--heartbeat-interval`, 2 s here), then has the
// publishers change their status text at `rate` changes per second in
// total. Each change carries its sequence number in the text, and every
// delivered frame is timed against the send of that exact change.
//
// Usage:
//   node crates/presence-bench/node/ws-latency.mjs --server target/release/presenced \
//     [--rate 1000] [--users 200] [--watchers 1000] [--subscriptions 10] \
//     [--warmup 8] [--duration 20] [--ping 2s]
//
// The `ws` package is installed on first use into target/node-bench (only
// loopback traffic besides that one npm install).

import { spawn, execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..', '..');

function args() {
  const out = {
    server: join(repo, 'target', 'release', 'presenced'),
    rate: 1000,
    users: 200,
    watchers: 1000,
    subscriptions: 10,
    warmup: 8,
    duration: 20,
    ping: '2s',
    wsDir: join(repo, 'target', 'node-bench'),
  };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in out)) throw new Error(`unknown flag ${argv[i]}`);
    out[key] = typeof out[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  return out;
}

/** Installs `ws` into `dir` unless it is there, and loads it. */
function loadWs(dir) {
  if (!existsSync(join(dir, 'node_modules', 'ws'))) {
    mkdirSync(dir, { recursive: true });
    execFileSync('npm', ['install', '--silent', '--no-audit', '--no-fund', '--prefix', dir, 'ws@8'], {
      stdio: 'inherit',
    });
  }
  return createRequire(join(dir, 'package.json'))('ws');
}

const SECRET = 'node-bench-secret-that-is-at-least-32-bytes-long';

function b64url(data) {
  return Buffer.from(data).toString('base64url');
}

/** An HS256 token for `sub`, valid for a day. */
function token(sub) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const now = Math.floor(Date.now() / 1000);
  const claims = b64url(JSON.stringify({ sub, exp: now + 86400, iat: now }));
  const signature = createHmac('sha256', SECRET).update(`${header}.${claims}`).digest('base64url');
  return `${header}.${claims}.${signature}`;
}

/** Starts presenced; resolves with its address once it listens. */
function startServer(opts) {
  const child = spawn(
    opts.server,
    [
      'serve', '--listen', '127.0.0.1:0', '--ephemeral', '--jwt-secret', SECRET, '--cap', '0',
      '--heartbeat-interval', opts.ping,
      '--status-changes-per-second', '1000000', '--status-changes-burst', '1000000',
      '--text-changes-per-minute', '10000000',
      '--socket-messages-per-second', '1000000', '--socket-messages-burst', '1000000',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' } },
  );
  return new Promise((resolveAddr, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      const m = line.match(/^presenced listening on http:\/\/(.+)$/);
      if (m) resolveAddr({ child, addr: m[1] });
    });
    child.on('exit', (code) => reject(new Error(`presenced exited with ${code}`)));
  });
}

function open(WebSocket, url, user) {
  return new Promise((resolveWs, reject) => {
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token(user)}` } });
    ws.once('error', reject);
    ws.on('message', function first(data) {
      if (JSON.parse(data).type === 'ready') {
        ws.off('message', first);
        resolveWs(ws);
      }
    });
  });
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main() {
  const opts = args();
  const WebSocket = loadWs(opts.wsDir);
  const { child, addr } = await startServer(opts);
  try {
    const base = `ws://${addr}/v1/ws?platform=web&device_id=`;
    const sentAt = []; // By sequence number: performance.now() at send.
    let measuring = false;
    let measureFrom = Infinity;
    const latencies = [];
    let deliveries = 0;

    const publishers = [];
    for (let u = 0; u < opts.users; u++) {
      publishers.push(await open(WebSocket, `${base}p${u}`, `pub${u}`));
    }
    const watchers = [];
    for (let w = 0; w < opts.watchers; w++) {
      const ws = await open(WebSocket, `${base}w${w}`, `watch${w}`);
      const users = [];
      for (let s = 0; s < opts.subscriptions; s++) {
        users.push(`pub${(w * opts.subscriptions + s) % opts.users}`);
      }
      ws.on('message', (data) => {
        const now = performance.now();
        const frame = JSON.parse(data);
        if (frame.type !== 'presence' || typeof frame.text !== 'string') return;
        const seq = Number(frame.text.slice(1));
        const at = sentAt[seq];
        if (at === undefined) return;
        if (measuring && at >= measureFrom) {
          latencies.push(now - at);
          deliveries++;
        }
      });
      ws.send(JSON.stringify({ type: 'subscribe', users }));
      watchers.push(ws);
    }

    // Changes: every 10 ms, what the rate owes by the clock (timers drift
    // under load), round-robin over publishers.
    let seq = 0;
    let next = 0;
    const start = performance.now();
    const ticker = setInterval(() => {
      const owed = Math.floor(((performance.now() - start) * opts.rate) / 1000);
      while (seq < owed) {
        const ws = publishers[next];
        next = (next + 1) % publishers.length;
        seq += 1;
        sentAt[seq] = performance.now();
        ws.send(JSON.stringify({ type: 'set_status', text: `s${seq}` }));
      }
    }, 10);

    await new Promise((r) => setTimeout(r, opts.warmup * 1000));
    const firstSeq = seq + 1;
    measureFrom = performance.now();
    measuring = true;
    await new Promise((r) => setTimeout(r, opts.duration * 1000));
    const lastSeq = seq;
    clearInterval(ticker);
    await new Promise((r) => setTimeout(r, 1000)); // Late deliveries.
    measuring = false;

    latencies.sort((a, b) => a - b);
    const changes = lastSeq - firstSeq + 1;
    const expected = changes * ((opts.watchers * opts.subscriptions) / opts.users);
    const fmt = (v) => `${v.toFixed(2)} ms`;
    console.log(
      JSON.stringify({
        server: opts.server,
        rate: opts.rate,
        changes_per_second: +(changes / opts.duration).toFixed(1),
        watchers_per_change: (opts.watchers * opts.subscriptions) / opts.users,
        deliveries,
        delivered_fraction: +(deliveries / expected).toFixed(4),
        p50: fmt(percentile(latencies, 50)),
        p90: fmt(percentile(latencies, 90)),
        p99: fmt(percentile(latencies, 99)),
        p999: fmt(percentile(latencies, 99.9)),
        max: fmt(latencies[latencies.length - 1] ?? NaN),
      }),
    );
    for (const ws of [...publishers, ...watchers]) ws.terminate();
  } finally {
    child.kill('SIGKILL');
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
