# Kubeward: two commands on a fresh machine.
#   make demo   sets everything up, then runs the live demo (DEMO_SECONDS=60 for a short run)
#   make test   sets everything up, then runs unit and integration tests on a real Kafka broker
# Also: make bench (benchmarks -> build/bench.json), make lint, make clean.

PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
KAFKA_LIBS := .cache/kafka/libs
DEMO_SECONDS ?= 120

.PHONY: setup test demo bench lint clean tools kube-bins helm-tools nginx chromium

setup: $(STAMP) $(KAFKA_LIBS) kube-bins helm-tools nginx chromium

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY): apt-get install python3.11 python3.11-venv"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

$(KAFKA_LIBS): deploy/runtime/kafka/pom.xml | $(STAMP)
	$(BIN)/python -c "from deploy.runtime.broker import fetch_jars; print('kafka jars:', fetch_jars())"

# a real etcd + kube-apiserver for the pod-watch tests, built once from the Go module proxy into ~/.cache/kubeward/kube
kube-bins: | $(STAMP)
	$(BIN)/python -c 'from deploy.runtime.kube import ensure_binaries; print("kube binaries:", ensure_binaries())'

# helm v4 (built from the Go module proxy) and the CRDs of the custom resources the chart renders (from those
# projects' Go modules), once into ~/.cache/kubeward/{helm,crds}: the chart check and install test need both
helm-tools: | $(STAMP)
	$(BIN)/python -c 'from deploy.runtime.helmtools import ensure_crds, ensure_helm; print("helm:", ensure_helm()); print("crds:", ensure_crds())'

# nginx from Debian for the auth_request adapter tests (Envoy and Traefik come from PyPI wheels), with
# ModSecurity v3 and the OWASP Core Rule Set for the side-by-side WAF comparison (kubeward bench waf)
NGINX_PKGS = nginx-core libnginx-mod-http-modsecurity modsecurity-crs
nginx:
	@{ command -v nginx >/dev/null || test -x /usr/sbin/nginx; } && test -f /usr/lib/nginx/modules/ngx_http_modsecurity_module.so \
	  && test -d /usr/share/modsecurity-crs/rules || { echo "installing $(NGINX_PKGS) (Debian)"; \
	  S=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$S apt-get install -y -q $(NGINX_PKGS) || { $$S apt-get update -q && $$S apt-get install -y -q $(NGINX_PKGS); }; }

# Chromium from Debian: the blueprint's screenshot (kubeward blueprint --png) and its browser test
chromium:
	@command -v chromium >/dev/null || { echo "installing chromium (Debian) for the blueprint"; \
	  S=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$S apt-get install -y -q chromium || { $$S apt-get update -q && $$S apt-get install -y -q chromium; }; }

tools:
	@command -v wrk >/dev/null || { echo "installing wrk (Debian) for the shim benchmark"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q wrk; else sudo apt-get install -y -q wrk; fi; }

test: setup
	$(BIN)/python -m pytest -q
	$(BIN)/python -m mypy

demo: setup
	$(BIN)/kubeward demo --seconds $(DEMO_SECONDS)

bench: setup tools
	$(BIN)/kubeward bench

lint: setup
	$(BIN)/python -m mypy
	$(BIN)/kubeward rules lint

clean:
	rm -rf build .cache/kafka/run
