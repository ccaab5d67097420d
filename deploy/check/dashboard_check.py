#!/usr/bin/env python3
"""Checks deploy/grafana/presence-dashboard.json against the real binary.

1. The dashboard's shape: the schemaVersion of the Grafana version it
   requires (`__requires`), a `datasource` template variable of type
   prometheus that every panel and query uses, `cluster`, `namespace`,
   `job` and `pod` variables that every query filters on, per-second panels
   with rate() (never increase() over $__rate_interval, whose meaning
   changes with the zoom), unique panel ids, every panel placed on the grid
   and linked to a section of docs/operations.md that exists.
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

With `--promtool`, both `/metrics` texts also go through `promtool check
metrics` (Prometheus's own lint of the exposition format and naming).

3. With `--prometheus`, the queries are evaluated by a real Prometheus:
   a redis-server and a 3-node cluster (one redis-server, 16 shards) are
   started, a `prometheus` process scrapes them every second as the job
   and namespace the chart's rules select (`--rules`: a rule file, loaded
   too), while WebSocket clients on every node subscribe to each other and
   change their status. Then, through the HTTP API: every dashboard query
   (variables substituted) must parse and return a series with a number
   unless EXPECTED_EMPTY says why it may not; every alert expression must
   parse, and the series it compares must exist; every loaded rule must
   evaluate with health "ok" and no alert may be active. Finally a node is
   killed (its node lease lapses: PresenceNodeLeaseLapses must fire), then
   every node is stopped (PresenceDown must become pending).

Standard library only. Usage, from the repository root, after
`cargo build -p presenced`:

    python3 deploy/check/dashboard_check.py [--bin target/debug/presenced]
        [--redis-server redis-server] [--dashboard deploy/grafana/presence-dashboard.json]
        [--promtool promtool] [--prometheus prometheus --rules RULES.yaml]

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
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SECRET = "dashboard-check-secret-at-least-32-bytes"

# Metrics (and labels) the dashboard may show before the binary exports
# them. Empty: every name must be real.
PENDING_METRICS: set = set()
PENDING_LABELS: set = set()

# Labels added by the scrape (Prometheus Operator / kube-prometheus) or
# implied by the histogram convention, never by presenced itself.
SCRAPE_LABELS = {"pod", "namespace", "job", "instance", "le", "container", "service", "endpoint", "cluster"}
# Series Prometheus makes itself for every target.
SCRAPE_METRICS = {"up"}
# The schemaVersion a dashboard gets when saved by each Grafana version it
# may require (Grafana's own migrations: 9.0 writes 36, 9.1-9.4 37,
# 9.5-10.2 38, 10.3+ 39).
GRAFANA_SCHEMA = {"9.0": 36, "9.1": 37, "9.2": 37, "9.3": 37, "9.4": 37, "9.5": 38,
                  "10.0": 38, "10.1": 38, "10.2": 38, "10.3": 39, "10.4": 39, "11.0": 39}
SELECTOR_VARIABLES = ("cluster", "namespace", "job", "pod")
# Routes of Prometheus scrapes and Kubernetes probes, kept out of API panels.
PROBE_ROUTES = "/metrics|/healthz|/readyz"
# Panels issue 13 asked for, by title.
REQUIRED_PANELS = ("HTTP API latency by route", "Backend write latency",
                   "Redis errors by kind, and script reloads")
OPERATIONS_MD = os.path.join(ROOT, "docs", "operations.md")

METRIC_RE = re.compile(r"\b((?:presence|process)_[a-zA-Z0-9_:]+)")
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


def github_anchors(markdown_path):
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    with open(markdown_path, encoding="utf-8") as f:
        for line in f:
            match = re.match(r"#+\s+(.*)", line)
            if match:
                text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
                anchors.add(text.replace(" ", "-"))
    return anchors


def check_shape(dashboard, problems):
    grafana = next((r.get("version", "") for r in dashboard.get("__requires", []) if r.get("id") == "grafana"), "")
    wanted = GRAFANA_SCHEMA.get(".".join(grafana.split(".")[:2]))
    if wanted is None:
        fail(problems, f"__requires names Grafana {grafana!r}: add its schemaVersion to GRAFANA_SCHEMA")
    elif dashboard.get("schemaVersion") != wanted:
        fail(problems, f"schemaVersion {dashboard.get('schemaVersion')} is not Grafana {grafana}'s ({wanted})")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        fail(problems, "no `datasource` template variable of type datasource/prometheus")
    for name in SELECTOR_VARIABLES + ("runbook",):
        if name not in variables:
            fail(problems, f"no `{name}` template variable")
    anchors = github_anchors(OPERATIONS_MD)
    links = [(f"panel {p.get('id')} {p.get('title')!r}", link.get("url", ""))
             for p in walk_panels(dashboard.get("panels", [])) for link in p.get("links", [])]
    links += [("dashboard link", link.get("url", "")) for link in dashboard.get("links", [])]
    for where, url in links:
        if not url.startswith("${runbook}#"):
            fail(problems, f"{where}: link {url} does not point into ${{runbook}} (docs/operations.md)")
        elif url.split("#", 1)[1] not in anchors:
            fail(problems, f"{where}: docs/operations.md has no heading #{url.split('#', 1)[1]}")
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
        if not any(link.get("url", "").startswith("${runbook}#") for link in panel.get("links", [])):
            fail(problems, f"panel {pid} {panel.get('title')!r} has no runbook link")
    for where, expr in dashboard_queries(dashboard):
        missing = [v for v in SELECTOR_VARIABLES if f"${v}" not in expr]
        if missing and not (where.startswith("variable") and where.split()[1] in SELECTOR_VARIABLES):
            fail(problems, f"{where}: query ignores {', '.join('$' + v for v in missing)}: {expr}")
        if re.search(r"\bincrease\([^\]]*\[\$__rate_interval\]", expr):
            fail(problems, f"{where}: increase() over $__rate_interval changes meaning with the zoom: use rate()")
        # HTTP panels show either the API or the scrapes and probes, never
        # both mixed: Prometheus's own traffic must not pass for clients'.
        if re.search(r"\bpresence_http_request", expr) and \
                f'route!~"{PROBE_ROUTES}"' not in expr and f'route=~"{PROBE_ROUTES}"' not in expr:
            fail(problems, f'{where}: HTTP query neither excludes nor selects route=~"{PROBE_ROUTES}": {expr}')
    titles = {p.get("title") for p in walk_panels(dashboard.get("panels", []))}
    for title in REQUIRED_PANELS:
        if title not in titles:
            fail(problems, f"no panel {title!r}")


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


def ws_frame(opcode, payload):
    """One masked client frame (RFC 6455)."""
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_connect(addr, user, device_id="check", platform="web"):
    """A WebSocket to `/v1/ws` after the handshake: (socket, bytes read past
    the handshake)."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /v1/ws?device_id={device_id}&platform={platform} HTTP/1.1\r\n"
            f"Host: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token(user)}\r\n\r\n"
        ).encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = s.recv(4096)
        if not chunk:
            s.close()
            raise RuntimeError("WebSocket handshake: connection closed")
        received += chunk
    if b" 101 " not in received.split(b"\r\n", 1)[0]:
        s.close()
        raise RuntimeError(f"WebSocket handshake refused: {received[:200]!r}")
    return s, received.split(b"\r\n\r\n", 1)[1]


def exercise_websocket(addr, user):
    """Connects a web device and sends `lock` (unsupported on web, D8), so
    presence_rejected_messages_total and presence_ws_messages_total get a
    series. A minimal RFC 6455 client: handshake, one masked text frame,
    read until the error frame, close."""
    s, received = ws_connect(addr, user)
    with s:
        s.sendall(ws_frame(0x1, b'{"type":"lock","ref":"check"}'))
        deadline = time.time() + 10
        while b'"type":"error"' not in received and time.time() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            received += chunk
        s.sendall(ws_frame(0x8, (1000).to_bytes(2, "big")))


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
    """`/metrics` text of a node after exercising it; with `wait_for`, polls
    until that sample name appears (the aggregator exports once a second)."""
    node.get("/healthz")
    node.get("/readyz")
    exercise_websocket(node.addr, "dashboard-check")
    time.sleep(0.5)
    deadline = time.time() + timeout
    while True:
        text = node.get("/metrics")
        if wait_for is None or wait_for in exported(text) or time.time() > deadline:
            return text


def start_redis(redis_server, directory):
    """A throw-away redis-server on a free loopback port: (process, port)."""
    port = free_port()
    redis = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return redis, port
        except OSError:
            pass
        if time.time() > deadline:
            redis.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)


def cluster_node(binary, port, node_id, data_dir):
    return Node([binary, "serve", "--redis", f"redis://127.0.0.1:{port}", "--listen", "127.0.0.1:0",
                 "--node-id", node_id, "--data-dir", data_dir, "--jwt-secret", SECRET])


def collect(binary, redis_server):
    """(union of {sample name: label names}, {mode: /metrics text})."""
    union = {}
    texts = {}

    def merge(mode, text):
        texts[mode] = text
        for name, labels in exported(text).items():
            union.setdefault(name, set()).update(labels)

    # Embedded.
    node = Node([binary, "serve", "--listen", "127.0.0.1:0", "--ephemeral", "--jwt-secret", SECRET])
    try:
        merge("embedded", scrape(node))
    finally:
        node.stop()

    # Cluster mode on a redis-server of our own.
    tmp = tempfile.mkdtemp(prefix="dashboard-check-")
    redis, port = start_redis(redis_server, tmp)
    node = None
    try:
        node = cluster_node(binary, port, "dashboard-check", os.path.join(tmp, "data"))
        merge("cluster", scrape(node, wait_for="presence_aggregator_stream_lag"))
    finally:
        if node:
            node.stop()
        redis.terminate()
        redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return union, texts


def promtool_check_metrics(promtool, texts, problems):
    """`promtool check metrics` on each node's real `/metrics` text."""
    for mode, text in sorted(texts.items()):
        result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        if result.returncode != 0:
            fail(problems, f"promtool check metrics ({mode} node): {(result.stdout + result.stderr).strip()}")
        else:
            print(f"promtool check metrics ({mode} node): ok")


# ---------------------------------------------------------------- live Prometheus

# How the live check sets the dashboard's variables: the cluster is scraped
# as job presence-metrics in namespace presence (what the chart's default
# rules select), every pod; Grafana's interval variables for a 1 s scrape.
VARIABLES = {
    "namespace": "presence",
    "job": "presence-metrics",
    "pod": ".*",
    "cluster": ".*",
    "__rate_interval": "10s",
    "__interval": "2s",
    "__range": "1m",
}
# Dashboard panels (by title) that may have no data on a healthy cluster,
# and why. Any other query must return a series with a number.
EXPECTED_EMPTY = {
    "Slow consumers dropped": "no socket's queue fills in the check",
}
SCRAPE_SECONDS = 25
# Labels a dashboard variable offers that a single-cluster scrape lacks.
OPTIONAL_LABELS = {"cluster"}


def substitute(expr, problems, where):
    def one(match):
        name = match.group(1) or match.group(2)
        if name not in VARIABLES:
            fail(problems, f"{where}: unknown variable ${name} in {expr}")
            return match.group(0)
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)


class Prometheus:
    """A `prometheus` process scraping `targets` ({pod: address}) every
    second as job presence-metrics, namespace presence, with `rules`."""

    def __init__(self, binary, targets, rules, directory):
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [os.path.abspath(rules)] if rules else [],
            "scrape_configs": [{
                "job_name": "presence-metrics",
                "static_configs": [
                    {"targets": [addr], "labels": {"namespace": "presence", "pod": pod}}
                    for pod, addr in sorted(targets.items())
                ],
            }],
        }
        path = os.path.join(directory, "prometheus.yml")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f)  # JSON is YAML
        self.addr = f"127.0.0.1:{free_port()}"
        self.log = open(os.path.join(directory, "prometheus.log"), "w+", encoding="utf-8")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={path}", f"--storage.tsdb.path={os.path.join(directory, 'tsdb')}",
             f"--web.listen-address={self.addr}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.addr}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.log.seek(0)
                raise RuntimeError(f"prometheus did not start: {self.log.read()[-2000:]}")
            time.sleep(0.2)

    def api(self, path, **params):
        url = f"http://{self.addr}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    def query(self, expr):
        return self.api("query", query=expr)

    def alerts(self):
        """{alertname: state} of the active alerts."""
        return {a["labels"]["alertname"]: a["state"] for a in self.api("alerts")["data"]["alerts"]}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Client:
    """A WebSocket client that keeps reading (and discarding) what it gets."""

    def __init__(self, addr, user, device_id):
        self.sock, _ = ws_connect(addr, user, device_id)
        self.sock.settimeout(None)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass

    def send(self, message):
        try:
            self.sock.sendall(ws_frame(0x1, json.dumps(message).encode()))
        except OSError:
            pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def workload(nodes, stop):
    """Users on every node watch each other and change status twice a
    second (above the default 1/s budget, so rate limiting is seen too),
    and a REST read goes to one node per tick, so that the HTTP API panels
    (which leave out scrapes and probes) have traffic to show."""
    users = [f"check-user-{i}" for i in range(6)]
    clients = []
    for i, user in enumerate(users):
        node = nodes[i % len(nodes)]
        client = Client(node.addr, user, f"dev-{i}")
        client.send({"type": "subscribe", "users": users})
        clients.append(client)
    watcher = Client(nodes[-1].addr, "check-watcher", "watcher")
    watcher.send({"type": "subscribe", "users": users})
    clients.append(watcher)
    statuses = ["away", "online", "busy", "online"]
    reader = token("check-watcher")
    tick = 0
    while not stop.wait(0.5):
        for client in clients[:-1]:
            client.send({"type": "set_status", "status": statuses[tick % len(statuses)]})
        watcher.send({"type": "query", "users": users})
        node = nodes[tick % len(nodes)]
        read = urllib.request.Request(f"http://{node.addr}/v1/users/{users[0]}/presence",
                                      headers={"Authorization": f"Bearer {reader}"})
        try:
            with urllib.request.urlopen(read, timeout=5) as response:
                response.read()
        except OSError:
            pass  # A node being stopped; the panels' own check reports gaps.
        tick += 1
    for client in clients:
        client.close()


def top_level_split(expr, words):
    """`expr` split at the first operator of `words` outside (), [], {} and
    strings: (left, operator, right), or None."""
    depth, quote, i = 0, None, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            for word in words:
                if expr.startswith(word, i):
                    return expr[:i].strip(), word, expr[i + len(word):].strip()
        i += 1
    return None


def unwrap(expr):
    """Without one pair of parentheses around the whole expression."""
    if not expr.startswith("("):
        return expr
    depth = 0
    for i, c in enumerate(expr):
        depth += c == "("
        depth -= c == ")"
        if depth == 0:
            return expr[1:-1].strip() if i == len(expr) - 1 else expr
    return expr


def compared_parts(expr):
    """What an alert expression compares, each of which must have data on a
    healthy cluster: both sides of its top-level comparison (numbers left
    out), the argument of absent(), without `or vector(0)` fallbacks."""
    expr = unwrap(expr.strip())
    if expr.startswith("absent(") and expr.endswith(")"):
        return compared_parts(expr[len("absent("):-1])
    split = top_level_split(expr, ["==", "!=", ">=", "<=", ">", "<"])
    if split is None:
        fallback = top_level_split(expr, [" or "])
        return [unwrap(fallback[0]) if fallback and "vector(" in fallback[2] else expr]
    left, _, right = split
    right = re.sub(r"^bool\s+", "", right)
    parts = []
    for side in (left, right):
        if re.fullmatch(r"[0-9.e+-]+", side):
            continue
        parts += compared_parts(side)
    return parts


def has_number(result):
    for series in result["data"]["result"]:
        value = series.get("value", [0, "NaN"])[1]
        if value not in ("NaN", "+Inf", "-Inf"):
            return True
    return False


def wait_for_alert(prom, name, states, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if prom.alerts().get(name) in states:
            return True
        time.sleep(0.5)
    return False


def live_check(binary, redis_server, prometheus, dashboard, rules, problems):
    tmp = tempfile.mkdtemp(prefix="dashboard-live-")
    redis = prom = None
    nodes = []
    stop = threading.Event()
    started = time.time()
    try:
        redis, port = start_redis(redis_server, tmp)
        for i in range(3):
            nodes.append(cluster_node(binary, port, f"presence-{i}", os.path.join(tmp, f"data-{i}")))
        prom = Prometheus(prometheus, {f"presence-{i}": n.addr for i, n in enumerate(nodes)}, rules, tmp)
        load = threading.Thread(target=workload, args=(nodes, stop), daemon=True)
        load.start()
        time.sleep(SCRAPE_SECONDS)

        # Every dashboard query parses and has data.
        checked = empty = 0
        for where, expr in dashboard_queries(dashboard):
            title = where.split(" ", 2)[-1].strip("'\"") if where.startswith("panel") else where
            query = substitute(expr, problems, where)
            label_values = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
            if label_values:
                # Grafana's own function: the label's values among the series.
                query = f"count by ({label_values.group(2)}) ({label_values.group(1)})"
            checked += 1
            result = prom.query(query)
            if result.get("status") != "success":
                fail(problems, f"{where}: Prometheus refuses {query}: {result.get('error')}")
                continue
            if where.startswith("annotation"):
                # An event marker: what it compares must have data.
                result = {"data": {"result": [r for part in compared_parts(query)
                                              for r in prom.query(part)["data"]["result"]]}}
            if label_values and label_values.group(2) in OPTIONAL_LABELS:
                # Only where the scrape adds it (a multi-cluster Prometheus);
                # the variable's "All" (.*) matches series without it.
                continue
            if label_values and not all(r["metric"].get(label_values.group(2))
                                        for r in result["data"]["result"]):
                fail(problems, f"{where}: series without the label {label_values.group(2)}: {query}")
            if not has_number(result):
                if title in EXPECTED_EMPTY:
                    empty += 1
                else:
                    fail(problems, f"{where}: no data from a live 3-node cluster: {query}")
        print(f"live Prometheus: {checked} dashboard queries evaluated "
              f"({empty} empty as EXPECTED_EMPTY allows)")

        # Every alert rule evaluates, what it compares has data, none fires.
        groups = prom.api("rules")["data"]["groups"]
        rules_seen = [r for g in groups for r in g["rules"] if r["type"] == "alerting"]
        if rules and not rules_seen:
            fail(problems, f"prometheus loaded no alerting rule from {rules}")
        for rule in rules_seen:
            if rule.get("health") != "ok":
                fail(problems, f"alert {rule['name']}: health {rule.get('health')}: {rule.get('lastError')}")
            result = prom.query(rule["query"])
            if result.get("status") != "success":
                fail(problems, f"alert {rule['name']}: Prometheus refuses its expression: {result.get('error')}")
                continue
            for part in compared_parts(rule["query"]):
                if not has_number(prom.query(part)):
                    fail(problems, f"alert {rule['name']}: no data for {part}")
        firing = {n: st for n, st in prom.alerts().items() if st == "firing"}
        if firing:
            fail(problems, f"alerts firing on a healthy cluster: {firing}")
        print(f"live Prometheus: {len(rules_seen)} alert rules healthy, their compared series present, none firing")

        if rules_seen:
            # A node dies: its lease lapses and the leaders remove its devices.
            victim = nodes.pop()
            victim.proc.kill()
            victim.proc.wait()
            if not wait_for_alert(prom, "PresenceNodeLeaseLapses", {"firing"}, 40):
                fail(problems, "a killed node: PresenceNodeLeaseLapses did not fire within 40 s")
            else:
                print("live Prometheus: node killed -> PresenceNodeLeaseLapses firing")
            # Every pod down.
            stop.set()
            for node in nodes:
                node.proc.kill()
                node.proc.wait()
            if not wait_for_alert(prom, "PresenceDown", {"pending", "firing"}, 15):
                fail(problems, "every node down: PresenceDown is not pending within 15 s")
            else:
                print("live Prometheus: every node down -> PresenceDown pending")
    finally:
        stop.set()
        for node in nodes:
            node.stop()
        if prom:
            prom.stop()
        if redis:
            redis.terminate()
            redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"live Prometheus check took {time.time() - started:.0f}s")


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "presenced"))
    parser.add_argument("--redis-server", default="redis-server")
    parser.add_argument("--dashboard", default=os.path.join(ROOT, "deploy", "grafana", "presence-dashboard.json"))
    parser.add_argument("--promtool", help="also run `promtool check metrics` on both /metrics texts")
    parser.add_argument("--prometheus", help="also evaluate every query on this prometheus binary "
                                             "scraping a live 3-node cluster")
    parser.add_argument("--rules", help="with --prometheus: a rule file to load and evaluate")
    args = parser.parse_args()

    with open(args.dashboard, encoding="utf-8") as f:
        dashboard = json.load(f)
    problems = []
    check_shape(dashboard, problems)

    names, texts = collect(args.bin, args.redis_server)
    if args.promtool:
        promtool_check_metrics(args.promtool, texts, problems)
    pending_seen = set()
    used = set()
    for where, expr in dashboard_queries(dashboard):
        metrics = set(METRIC_RE.findall(expr))
        for ident in SELECTOR_RE.findall(expr):
            if ident not in PROMQL_WORDS and ident not in SCRAPE_METRICS and not ident.startswith(("presence_", "process_")):
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
    if args.prometheus:
        live_check(args.bin, args.redis_server, args.prometheus, dashboard, args.rules, problems)
    if problems:
        for problem in problems:
            print(f"FAIL: {problem}")
        return 1
    print("dashboard check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
