#!/usr/bin/env python3
"""Offline checks of everything under deploy/ and helm/.

Run by `make deploy-check` (and so by `make test` and CI) inside the venv
that deploy/check/setup-venv.sh creates. Nothing here needs a cluster, a
Docker engine or the network:

  image      builds presenced exactly as deploy/Dockerfile's build stage does
             (its `cargo build` command, verbatim, in the normal target/),
             starts it with the Dockerfile's ENV, ENTRYPOINT and CMD, and
             checks /healthz, /readyz, /metrics and a clean SIGTERM drain.
  help       reads `presenced serve --help`: the flags and PRESENCE_* names
             the chart may use.
  chart      renders helm/presence with every values file of
             deploy/check/values/ through Helm's own Go engine (PyPI's
             helm-python-sdk, which links Helm's SDK), runs `helm lint
             --strict`, validates every object with kubernetes-validate
             --strict against several Kubernetes versions (CRD kinds against
             deploy/check/schemas/), and checks that the objects fit together
             and match the binary (flags, env, ports, probes, drain timing).
  fail       renders deploy/check/values-fail/*: each must be refused with
             the message its `# expect:` line names.
  dashboard  the chart's copy of deploy/grafana/presence-dashboard.json is
             identical to it (--write-kustomize copies it), and the
             ConfigMap the chart renders holds it (runbook URL applied).
  kustomize  regenerates deploy/kustomize/base and components from the chart
             and compares them with the committed files, then builds the base
             and the example overlay with `kubectl kustomize` and checks them
             the same way.
  yamllint   lints values files, Chart.yaml, the kustomize files and every
             rendered manifest with deploy/check/yamllint.yaml.
  promtool   (Debian's prometheus package: promtool and prometheus 2.42)
             `promtool check rules` on the rules of every rendered
             PrometheusRule and of the kustomize component and overlay;
             `promtool test rules` with deploy/check/alerts.test.yaml, which
             must fire every alert of the chart.
  live       deploy/check/dashboard_check.py with --promtool and
             --prometheus: `promtool check metrics` on the real /metrics of
             an embedded and a cluster node, then a real prometheus scraping
             a local 3-node cluster evaluates every dashboard query and
             every alert of the chart (see that file).

Prints one line per check and `N passed, M failed`; exits 1 on any failure.

  check.py                        everything
  check.py --skip-image           no release build (uses target/debug/presenced,
                                  building it if missing)
  check.py --bin PATH             the presenced binary of the help and live
                                  checks (default: what the image check built)
  check.py --write-kustomize      regenerate the kustomize files (and the chart's
                                  dashboard copy), then check
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path

import helm_python as helm
from helm_python import _native as helm_native
from helm_python import chart as helm_chart
import jsonschema
import referencing
import referencing.jsonschema
import yaml
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "presence"
CHECK = ROOT / "deploy" / "check"
VALUES = CHECK / "values"
VALUES_FAIL = CHECK / "values-fail"
SCHEMAS = CHECK / "schemas"
KUSTOMIZE = ROOT / "deploy" / "kustomize"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DASHBOARD = ROOT / "deploy" / "grafana" / "presence-dashboard.json"
# The chart's copy of the dashboard (Helm reads files inside the chart only).
CHART_DASHBOARD = CHART / "dashboards" / "presence-dashboard.json"
OUT = ROOT / "target" / "deploy-check"

# Kubernetes versions every object is validated against: the oldest the
# chart supports (Chart.yaml kubeVersion; the native preStop sleep) and
# two recent ones.
K8S_VERSIONS = ["1.30.0", "1.34.0", "1.37.0"]
RELEASE = "presence"
NAMESPACE = "presence"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproute-gateway-v1.json",
}
# The APIs of the CRD kinds above, as `helm install` sees them in a cluster
# that has the CRDs (Capabilities.APIVersions): the chart renders the
# Prometheus Operator's kinds only where they exist. A values file whose
# first lines say `# capabilities: no-crds` is rendered without them, and
# its `# skipped: Kind, …` line names the kinds that must then be absent.
CRD_SCHEMA_KINDS = {kind for _, kind in CRD_SCHEMAS}
CRD_API_VERSIONS = sorted({f"{api}/{kind}" for api, kind in CRD_SCHEMAS} | {api for api, _ in CRD_SCHEMAS})
# The alert names the runbook is written against.
ALERTS = {
    "PresenceDown",
    "PresenceBroadcastDisabled",
    "PresenceShardWithoutLeader",
    "PresenceResyncRateHigh",
    "PresenceRedisErrors",
    "PresenceNodeLeaseLapses",
    "PresenceFencedWrites",
    "PresenceAggregatorLagHigh",
}
# Metrics the alerts may use before presenced exports them; the check
# reports them instead of failing. Empty: every alert metric must exist.
PENDING_METRICS: set = set()
# The values the alert unit tests (deploy/check/alerts.test.yaml) and the
# live check render the rules with.
ALERT_TEST_VALUES = {"metrics": {"prometheusRule": {
    "enabled": True, "runbookBaseUrl": "https://docs.example.com/presence/operations.md"}}}
ALERT_TESTS = CHECK / "alerts.test.yaml"
GENERATED_HEADER = (
    "# Generated from helm/presence by deploy/check/check.py --write-kustomize\n"
    "# (values: deploy/check/values/kustomize-base.yaml). Do not edit: change\n"
    "# the chart and regenerate; `make deploy-check` fails when this is stale.\n"
)


class CheckFailed(Exception):
    pass


def ensure(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# --------------------------------------------------------------------------
# Results


class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def run(self, name: str, fn, *args, **kwargs):
        start = time.monotonic()
        try:
            value = fn(*args, **kwargs)
        except CheckFailed as e:
            self._fail(name, str(e), start)
            return None
        except Exception:  # noqa: BLE001 - any crash is a failed check
            self._fail(name, traceback.format_exc(), start)
            return None
        self.passed += 1
        print(f"PASS {name} ({time.monotonic() - start:.1f}s)", flush=True)
        return value

    def _fail(self, name: str, message: str, start: float) -> None:
        self.failed.append(name)
        print(f"FAIL {name} ({time.monotonic() - start:.1f}s)", flush=True)
        for line in message.rstrip().splitlines():
            print(f"     {line}", flush=True)


# --------------------------------------------------------------------------
# The Dockerfile


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_stages(path: Path) -> list[dict]:
    stages: list[dict] = []
    for word, rest in dockerfile_instructions(path):
        if word == "FROM":
            parts = rest.split()
            name = parts[-1] if len(parts) >= 3 and parts[-2].upper() == "AS" else None
            stages.append({"from": parts[0], "name": name, "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((word, rest))
    return stages


def dockerfile_build_command(stage: dict) -> list[str]:
    """The `cargo build …` command of the build stage, as argv."""
    commands = []
    for word, rest in stage["instructions"]:
        if word != "RUN":
            continue
        tokens = shlex.split(rest)
        while tokens and tokens[0].startswith("--"):  # --mount=… flags of RUN
            tokens.pop(0)
        # Split the shell line at && and take the cargo build part.
        segment: list[str] = []
        for token in tokens + ["&&"]:
            if token == "&&":
                if segment[:2] == ["cargo", "build"]:
                    commands.append(segment)
                segment = []
            else:
                segment.append(token)
    ensure(len(commands) == 1, f"expected one `cargo build` in the build stage, found {commands}")
    return commands[0]


def dockerfile_runtime(stage: dict) -> dict:
    env: dict[str, str] = {}
    entrypoint = cmd = None
    expose: list[int] = []
    user = None
    for word, rest in stage["instructions"]:
        if word == "ENV":
            for token in shlex.split(rest):
                key, eq, value = token.partition("=")
                ensure(eq == "=", f"ENV {rest!r}: use the KEY=value form")
                env[key] = value
        elif word == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word == "EXPOSE":
            expose += [int(p.split("/")[0]) for p in rest.split()]
        elif word == "USER":
            user = rest
    ensure(isinstance(entrypoint, list) and entrypoint, "the runtime stage needs a JSON-array ENTRYPOINT")
    ensure(isinstance(cmd, list), "the runtime stage needs a JSON-array CMD")
    return {"env": env, "entrypoint": entrypoint, "cmd": cmd, "expose": expose, "user": user}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def check_image() -> Path:
    stages = dockerfile_stages(DOCKERFILE)
    ensure(len(stages) >= 2, "deploy/Dockerfile must be multi-stage")
    build = next((s for s in stages if any("cargo build" in r for w, r in s["instructions"] if w == "RUN")), None)
    ensure(build is not None, "no build stage with `cargo build`")
    runtime_stage = stages[-1]
    ensure("distroless" in runtime_stage["from"] or "slim" in runtime_stage["from"],
           f"runtime base {runtime_stage['from']} is not a small image")
    runtime = dockerfile_runtime(runtime_stage)
    ensure(runtime["user"] not in (None, "root", "0", "0:0"), "the runtime stage must run as a non-root USER")

    command = dockerfile_build_command(build)
    ensure("--release" in command, f"{command}: the image is a release build")
    print(f"     building as the Dockerfile does: {shlex.join(command)}", flush=True)
    started = time.monotonic()
    subprocess.run(command, cwd=ROOT, check=True)
    print(f"     built in {time.monotonic() - started:.0f}s", flush=True)
    binary = ROOT / "target" / "release" / Path(runtime["entrypoint"][0]).name
    ensure(binary.exists(), f"{binary} missing after the build")
    # The ENTRYPOINT is that binary: copied out of target/release in the
    # build stage, then into the runtime stage at the ENTRYPOINT's path.
    ensure(any(w == "RUN" and f"target/release/{binary.name}" in r for w, r in build["instructions"]),
           f"the build stage does not copy target/release/{binary.name}")
    ensure(any(w == "COPY" and "--from=" in r and r.split()[-1] == runtime["entrypoint"][0]
               for w, r in runtime_stage["instructions"]),
           f"the runtime stage does not COPY the binary to {runtime['entrypoint'][0]}")

    # The image's environment, with the listen ports and the data directory
    # moved to free local ones: the only differences from `docker run`.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCE_")}
    env.update(runtime["env"])
    for key in ("PRESENCE_LISTEN", "PRESENCE_METRICS_LISTEN"):
        ensure(key in runtime["env"], f"the Dockerfile sets no {key}")
        host = runtime["env"][key].rsplit(":", 1)[0]
        ensure(host == "0.0.0.0", f"{key}={runtime['env'][key]}: a container listens on 0.0.0.0")
    exposed = sorted(runtime["expose"])
    declared = sorted(port_of(runtime["env"][k]) for k in ("PRESENCE_LISTEN", "PRESENCE_METRICS_LISTEN"))
    ensure(exposed == declared, f"EXPOSE {exposed} differs from the listen ports {declared}")
    chart_ports = yaml.safe_load((CHART / "values.yaml").read_text())["containerPorts"]
    ensure(sorted(chart_ports.values()) == declared,
           f"chart containerPorts {chart_ports} differ from the image's ports {declared}")
    listen, metrics = free_port(), free_port()
    env["PRESENCE_LISTEN"] = f"0.0.0.0:{listen}"
    env["PRESENCE_METRICS_LISTEN"] = f"0.0.0.0:{metrics}"
    data_dir = tempfile.mkdtemp(prefix="presence-image-check-")
    env["PRESENCE_DATA_DIR"] = data_dir
    argv = [str(binary)] + runtime["entrypoint"][1:] + runtime["cmd"]
    print(f"     running {shlex.join(argv)} with the image's ENV", flush=True)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            # presenced prints its metrics address, then its API address.
            if any(l.startswith("presenced listening on") for l in lines) and any(
                l.startswith("presenced metrics on") for l in lines
            ):
                break
        ensure(any(l.startswith("presenced listening on") for l in lines),
               f"presenced did not start: {lines} {proc.stderr.read() if proc.poll() is not None else ''}")
        for port in (metrics, listen):
            status, body = http_get(f"http://127.0.0.1:{port}/healthz")
            ensure(status == 200, f"/healthz on port {port} answered {status}: {body}")
        status, body = http_get(f"http://127.0.0.1:{metrics}/readyz")
        ensure(status == 200, f"/readyz answered {status}: {body}")
        status, body = http_get(f"http://127.0.0.1:{metrics}/metrics")
        ensure(status == 200 and "presence_" in body, f"/metrics answered {status} without presence_ metrics")
        # The stderr is JSON logs (PRESENCE_LOG_FORMAT=json): drain and exit 0.
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        stderr = proc.stderr.read()
        ensure(code == 0, f"exit code {code} after SIGTERM\n{stderr[-2000:]}")
        first = next((l for l in stderr.splitlines() if l.strip()), "")
        ensure(first.startswith("{"), f"logs are not JSON: {first!r}")
        print(f"     /healthz 200, /readyz 200, SIGTERM -> exit 0 in {time.monotonic() - started:.1f}s", flush=True)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
    return binary


# --------------------------------------------------------------------------
# presenced --help


def check_help(binary: Path) -> dict:
    text = subprocess.run([str(binary), "serve", "--help"], check=True, capture_output=True, text=True).stdout
    flags = set(re.findall(r"(?m)^\s+(?:-\w, )?(--[a-z0-9-]+)", text))
    envs = set(re.findall(r"\[env: (PRESENCE_[A-Z0-9_]+)", text))
    ensure({"--listen", "--metrics-listen", "--role", "--drain-window"} <= flags, f"unexpected help: {sorted(flags)}")
    ensure({"PRESENCE_LISTEN", "PRESENCE_REDIS_URL", "PRESENCE_ROLE"} <= envs, f"unexpected help: {sorted(envs)}")
    roles = re.search(r"--role <ROLE>.*?Possible values:(.*?)\[env", text, re.S)
    role_values = set(re.findall(r"-\s+(\w+):", roles.group(1))) if roles else set()
    ensure(role_values >= {"all", "gateway", "aggregator"}, f"roles in --help: {role_values}")
    drain = re.search(r"--drain-window <DRAIN_WINDOW>.*?\[default: ([^\]]+)\]", text, re.S)
    ensure(drain is not None, "no default for --drain-window in --help")
    image_env = dockerfile_runtime(dockerfile_stages(DOCKERFILE)[-1])["env"]
    unknown = sorted(k for k in image_env if k.startswith("PRESENCE_") and k not in envs)
    ensure(not unknown, f"deploy/Dockerfile sets env vars presenced does not read: {unknown}")
    return {"flags": flags, "envs": envs, "roles": role_values, "drain_default": drain.group(1)}


# --------------------------------------------------------------------------
# Rendering and validation


def render(values: dict | None, crds: bool = True) -> dict[str, str]:
    """The chart rendered as `helm install` would, in a cluster with the
    CRDs of CRD_SCHEMAS (or without any with `crds=False`)."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        # Chart.render has no api_versions argument; the SDK's native call
        # takes Helm's --api-versions as the option api_versions.
        opts = {"name": RELEASE, "namespace": NAMESPACE, "is_install": True}
        if crds:
            opts["api_versions"] = CRD_API_VERSIONS
        rendered = helm_native.call_string("helm_render", chart._raw(), helm_chart._dumps(values), json.dumps(opts))
        return json.loads(rendered)


def manifests_of(rendered: dict[str, str]) -> list[dict]:
    objects = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt") or not path.endswith((".yaml", ".yml")):
            continue
        for obj in yaml.safe_load_all(rendered[path]):
            if obj:
                ensure(isinstance(obj, dict) and "kind" in obj, f"{path}: not a Kubernetes object: {obj!r}")
                objects.append(obj)
    return objects


def dump_all(objects: list[dict]) -> str:
    return "---\n" + "---\n".join(
        yaml.safe_dump(o, sort_keys=False, default_flow_style=False, width=1000) for o in objects
    )


_CRD_VALIDATORS: dict = {}


def crd_validator(key: tuple[str, str], k8s_version: str):
    cache_key = (key, k8s_version)
    if cache_key not in _CRD_VALIDATORS:
        schema = json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())
        version = [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(k8s_version)][-1]
        defs = kv.schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", k8s_version)
        registry = referencing.Registry().with_resources([
            (schema["$id"], referencing.Resource.from_contents(schema)),
            (defs["$id"], referencing.Resource.from_contents(defs)),
        ])
        _CRD_VALIDATORS[cache_key] = jsonschema.Draft202012Validator(schema, registry=registry)
    return _CRD_VALIDATORS[cache_key]


def validate_objects(objects: list[dict]) -> None:
    """kubernetes-validate --strict on every object and version; CRD kinds
    against our schemas. Unknown kinds are errors, not warnings."""
    errors = []
    for obj in objects:
        what = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        key = (obj.get("apiVersion"), obj.get("kind"))
        for version in K8S_VERSIONS:
            if key in CRD_SCHEMAS:
                for e in crd_validator(key, version).iter_errors(obj):
                    errors.append(f"{what} (CRD schema, {version}): {'.'.join(map(str, e.path))}: {e.message}")
                continue
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as e:
                errors.append(f"{what} (Kubernetes {version}): {'.'.join(map(str, e.path))}: {e.message}")
            except kv.SchemaNotFoundError as e:
                errors.append(f"{what}: {e.message}")
    ensure(not errors, "\n".join(errors))


def check_alert_metrics(objects: list[dict]) -> None:
    """Every presence_* metric an alert uses is registered somewhere in
    crates/ (by its full name or the name without the prefix)."""
    sources = "\n".join(p.read_text() for p in (ROOT / "crates").rglob("*.rs"))
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    used = {m for g in rule["spec"]["groups"] for r in g["rules"]
            for m in re.findall(r"\bpresence_[a-z_]+", r["expr"])}
    missing = sorted(m for m in used
                     if f'"{m}"' not in sources and f'"{m.removeprefix("presence_")}"' not in sources)
    unexpected = [m for m in missing if m not in PENDING_METRICS]
    ensure(not unexpected, f"alerts use metrics presenced does not export: {unexpected}")
    if missing:
        print(f"     not exported yet (PENDING_METRICS): {', '.join(missing)}", flush=True)


def check_validator_rejects(objects: list[dict]) -> None:
    """The validation above must be able to fail: a misspelled field, a
    wrong type and an unknown kind, each in a copy of a rendered object."""
    deployment = copy.deepcopy(next(o for o in objects if o["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    wrong_type = copy.deepcopy(next(o for o in objects if o["kind"] == "Service"))
    wrong_type["spec"]["ports"][0]["port"] = "eighty"
    monitor = copy.deepcopy(next(o for o in objects if o["kind"] == "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    rule = copy.deepcopy(next(o for o in objects if o["kind"] == "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "one minute"
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    for broken in (deployment, wrong_type, monitor, rule, unknown):
        try:
            validate_objects([broken])
        except CheckFailed:
            continue
        raise CheckFailed(f"an invalid {broken['kind']} passed validation")


def check_drift_detected(helpinfo: dict) -> None:
    """The consistency check must be able to fail: an unknown flag, an
    unknown PRESENCE_ variable, a port that is not the listen port, a probe
    on the wrong path, a grace period shorter than the drain, an HTTPRoute
    to the metrics port and a PodMonitor whose job the alerts do not select."""
    cases = {
        "unknown flag": ({"extraArgs": ["--no-such-flag"]}, None),
        "unknown env": ({"extraEnv": [{"name": "PRESENCE_NO_SUCH_SETTING", "value": "1"}]}, None),
        "short grace": ({"terminationGracePeriodSeconds": 12}, None),
        "port drift": ({}, lambda o: o["data"].update(PRESENCE_LISTEN="0.0.0.0:8081") if o["kind"] == "ConfigMap" else None),
        "probe path": ({}, lambda o: o["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
                       .update(path="/healthz") if o["kind"] == "Deployment" else None),
        "HTTPRoute to the wrong port": ({"httpRoute": {"enabled": True}}, lambda o: o["spec"]["rules"][0]
                                        ["backendRefs"][0].update(port=9090) if o["kind"] == "HTTPRoute" else None),
        "PodMonitor without the job label": ({"metrics": {"podMonitor": {"enabled": True}}}, lambda o: o["spec"]
                                             ["podMetricsEndpoints"][0].update(relabelings=[])
                                             if o["kind"] == "PodMonitor" else None),
    }
    for what, (values, mutate) in cases.items():
        objects = manifests_of(render(values))
        for obj in objects:
            if mutate:
                mutate(obj)
        try:
            check_consistency(objects, helpinfo)
        except CheckFailed:
            continue
        raise CheckFailed(f"{what}: not detected")


# --------------------------------------------------------------------------
# Consistency: objects fit together and match the binary


def humantime_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text):
        ensure(unit in units, f"duration {text!r}: unknown unit {unit}")
        total += float(number) * units[unit]
    ensure(total > 0 or text.strip() in ("0s", "0"), f"cannot read duration {text!r}")
    return total


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def base_name(name: str) -> str:
    """A kustomize-generated name without its hash suffix."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def check_consistency(objects: list[dict], helpinfo: dict, expect_alerts: bool = True) -> None:
    by_kind: dict[str, list[dict]] = {}
    seen = set()
    for o in objects:
        key = (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))
        ensure(key not in seen, f"duplicate object {key}")
        seen.add(key)
        by_kind.setdefault(o["kind"], []).append(o)
    configmaps = {o["metadata"]["name"]: o for o in by_kind.get("ConfigMap", [])}
    secrets = {o["metadata"]["name"]: o for o in by_kind.get("Secret", [])}
    deployments = by_kind.get("Deployment", [])
    ensure(deployments, "no Deployment rendered")
    pod_labels = {}
    client_pods = {}
    for d in deployments:
        name = d["metadata"]["name"]
        spec = d["spec"]
        tpl = spec["template"]
        labels = tpl["metadata"]["labels"]
        pod_labels[name] = (labels, tpl["spec"])
        ensure(matches(spec["selector"]["matchLabels"], labels), f"{name}: selector does not match the pod labels")
        annotations = tpl["metadata"].get("annotations", {})
        ensure("checksum/config" in annotations or any(base_name(n) != n for n in configmaps),
               f"{name}: no checksum/config annotation (or hashed ConfigMap) to roll pods on config changes")
        pod = tpl["spec"]
        containers = {c["name"]: c for c in pod["containers"]}
        ensure("presenced" in containers, f"{name}: no presenced container")
        c = containers["presenced"]
        # Settings the container gets: ConfigMaps by envFrom, then env.
        settings: dict[str, str] = {}
        for source in c.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref and ref["name"] in configmaps:
                settings.update(configmaps[ref["name"]].get("data", {}))
            elif ref:
                ensure(ref.get("optional"), f"{name}: envFrom ConfigMap {ref['name']} is not rendered")
        defined = set(settings)
        for e in c.get("env", []):
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(e.get("value", ""))):
                ensure(ref in defined, f"{name}: env {e['name']} uses $({ref}) before it is defined")
            defined.add(e["name"])
            if "value" in e:
                settings[e["name"]] = e["value"]
            key_ref = e.get("valueFrom", {}).get("secretKeyRef")
            if key_ref and key_ref["name"] in secrets:
                data = secrets[key_ref["name"]].get("data", {}) | secrets[key_ref["name"]].get("stringData", {})
                ensure(key_ref["key"] in data, f"{name}: Secret {key_ref['name']} has no key {key_ref['key']}")
        # No drift between the chart and the binary.
        for var in sorted(defined):
            if var.startswith("PRESENCE_"):
                ensure(var in helpinfo["envs"], f"{name}: {var} is not an env var of `presenced serve --help`")
        args = c.get("args", [])
        ensure(args[:1] == ["serve"], f"{name}: args must start with the serve subcommand: {args}")
        for arg in args:
            if arg.startswith("--"):
                flag = arg.split("=", 1)[0]
                ensure(flag in helpinfo["flags"], f"{name}: {flag} is not a flag of `presenced serve --help`")
        role = settings.get("PRESENCE_ROLE")
        if role is not None:
            ensure(role in helpinfo["roles"], f"{name}: PRESENCE_ROLE={role} is not a role of --help")
        if "PRESENCE_REDIS_URL" not in defined:
            ensure(role is None, f"{name}: a role without Redis")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for key, port_name in (("PRESENCE_LISTEN", "http"), ("PRESENCE_METRICS_LISTEN", "metrics")):
            ensure(key in settings, f"{name}: {key} is not set")
            ensure(settings[key].startswith("0.0.0.0:"), f"{name}: {key}={settings[key]} must listen on 0.0.0.0")
            if port_name in ports:
                ensure(ports[port_name] == port_of(settings[key]),
                       f"{name}: port {port_name} {ports[port_name]} differs from {key}={settings[key]}")
        ensure("metrics" in ports, f"{name}: no metrics container port")
        if role == "aggregator":
            ensure("http" not in ports, f"{name}: aggregators serve no client traffic")
        else:
            ensure("http" in ports, f"{name}: no http container port")
            client_pods[name] = labels
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            if probe in c:
                get = c[probe]["httpGet"]
                ensure(get["path"] == path, f"{name}: {probe} path {get['path']}, expected {path}")
                ensure(get["port"] in ("metrics", ports["metrics"]), f"{name}: {probe} not on the metrics port")
        ensure("livenessProbe" in c and "readinessProbe" in c, f"{name}: liveness and readiness probes are required")
        # Drain timing: preStop sleep + drain window < grace period.
        drain = humantime_seconds(settings.get("PRESENCE_DRAIN_WINDOW", helpinfo["drain_default"]))
        sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        ensure(sleep > 0, f"{name}: no preStop sleep")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        ensure(grace > sleep + drain, f"{name}: terminationGracePeriodSeconds {grace} <= preStop {sleep}s + drain {drain}s")
        # Security: non-root, read-only root FS, no capabilities.
        psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
        ensure(psc.get("runAsNonRoot") or csc.get("runAsNonRoot"), f"{name}: not runAsNonRoot")
        ensure(csc.get("readOnlyRootFilesystem") is True, f"{name}: root filesystem not read-only")
        ensure(csc.get("allowPrivilegeEscalation") is False, f"{name}: privilege escalation allowed")
        ensure("ALL" in csc.get("capabilities", {}).get("drop", []), f"{name}: capabilities not dropped")
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for m in c.get("volumeMounts", []):
            ensure(m["name"] in volumes, f"{name}: volumeMount {m['name']} has no volume")
        data_dir = settings.get("PRESENCE_DATA_DIR")
        ensure(data_dir and any(m["mountPath"] == data_dir for m in c.get("volumeMounts", [])),
               f"{name}: the data directory {data_dir} is not a writable volume")
        if "PRESENCE_JWT_PUBLIC_KEY" in settings:
            key_dir = os.path.dirname(settings["PRESENCE_JWT_PUBLIC_KEY"])
            ensure(any(m["mountPath"] == key_dir for m in c.get("volumeMounts", [])),
                   f"{name}: the JWT public key {settings['PRESENCE_JWT_PUBLIC_KEY']} is not mounted")
        for tsc in pod.get("topologySpreadConstraints", []):
            ensure(matches(tsc["labelSelector"]["matchLabels"], labels), f"{name}: topology spread selects other pods")

    services = {o["metadata"]["name"]: o for o in by_kind.get("Service", [])}
    for sname, s in services.items():
        selected = [n for n, (labels, _) in pod_labels.items() if matches(s["spec"]["selector"], labels)]
        ensure(selected, f"Service {sname} selects no pods")
        for n in selected:
            port_names = {p["name"] for c in pod_labels[n][1]["containers"] for p in c.get("ports", [])}
            for p in s["spec"]["ports"]:
                ensure(p["targetPort"] in port_names, f"Service {sname}: pods of {n} have no port {p['targetPort']}")
    ensure(any(set(n for n, (l, _) in pod_labels.items() if matches(s["spec"]["selector"], l)) == set(client_pods)
               and any(p["targetPort"] == "http" for p in s["spec"]["ports"]) for s in services.values()),
           "no Service sends client traffic to exactly the client-serving pods")
    ensure(any(set(n for n, (l, _) in pod_labels.items() if matches(s["spec"]["selector"], l)) == set(pod_labels)
               and any(p["targetPort"] == "metrics" for p in s["spec"]["ports"]) for s in services.values()),
           "no metrics Service selects every pod")
    names = {d["metadata"]["name"]: d for d in deployments}
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        target = h["spec"]["scaleTargetRef"]["name"]
        ensure(target in client_pods, f"HPA {h['metadata']['name']} scales {target}, not a client-serving Deployment")
        ensure("replicas" not in names[target]["spec"], f"Deployment {target} sets replicas under an HPA")
        window = h["spec"].get("behavior", {}).get("scaleDown", {}).get("stabilizationWindowSeconds", 300)
        ensure(window >= 300, f"HPA {h['metadata']['name']}: scale-down window {window}s drops sockets too eagerly")
    for p in by_kind.get("PodDisruptionBudget", []):
        ensure(any(matches(p["spec"]["selector"]["matchLabels"], l) for l, _ in pod_labels.values()),
               f"PDB {p['metadata']['name']} selects no pods")
    for i in by_kind.get("Ingress", []):
        for rule in i["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                ensure(backend["name"] in services, f"Ingress backend {backend['name']} is not a Service")
                svc_ports = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
                ensure(backend["port"].get("name") in svc_ports or backend["port"].get("number"),
                       f"Ingress backend port {backend['port']} not on Service {backend['name']}")
    for route in by_kind.get("HTTPRoute", []):
        ensure(route["spec"].get("parentRefs"), f"HTTPRoute {route['metadata']['name']} attaches to no Gateway")
        for rule in route["spec"]["rules"]:
            for ref in rule["backendRefs"]:
                ensure(ref["name"] in services, f"HTTPRoute backend {ref['name']} is not a Service")
                ports = {p["port"]: p for p in services[ref["name"]]["spec"]["ports"]}
                ensure(ref.get("port") in ports and ports[ref["port"]]["targetPort"] == "http",
                       f"HTTPRoute backend port {ref.get('port')} is not the client port of {ref['name']}")
    for pm in by_kind.get("PodMonitor", []):
        selected = {n for n, (labels, _) in pod_labels.items() if matches(pm["spec"]["selector"]["matchLabels"], labels)}
        ensure(selected == set(pod_labels), f"PodMonitor selects {sorted(selected)}, not every Deployment's pods")
        for ep in pm["spec"]["podMetricsEndpoints"]:
            for n in selected:
                names = {p["name"] for c in pod_labels[n][1]["containers"] for p in c.get("ports", [])}
                ensure(ep["port"] in names, f"PodMonitor port {ep['port']} not on the pods of {n}")
            ensure(ep.get("path", "/metrics") == "/metrics", "PodMonitor must scrape /metrics")
            metrics_services = [s for s in services.values() if s["metadata"].get("labels", {}).get(
                "app.kubernetes.io/component") == "metrics"]
            job = next((r.get("replacement") for r in ep.get("relabelings", []) if r.get("targetLabel") == "job"), None)
            ensure(job == metrics_services[0]["metadata"]["name"],
                   f"PodMonitor job label {job!r} is not the ServiceMonitor's ({metrics_services[0]['metadata']['name']}): "
                   "the alerts' selector and the dashboard's job variable would miss it")
    for sm in by_kind.get("ServiceMonitor", []):
        selected = [s for s in services.values()
                    if matches(sm["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
        ensure(len(selected) == 1, f"ServiceMonitor selects {len(selected)} Services, expected the metrics one")
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            ensure(ep["port"] in port_names, f"ServiceMonitor port {ep['port']} not on {selected[0]['metadata']['name']}")
            ensure(ep.get("path", "/metrics") == "/metrics", "ServiceMonitor must scrape /metrics")
    for pr in by_kind.get("PrometheusRule", []):
        rules = [r for g in pr["spec"]["groups"] for r in g["rules"]]
        alerts = {r["alert"] for r in rules}
        if expect_alerts:
            ensure(alerts == ALERTS, f"alerts {sorted(alerts)} differ from the runbook's {sorted(ALERTS)}")
        for r in rules:
            expr = r["expr"]
            ensure(expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"),
                   f"{r['alert']}: unbalanced expression {expr}")
            ensure(re.search(r"\bpresence_[a-z_]+|\bup\{", expr), f"{r['alert']}: no presence_ metric (or up) in {expr}")
            ensure(not re.search(r"\$value(?!\s*\|\s*humanize)", r["annotations"]["description"]),
                   f"{r['alert']}: $value without humanize in its description")
            ensure("severity" in r.get("labels", {}), f"{r['alert']}: no severity label")


# --------------------------------------------------------------------------
# Chart matrix


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def check_values_case(path: Path, helpinfo: dict) -> list[dict]:
    values = load_values(path)
    lint = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    problems = [m for m in lint.get("messages", []) if m.get("severity", 0) >= 2] + lint.get("errors", [])
    ensure(not problems, f"helm lint --strict: {problems}")
    text = path.read_text()
    crds = not re.search(r"^#\s*capabilities:\s*no-crds\s*$", text, re.M)
    rendered = render(values, crds=crds)
    objects = manifests_of(rendered)
    skipped = re.search(r"^#\s*skipped:\s*(.+)$", text, re.M)
    if skipped:
        ensure(not crds, f"{path.name}: `# skipped:` needs `# capabilities: no-crds`")
        notes = next((v for k, v in rendered.items() if k.endswith("NOTES.txt")), "")
        for kind in (k.strip() for k in skipped.group(1).split(",")):
            ensure(kind in CRD_SCHEMA_KINDS, f"{path.name}: {kind} is not a CRD kind")
            ensure(not any(o["kind"] == kind for o in objects), f"{kind} rendered although its CRD is absent")
            ensure(f"no {kind} rendered" in notes, f"NOTES.txt does not warn that the {kind} was skipped")
    out = OUT / "rendered" / f"{path.stem}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump_all(objects))
    validate_objects(objects)
    check_consistency(objects, helpinfo)
    check_dashboard_configmap(objects, values)
    check_values_applied(objects, values)
    notes = next((v for k, v in rendered.items() if k.endswith("NOTES.txt")), "")
    ensure("presenced token" in notes or "public key" in notes, "NOTES.txt does not say how to get a token")
    kinds = sorted({o["kind"] for o in objects})
    print(f"     {len(objects)} objects: {', '.join(kinds)}", flush=True)
    return objects


def check_values_applied(objects: list[dict], values: dict) -> None:
    """Values that only pass through: namespaceOverride, revisionHistoryLimit,
    the Services' appProtocol."""
    namespace = values.get("namespaceOverride") or NAMESPACE
    own = {"ServiceMonitor": "serviceMonitor", "PodMonitor": "podMonitor", "PrometheusRule": "prometheusRule"}
    for o in objects:
        where = f"{o['kind']}/{o['metadata']['name']}"
        wanted = namespace
        if o["kind"] in own:
            wanted = values.get("metrics", {}).get(own[o["kind"]], {}).get("namespace") or namespace
        elif "presence-dashboard.json" in o.get("data", {}):
            wanted = values.get("metrics", {}).get("dashboard", {}).get("namespace") or namespace
        ensure(o["metadata"].get("namespace") == wanted,
               f"{where}: namespace {o['metadata'].get('namespace')}, expected {wanted}")
        if o["kind"] == "Deployment":
            limit = values.get("revisionHistoryLimit", 5)
            ensure(o["spec"].get("revisionHistoryLimit") == limit,
                   f"{where}: revisionHistoryLimit {o['spec'].get('revisionHistoryLimit')}, values say {limit}")
        if o["kind"] == "Service":
            metrics = o["metadata"]["labels"].get("app.kubernetes.io/component") == "metrics"
            source = values.get("metrics", {}).get("service", {}) if metrics else values.get("service", {})
            wanted_protocol = source.get("appProtocol", "http") or None
            ensure(o["spec"]["ports"][0].get("appProtocol") == wanted_protocol,
                   f"{where}: appProtocol {o['spec']['ports'][0].get('appProtocol')}, values say {wanted_protocol}")
        if o["kind"] == "PrometheusRule":
            exprs = [r["expr"] for g in o["spec"]["groups"] for r in g["rules"]]
            selector = values.get("metrics", {}).get("prometheusRule", {}).get("selector")
            if not selector:
                ensure(all(f'namespace="{namespace}"' in e for e in exprs),
                       f"{where}: the alerts do not select namespace {namespace}")


def check_fail_case(path: Path) -> None:
    expect = re.search(r"#\s*expect:\s*(.+)", path.read_text())
    ensure(expect is not None, f"{path.name} has no `# expect:` line")
    try:
        render(load_values(path))
    except helm.HelmError as e:
        ensure(expect.group(1).strip() in str(e), f"refused, but with another message: {e}")
        return
    raise CheckFailed("rendered, but these values must be refused")


# --------------------------------------------------------------------------
# kustomize


def kustomize_objects(values_path: Path) -> dict[str, list[dict]]:
    """What the kustomize files are generated from: the chart rendered with
    kustomize-base.yaml, Helm's bookkeeping stripped, the ConfigMap turned
    into a generator (its hash suffix rolls pods, as checksum/config does),
    split into the base and the monitoring component."""
    values = load_values(values_path)
    monitoring = copy.deepcopy(values)
    monitoring.setdefault("metrics", {})
    monitoring["metrics"].setdefault("serviceMonitor", {})["enabled"] = True
    monitoring["metrics"].setdefault("prometheusRule", {})["enabled"] = True
    out: dict[str, list[dict]] = {"base": [], "monitoring": []}
    for obj in manifests_of(render(monitoring)):
        def strip(labels: dict) -> None:
            labels.pop("helm.sh/chart", None)
            if "app.kubernetes.io/managed-by" in labels:
                labels["app.kubernetes.io/managed-by"] = "kustomize"
        obj["metadata"].pop("namespace", None)
        strip(obj["metadata"].get("labels", {}))
        if obj["kind"] == "Deployment":
            tpl = obj["spec"]["template"]["metadata"]
            strip(tpl.get("labels", {}))
            for key in ("checksum/config", "checksum/secret"):
                tpl.get("annotations", {}).pop(key, None)
            if not tpl.get("annotations"):
                tpl.pop("annotations", None)
        ensure(obj["kind"] != "Secret", "the kustomize base must hold no Secret (the overlay generates it)")
        if obj["kind"] in ("ServiceMonitor", "PrometheusRule"):
            out["monitoring"].append(obj)
        else:
            out["base"].append(obj)
    return out


def kustomize_files() -> dict[Path, str]:
    objects = kustomize_objects(VALUES / "kustomize-base.yaml")
    files: dict[Path, str] = {}
    base = KUSTOMIZE / "base"
    resources = []
    generator = None
    for obj in objects["base"]:
        if obj["kind"] == "ConfigMap":
            generator = obj
            continue
        name = f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        resources.append(name)
        files[base / name] = GENERATED_HEADER + yaml.safe_dump(obj, sort_keys=False, width=1000)
    ensure(generator is not None, "no ConfigMap to turn into a generator")
    env_lines = [f"{k}={v}" for k, v in generator["data"].items()]
    files[base / "presence.env"] = GENERATED_HEADER + "\n".join(env_lines) + "\n"
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(resources),
        "configMapGenerator": [{
            "name": generator["metadata"]["name"],
            "envs": ["presence.env"],
            "options": {"labels": generator["metadata"]["labels"]},
        }],
    }
    files[base / "kustomization.yaml"] = GENERATED_HEADER + yaml.safe_dump(kustomization, sort_keys=False)
    component = KUSTOMIZE / "components" / "monitoring"
    names = []
    for obj in objects["monitoring"]:
        name = f"{obj['kind'].lower()}.yaml"
        names.append(name)
        files[component / name] = GENERATED_HEADER + yaml.safe_dump(obj, sort_keys=False, width=1000)
    files[component / "kustomization.yaml"] = GENERATED_HEADER + yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component", "resources": sorted(names)},
        sort_keys=False)
    return files


def check_dashboard_copy() -> None:
    ensure(CHART_DASHBOARD.exists() and CHART_DASHBOARD.read_bytes() == DASHBOARD.read_bytes(),
           f"{CHART_DASHBOARD.relative_to(ROOT)} differs from {DASHBOARD.relative_to(ROOT)}; run "
           "`target/deploy-venv/bin/python deploy/check/check.py --write-kustomize`")


def check_dashboard_configmap(objects: list[dict], values: dict) -> None:
    """The sidecar ConfigMap holds the dashboard, with the runbook URL as
    the default of its `runbook` variable."""
    maps = [o for o in objects if o["kind"] == "ConfigMap" and "presence-dashboard.json" in o.get("data", {})]
    settings = values.get("metrics", {}).get("dashboard", {})
    ensure(len(maps) == (1 if settings.get("enabled") else 0), f"{len(maps)} dashboard ConfigMaps rendered")
    if not maps:
        return
    labels = maps[0]["metadata"]["labels"]
    for key, value in settings.get("labels", {"grafana_dashboard": "1"}).items():
        ensure(labels.get(key) == value, f"dashboard ConfigMap: label {key}={value} missing (the sidecar selects it)")
    shipped = json.loads(maps[0]["data"]["presence-dashboard.json"])
    expected = json.loads(DASHBOARD.read_text())
    runbook = settings.get("runbookUrl") or values.get("metrics", {}).get("prometheusRule", {}).get("runbookBaseUrl")
    if runbook:
        variable = next(v for v in expected["templating"]["list"] if v["name"] == "runbook")
        variable.update(query=runbook, current={"text": runbook, "value": runbook},
                        options=[{"selected": True, "text": runbook, "value": runbook}])
        for link in expected["links"]:
            if link.get("tooltip") == "docs/operations.md":
                link["tooltip"] = runbook
    ensure(shipped == expected, "the dashboard ConfigMap is not deploy/grafana/presence-dashboard.json")


def write_kustomize() -> None:
    CHART_DASHBOARD.parent.mkdir(parents=True, exist_ok=True)
    CHART_DASHBOARD.write_bytes(DASHBOARD.read_bytes())
    for path, text in kustomize_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"     wrote {path.relative_to(ROOT)}")


def check_kustomize_fresh() -> None:
    stale = []
    for path, text in kustomize_files().items():
        if not path.exists() or path.read_text() != text:
            stale.append(str(path.relative_to(ROOT)))
    for directory in (KUSTOMIZE / "base", KUSTOMIZE / "components" / "monitoring"):
        expected = {p for p in kustomize_files() if p.parent == directory}
        for path in directory.glob("*"):
            if path not in expected:
                stale.append(f"{path.relative_to(ROOT)} (not generated)")
    ensure(not stale, "generated kustomize files are stale; run "
                      "`target/deploy-venv/bin/python deploy/check/check.py --write-kustomize`:\n"
                      + "\n".join(stale))


def kubectl_kustomize(directory: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    ensure(kubectl is not None, "kubectl is not installed (its kustomize builds the manifests)")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True)
    ensure(result.returncode == 0, f"kubectl kustomize {directory.relative_to(ROOT)}:\n{result.stderr}")
    return [o for o in yaml.safe_load_all(result.stdout) if o]


def check_kustomize_build(directory: Path, helpinfo: dict, chart_objects: list[dict] | None) -> list[dict]:
    objects = kubectl_kustomize(directory)
    out = OUT / "rendered" / f"kustomize-{directory.name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump_all(objects))
    validate_objects(objects)
    check_consistency(objects, helpinfo)
    if chart_objects is not None:
        want = {(o["kind"], o["metadata"]["name"]) for o in chart_objects}
        have = {(o["kind"], base_name(o["metadata"]["name"]) if o["kind"] in ("ConfigMap", "Secret")
                 else o["metadata"]["name"]) for o in objects}
        ensure(want <= have, f"the overlay lacks objects of the chart: {sorted(want - have)}")
    print(f"     {len(objects)} objects: {', '.join(sorted({o['kind'] for o in objects}))}", flush=True)
    return objects


# --------------------------------------------------------------------------
# promtool and a live Prometheus


def tool(name: str) -> str:
    path = shutil.which(name)
    ensure(path is not None, f"{name} is not installed (Debian: apt-get install prometheus; "
                             "`make test-deps` does it)")
    return path


def rule_files() -> dict[str, Path]:
    """The rules of every PrometheusRule rendered so far (chart cases and
    kustomize builds), plus the chart's with ALERT_TEST_VALUES, each as a
    Prometheus rule file under target/deploy-check/rules/."""
    out = OUT / "rules"
    out.mkdir(parents=True, exist_ok=True)
    sources = {p.stem: [o for o in yaml.safe_load_all(p.read_text()) if o]
               for p in sorted((OUT / "rendered").glob("*.yaml"))}
    sources["alert-tests"] = manifests_of(render(ALERT_TEST_VALUES))
    files = {}
    for name, objects in sources.items():
        for obj in objects:
            if obj.get("kind") == "PrometheusRule":
                path = out / f"{name}.rules.yaml"
                path.write_text(yaml.safe_dump(obj["spec"], sort_keys=False, width=1000))
                files[name] = path
    ensure("kustomize-example" in files,
           f"no kustomize PrometheusRule among {sorted(files)}")
    return files


def check_promtool_rules() -> None:
    promtool = tool("promtool")
    files = rule_files()
    result = subprocess.run([promtool, "check", "rules"] + [str(p) for p in files.values()],
                            capture_output=True, text=True)
    ensure(result.returncode == 0, result.stdout + result.stderr)
    print(f"     {', '.join(sorted(files))}: {result.stdout.count('SUCCESS')} files SUCCESS", flush=True)


def check_promtool_tests() -> None:
    """`promtool test rules` on the chart's rules; every alert of the chart
    fires in some case of the tests file."""
    promtool = tool("promtool")
    rules = rule_files()["alert-tests"]
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    alerts = {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    fired = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])
             if t.get("exp_alerts")}
    ensure(alerts <= fired, f"alerts no test case fires: {sorted(alerts - fired)}")
    tests["rule_files"] = [str(rules)]
    path = OUT / "rules" / "alerts.test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False, width=1000))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True)
    ensure(result.returncode == 0, result.stdout + result.stderr)
    print(f"     {len(tests['tests'])} cases, {len(alerts)} alerts fired", flush=True)


def check_live(binary: Path) -> None:
    """dashboard_check.py with promtool and a real prometheus (its own
    output is shown indented)."""
    command = [sys.executable, str(CHECK / "dashboard_check.py"), "--bin", str(binary),
               "--promtool", tool("promtool"), "--prometheus", tool("prometheus"),
               "--rules", str(rule_files()["alert-tests"])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=170)
    for line in (result.stdout + result.stderr).rstrip().splitlines():
        print(f"     {line}", flush=True)
    ensure(result.returncode == 0, f"{shlex.join(command)} failed")


# --------------------------------------------------------------------------
# yamllint


def check_yamllint() -> None:
    targets = [CHART / "Chart.yaml", CHART / "values.yaml", VALUES, VALUES_FAIL, KUSTOMIZE, OUT / "rendered"]
    yamllint = Path(sys.executable).parent / "yamllint"
    result = subprocess.run(
        [str(yamllint), "--strict", "-c", str(CHECK / "yamllint.yaml")] + [str(t) for t in targets],
        capture_output=True, text=True)
    ensure(result.returncode == 0, result.stdout + result.stderr)


# --------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-image", action="store_true", help="skip the release build and image run")
    parser.add_argument("--write-kustomize", action="store_true", help="regenerate the kustomize files first")
    parser.add_argument("--bin", type=Path, help="presenced binary for the help and live checks")
    args = parser.parse_args()
    started = time.monotonic()
    print(f"deploy-check: Helm SDK {helm.helm_sdk_version()} (helm-python-sdk), "
          f"Kubernetes schemas {', '.join(K8S_VERSIONS)}", flush=True)
    shutil.rmtree(OUT / "rendered", ignore_errors=True)
    results = Results()

    if args.write_kustomize:
        write_kustomize()
    if args.skip_image:
        binary = ROOT / "target" / "debug" / "presenced"
        if not binary.exists():
            subprocess.run(["cargo", "build", "-p", "presenced"], cwd=ROOT, check=True)
    else:
        binary = results.run("image: Dockerfile build command, ENV/ENTRYPOINT/CMD, /healthz", check_image)
        if binary is None:
            binary = ROOT / "target" / "release" / "presenced"
    if args.bin:
        binary = args.bin.resolve()
    helpinfo = results.run("help: presenced serve --help", check_help, binary) if binary.exists() else None
    if helpinfo is None:
        print("FAIL no presenced binary to read --help from", flush=True)
        print(f"{results.passed} passed, {len(results.failed) + 1} failed")
        return 1

    rendered_cases = {}
    for path in sorted(VALUES.glob("*.yaml")):
        rendered_cases[path.stem] = results.run(f"chart: {path.name}", check_values_case, path, helpinfo)
    results.run("drift between chart and binary is detected", check_drift_detected, helpinfo)
    everything = rendered_cases.get("everything")
    if everything:
        results.run("validation rejects invalid objects", check_validator_rejects, everything)
        results.run("alerts use metrics presenced exports", check_alert_metrics, everything)
    for path in sorted(VALUES_FAIL.glob("*.yaml")):
        results.run(f"chart refuses: {path.name}", check_fail_case, path)

    results.run("dashboard: the chart's copy is deploy/grafana's", check_dashboard_copy)
    results.run("kustomize: generated base and components are fresh", check_kustomize_fresh)
    results.run("kustomize: base", check_kustomize_build, KUSTOMIZE / "base", helpinfo, None)
    chart_equivalent = None
    try:
        generated = kustomize_objects(VALUES / "kustomize-base.yaml")
        chart_equivalent = generated["base"] + generated["monitoring"]
    except Exception:  # noqa: BLE001 - reported by the freshness check
        pass
    results.run("kustomize: overlays/example", check_kustomize_build,
                KUSTOMIZE / "overlays" / "example", helpinfo, chart_equivalent)
    results.run("yamllint", check_yamllint)
    results.run("promtool check rules: chart cases and kustomize", check_promtool_rules)
    results.run("promtool test rules: deploy/check/alerts.test.yaml", check_promtool_tests)
    results.run("live: promtool check metrics, prometheus scraping a 3-node cluster", check_live, binary)

    print(f"deploy-check took {time.monotonic() - started:.0f}s; rendered manifests in "
          f"{(OUT / 'rendered').relative_to(ROOT)}")
    for name in results.failed:
        print(f"failed: {name}")
    print(f"{results.passed} passed, {len(results.failed)} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
