# presence — the two commands that matter: `make run` and `make test`.
CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080
DATA_DIR ?= ./data
# apt needs root; use sudo when not running as root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run build release test test-cluster-e2e test-deps lint fmt fmt-check clippy bench cluster clean js js-deps js-test browser-deps browser-test

## Build and start presenced with the embedded backend (no Redis needed).
run:
	$(CARGO) build --release -p presenced
	@echo "presenced on http://$(LISTEN) (data in $(DATA_DIR))"
	@echo "mint a token:  ./target/release/presenced token --user alice [--admin]"
	@echo "web console:   http://$(LISTEN)/console/ (sign in with a token)"
	./target/release/presenced serve --listen $(LISTEN) --data-dir $(DATA_DIR)

build:
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --release -p presenced -p presence-bench

## What the suite needs besides Rust: redis-server (tests start their own
## instances on free ports), cargo-nextest, and python3-venv (deploy checks;
## their packages come from PyPI into target/deploy-venv).
test-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (the tests start their own instances)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server; }
	@$(CARGO) nextest --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-nextest
	@probe=$$(mktemp -d); python3 -m venv "$$probe/v" >/dev/null 2>&1 || { \
	  echo "installing python3-venv (the deploy checks run in a venv)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv; }; rm -rf "$$probe"
	@$(MAKE) --no-print-directory prometheus-deps
	@$(MAKE) --no-print-directory browser-deps

## The whole test suite, as CI runs it: format, lints, deploy checks, then
## every test.
## End-to-end tests run the release binary that deploy-check built exactly
## as the Dockerfile does: the binary that ships.
test: test-deps fmt-check clippy deploy-check
	PRESENCED_BIN=$(CURDIR)/target/release/presenced $(CARGO) nextest run --workspace --no-fail-fast
	$(MAKE) test-cluster-e2e PRESENCED=$(CURDIR)/target/release/presenced
	python3 deploy/check/dashboard_check.py --bin target/release/presenced
	$(MAKE) js-test browser-test PRESENCED=$(CURDIR)/target/release/presenced

## The end-to-end rule suites again, unchanged, against a cluster: a
## redis-server and three presenced nodes per test, sockets and requests
## spread over the nodes (tests/src/lib.rs, E2E_CLUSTER). ops.rs reads one
## node's own metrics, so it runs embedded only; cluster metrics are tested
## by cluster_smoke.rs.
## (--workspace and a filter rather than -p, so cargo reuses the test build
## of the whole suite instead of rebuilding with other features.)
E2E_RULE_SUITES = -E 'package(presence-e2e) and (binary(=smoke) or binary(=ws_rules) or binary(=ws_bad_input) or binary(=rest_native) or binary(=rocketchat) or binary(=lifecycle))'
PRESENCED ?= $(CURDIR)/target/debug/presenced
test-cluster-e2e:
	@[ -x "$(PRESENCED)" ] || $(CARGO) build -p presenced
	E2E_CLUSTER=3 PRESENCED_BIN=$(PRESENCED) $(CARGO) nextest run --workspace $(E2E_RULE_SUITES) --no-fail-fast

## Offline checks of deploy/ and helm/ (deploy/check/check.py): the release
## build and run exactly as deploy/Dockerfile does, the chart rendered with
## every values file and validated against several Kubernetes versions,
## kubectl kustomize, yamllint, promtool on the alerts and a real
## Prometheus scraping a local 3-node cluster. Needs python3 with venv,
## kubectl and Debian's prometheus package (installed when missing).
## Debian's prometheus package (promtool and prometheus 2.42) runs the
## alert unit tests and the live scrape of deploy-check.
.PHONY: prometheus-deps
prometheus-deps:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing prometheus (promtool and a real Prometheus for deploy-check)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq prometheus; }

## The live checks run DEPLOY_CHECK_BIN: the release binary the image check
## builds. While developing: make deploy-check DEPLOY_CHECK_ARGS=--skip-image
## DEPLOY_CHECK_BIN=target/debug/presenced (no release build).
DEPLOY_CHECK_BIN ?= $(CURDIR)/target/release/presenced
.PHONY: deploy-check
deploy-check: prometheus-deps
	deploy/check/setup-venv.sh
	target/deploy-venv/bin/python deploy/check/check.py --bin $(DEPLOY_CHECK_BIN) $(DEPLOY_CHECK_ARGS)

lint: fmt-check clippy

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

## The measurements of BENCHMARKS.md.
bench: release
	./target/release/presence-bench idle --connections 10000
	./target/release/presence-bench fanout --rate 1000

## Cluster mode by hand: redis-server and three presenced nodes on loopback.
cluster:
	deploy/local-cluster.sh

clean:
	$(CARGO) clean

## The JavaScript client and the web console (clients/js, docs/console.md).
## Their compiled ES modules (clients/js/dist) are committed and embedded in
## presenced, so `make run` and `cargo build` need no node; after changing
## clients/js/src, `make js` rebuilds dist/ (commit it with the sources).
## Node >= 20 and npm; dependencies come from the lockfiles (`npm ci`).
JS_DIR = clients/js
BROWSER_DIR = tests/browser

js-deps:
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing nodejs and npm (the JS client's build and tests)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nodejs npm; }
	cd $(JS_DIR) && npm ci --no-audit --no-fund --loglevel=error

js: js-deps
	cd $(JS_DIR) && npm run build

## The committed build must be what the sources compile to, then the
## client's tests against a real presenced (PRESENCED; by default the debug
## build, rebuilt first so it embeds the current console).
js-test: js-deps
	cd $(JS_DIR) && node scripts/check-build.mjs
ifeq ($(origin PRESENCED),file)
	$(CARGO) build -p presenced
endif
	cd $(JS_DIR) && PRESENCED_BIN=$(PRESENCED) npm test

## Headless Chromium (Debian's chromium, driven by puppeteer-core, which
## never downloads a browser) against real presenced processes; screenshots
## of every console page go to target/browser-artifacts/.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (the browser tests)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

browser-test: browser-deps js-deps
	cd $(BROWSER_DIR) && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
ifeq ($(origin PRESENCED),file)
	$(CARGO) build -p presenced
endif
	cd $(BROWSER_DIR) && PRESENCED_BIN=$(PRESENCED) npm test
