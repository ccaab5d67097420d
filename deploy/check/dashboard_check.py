#!/usr/bin/env python3
"""Checks deploy/grafana/presence-dashboard.json against the real binary.

1. The dashboard's shape: schemaVersion >= 36, a `datasource` template
   variable of type prometheus that every panel and query uses, `namespace`
   and `pod` variables, unique panel ids, every panel placed on the grid.
2. Every metric name in a panel expression (and in the template variables
   and annotations) is exported by presenced's real `/metrics`, and every
   label a panel groups by (`sum by (label)`) exists on one of the
   expression's metrics (`pod`, `namespace`, `job`, `instance` come from the
   scrape, `le` from histograms).

The metric names are the union of two live processes:
- an embedded node: `presenced serve --listen 127.0.0.1:0 --ephemeral`;
- a cluster-mode node on a redis-server of its own (free loopback port,
  `--save ''`): `presenced serve --redis redis://127.0.0.1:PORT`.
Both are exercised first (an HTTP request, a WebSocket message that is
rejected) so that labelled metrics without pre-created series show up.

Standard library only. Usage, from the repository root, after
`cargo build -p presenced`:

    python3 deploy/check/dashboard_check.py [--bin target/debug/presenced]
        [--redis-server redis-server] [--dashboard deploy/grafana/presence-dashboard.json]

Exit status 0 when everything is found, 1 otherwise.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SECRET = "dashboard-check-secret-at-least-32-bytes"

# Metrics (and labels) the dashboard may show before the binary exports
# them. Empty: every name must be real.
PENDING_METRICS: set = set()
PENDING_LABELS: set = set()

# Labels added by the scrape (Prometheus Operator / kube-prometheus) or
# implied by the histogram convention, never by presenced itself.
SCRAPE_LABELS = {"pod", "namespace", "job", "instance", "le", "container", "service", "endpoint"}

METRIC_RE = re.compile(r"\b(presence_[a-zA-Z0-9_:]+)")
# A metric-like identifier directly followed by a selector or a range: used
# to catch names that are not ours (typos such as `presnce_…`).
SELECTOR_RE = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[\{\[]")
BY_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}


def fail(problems, message):
    problems.append(message)


# ---------------------------------------------------------------- dashboard


def walk_panels(panels):
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def dashboard_queries(dashboard):
    """(where, expression) for every PromQL expression of the dashboard."""
    for panel in walk_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield f"panel {panel.get('id')} {panel.get('title')!r}", target["expr"]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            if isinstance(query, dict):
                query = query.get("query", "")
            yield f"variable {var.get('name')}", query or ""
    for ann in dashboard.get("annotations", {}).get("list", []):
        if ann.get("expr"):
            yield f"annotation {ann.get('name')!r}", ann["expr"]


def check_shape(dashboard, problems):
    if dashboard.get("schemaVersion", 0) < 36:
        fail(problems, f"schemaVersion {dashboard.get('schemaVersion')} < 36")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        fail(problems, "no `datasource` template variable of type datasource/prometheus")
    for name in ("namespace", "pod"):
        if name not in variables:
            fail(problems, f"no `{name}` template variable")
    ids = set()
    for panel in walk_panels(dashboard.get("panels", [])):
        pid = panel.get("id")
        if pid in ids:
            fail(problems, f"panel id {pid} used twice")
        ids.add(pid)
        if "gridPos" not in panel:
            fail(problems, f"panel {pid} has no gridPos")
        if panel.get("type") == "row":
            continue
        sources = [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]
        for source in sources:
            if not isinstance(source, dict) or source.get("uid") != "${datasource}":
                fail(problems, f"panel {pid} {panel.get('title')!r} does not use ${{datasource}}: {source}")
        if not panel.get("targets"):
            fail(problems, f"panel {pid} {panel.get('title')!r} has no query")
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            if "$namespace" not in expr or "$pod" not in expr:
                fail(problems, f"panel {pid} {panel.get('title')!r}: query ignores $namespace/$pod: {expr}")


# ---------------------------------------------------------------- processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """A presenced process; its address from the `presenced listening on` line."""

    def __init__(self, argv, env=None):
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "RUST_LOG": "warn", **(env or {})},
        )
        found = {}
        done = threading.Event()

        def read():
            for line in self.proc.stdout:
                prefix = "presenced listening on http://"
                if line.startswith(prefix) and "addr" not in found:
                    found["addr"] = line[len(prefix):].strip()
                    done.set()
            done.set()

        threading.Thread(target=read, daemon=True).start()
        if not done.wait(60) or "addr" not in found:
            self.stop()
            raise RuntimeError(f"{' '.join(argv)} did not print its address")
        self.addr = found["addr"]

    def get(self, path):
        with urllib.request.urlopen(f"http://{self.addr}{path}", timeout=10) as response:
            return response.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def token(user):
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": user, "exp": int(time.time()) + 600}).encode())
    signing = header + b"." + claims
    signature = b64(hmac.new(SECRET.encode(), signing, hashlib.sha256).digest())
    return (signing + b"." + signature).decode()


def exercise_websocket(addr, user):
    """Connects a web device and sends `lock` (unsupported on web, D8), so
    presence_rejected_messages_total and presence_ws_messages_total get a
    series. A minimal RFC 6455 client: handshake, one masked text frame,
    read until the error frame, close."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            (
                f"GET /v1/ws?device_id=check&platform=web HTTP/1.1\r\n"
                f"Host: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {token(user)}\r\n\r\n"
            ).encode()
        )
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("WebSocket handshake: connection closed")
            received += chunk
        if b" 101 " not in received.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"WebSocket handshake refused: {received[:200]!r}")

        def frame(opcode, payload):
            mask = os.urandom(4)
            head = bytes([0x80 | opcode])
            n = len(payload)
            head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
            return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

        s.sendall(frame(0x1, b'{"type":"lock","ref":"check"}'))
        deadline = time.time() + 10
        while b'"type":"error"' not in received and time.time() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            received += chunk
        s.sendall(frame(0x8, (1000).to_bytes(2, "big")))


def exported(text):
    """{sample name: set of label names} from a text exposition."""
    names = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?", line)
        if not match:
            continue
        labels = names.setdefault(match.group(1), set())
        if match.group(3):
            labels.update(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', match.group(3)))
    return names


def scrape(node, wait_for=None, timeout=20):
    """`/metrics` of a node after exercising it; with `wait_for`, polls until
    that sample name appears (the aggregator exports once a second)."""
    node.get("/healthz")
    node.get("/readyz")
    exercise_websocket(node.addr, "dashboard-check")
    time.sleep(0.5)
    deadline = time.time() + timeout
    while True:
        names = exported(node.get("/metrics"))
        if wait_for is None or wait_for in names or time.time() > deadline:
            return names
        time.sleep(0.5)


def collect(binary, redis_server):
    union = {}

    def merge(names):
        for name, labels in names.items():
            union.setdefault(name, set()).update(labels)

    # Embedded.
    node = Node([binary, "serve", "--listen", "127.0.0.1:0", "--ephemeral", "--jwt-secret", SECRET])
    try:
        merge(scrape(node))
    finally:
        node.stop()

    # Cluster mode on a redis-server of our own.
    tmp = tempfile.mkdtemp(prefix="dashboard-check-")
    port = free_port()
    redis = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", tmp],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    node = None
    try:
        deadline = time.time() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        node = Node([binary, "serve", "--redis", f"redis://127.0.0.1:{port}", "--listen", "127.0.0.1:0",
                     "--node-id", "dashboard-check", "--data-dir", os.path.join(tmp, "data"),
                     "--jwt-secret", SECRET])
        merge(scrape(node, wait_for="presence_aggregator_stream_lag"))
    finally:
        if node:
            node.stop()
        redis.terminate()
        redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return union


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "presenced"))
    parser.add_argument("--redis-server", default="redis-server")
    parser.add_argument("--dashboard", default=os.path.join(ROOT, "deploy", "grafana", "presence-dashboard.json"))
    args = parser.parse_args()

    with open(args.dashboard, encoding="utf-8") as f:
        dashboard = json.load(f)
    problems = []
    check_shape(dashboard, problems)

    names = collect(args.bin, args.redis_server)
    pending_seen = set()
    used = set()
    for where, expr in dashboard_queries(dashboard):
        metrics = set(METRIC_RE.findall(expr))
        for ident in SELECTOR_RE.findall(expr):
            if ident not in PROMQL_WORDS and not ident.startswith("presence_"):
                fail(problems, f"{where}: {ident!r} is not a presence_ metric: {expr}")
        for metric in sorted(metrics):
            used.add(metric)
            if metric in names:
                continue
            if metric in PENDING_METRICS:
                pending_seen.add(metric)
                continue
            fail(problems, f"{where}: metric {metric} is not exported by presenced")
        for group in BY_RE.findall(expr):
            for label in (l.strip() for l in group.split(",")):
                if not label or label in SCRAPE_LABELS:
                    continue
                owners = [m for m in metrics if label in names.get(m, set())]
                if owners:
                    continue
                pending = [m for m in metrics if (m, label) in PENDING_LABELS or m in PENDING_METRICS]
                if pending:
                    pending_seen.add(f"{pending[0]}{{{label}}}")
                    continue
                fail(problems, f"{where}: no metric of the query has a label {label!r}: {expr}")

    for metric in sorted(PENDING_METRICS & set(names)):
        print(f"notice: pending metric {metric} is exported now: remove it from PENDING_METRICS")
    for metric, label in sorted(PENDING_LABELS):
        if label in names.get(metric, set()):
            print(f"notice: pending label {metric}{{{label}}} is exported now: remove it from PENDING_LABELS")

    print(f"{len(used)} metric names used by the dashboard; {len(names)} exported by presenced "
          f"(embedded + cluster mode)")
    if pending_seen:
        print("pending (allowlisted, not exported yet): " + ", ".join(sorted(pending_seen)))
    unused = sorted(
        n for n in names
        if not any(n == u or n.startswith(u.removesuffix("_bucket") + "_") for u in used)
    )
    if unused:
        print("exported but not on the dashboard: " + ", ".join(unused))
    if problems:
        for problem in problems:
            print(f"FAIL: {problem}")
        return 1
    print("dashboard check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
