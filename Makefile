# inspector — the two commands are `make demo` and `make test`; everything they need
# is installed by `make setup` (idempotent: re-running it does nothing new).

SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.inspector-installed
DURATION ?= 60
PYTEST_ARGS ?=

# Debian packages: redis-server for the claim-check store; GStreamer's RTSP server for
# the simulated cameras (runs under Debian's python3-gi); chromium for the browser test;
# mosquitto (and its mosquitto_passwd) for the MQTT tests; Aravis for GigE Vision cameras
# (gir1.2-aravis-0.8, imported in the venv through python3-gi, see venv-gi) and its fake
# GigE Vision camera for the tests (aravis-tools).
APT_PACKAGES := redis-server postgresql python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-x \
	gstreamer1.0-libav chromium libgl1 mosquitto aravis-tools gir1.2-aravis-0.8

.PHONY: setup system-deps kafka helm keda-crds venv venv-gi test lint unit fuzz demo bench bench-soak model model-v2 schemas clean

setup: system-deps kafka helm keda-crds $(STAMP) venv-gi

# Apache Kafka for the tests, the demo and the bench: the broker's jars, pinned in
# deploy/kafka/pom.xml, resolved from Maven Central into .cache/kafka/<version>/libs.
# Skipped when INSPECTOR_TEST_KAFKA names a running cluster.
KAFKA_VERSION := $(shell sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/kafka/pom.xml)
KAFKA_LIBS := .cache/kafka/$(KAFKA_VERSION)/libs

kafka:
	@if [ -n "$$INSPECTOR_TEST_KAFKA" ]; then \
		echo "kafka: using the cluster at $$INSPECTOR_TEST_KAFKA (INSPECTOR_TEST_KAFKA)"; exit 0; fi; \
	if ls $(KAFKA_LIBS)/kafka_2.13-*.jar >/dev/null 2>&1; then exit 0; fi; \
	hint="or point the tests at a running cluster: INSPECTOR_TEST_KAFKA=host:port make test"; \
	command -v java >/dev/null || { echo "kafka: no 'java' on PATH (Apache Kafka $(KAFKA_VERSION) needs Java 17+): install a JRE, $$hint" >&2; exit 1; }; \
	command -v mvn >/dev/null || { echo "kafka: no 'mvn' on PATH (needed once to fetch Apache Kafka $(KAFKA_VERSION) from Maven Central): install Maven, $$hint" >&2; exit 1; }; \
	mkdir -p .cache/kafka; echo "kafka: resolving Apache Kafka $(KAFKA_VERSION) from Maven Central into $(KAFKA_LIBS)"; \
	if ! mvn -B -q -f deploy/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory="$(CURDIR)/$(KAFKA_LIBS).part" > .cache/kafka-mvn.log 2>&1; then \
		echo "kafka: Maven could not fetch Apache Kafka $(KAFKA_VERSION) from Maven Central (log: .cache/kafka-mvn.log); $$hint" >&2; \
		rm -rf "$(KAFKA_LIBS).part"; exit 1; fi; \
	mv "$(KAFKA_LIBS).part" "$(KAFKA_LIBS)"

# helm, for tests/test_helm.py (`helm template` of deploy/helm/inspector): built from its
# Go module by the Go toolchain (the module proxy is the registry this machine reaches),
# into .cache/helm/<version>/helm, with the version and the default Kubernetes version
# (that of its client-go, as helm's own release build sets them). Skipped when present.
HELM_VERSION := v3.22.0
HELM := .cache/helm/$(HELM_VERSION)/helm

helm:
	@if [ -x $(HELM) ]; then exit 0; fi; \
	command -v go >/dev/null || { echo "helm: no 'go' on PATH (helm $(HELM_VERSION) is built from its Go module helm.sh/helm/v3): install Go 1.24+" >&2; exit 1; }; \
	mkdir -p .cache/helm; echo "helm: building helm $(HELM_VERSION) with Go into $(HELM) (a few minutes, once)"; \
	gomod=$$(go mod download -json helm.sh/helm/v3@$(HELM_VERSION) 2> .cache/helm-build.log \
		| sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$$/\1/p'); \
	kube=$$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$$gomod" 2>/dev/null); \
	[ -n "$$kube" ] || { echo "helm: go mod download helm.sh/helm/v3@$(HELM_VERSION) failed (log: .cache/helm-build.log)" >&2; exit 1; }; \
	v="-X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION)"; \
	for p in pkg/chartutil pkg/lint/rules; do \
		v="$$v -X helm.sh/helm/v3/$$p.k8sVersionMajor=1 -X helm.sh/helm/v3/$$p.k8sVersionMinor=$$kube"; done; \
	if ! GOBIN="$(CURDIR)/.cache/helm/$(HELM_VERSION).part" go install -ldflags "$$v" \
		helm.sh/helm/v3/cmd/helm@$(HELM_VERSION) >> .cache/helm-build.log 2>&1; then \
		echo "helm: go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION) failed (log: .cache/helm-build.log)" >&2; \
		rm -rf .cache/helm/$(HELM_VERSION).part; exit 1; fi; \
	mv .cache/helm/$(HELM_VERSION).part .cache/helm/$(HELM_VERSION)

# KEDA's CRDs (ScaledObject, TriggerAuthentication) and its Kafka scaler's parameter list,
# taken from the kedacore/keda Go module once, for validating the chart's KEDA objects
# offline. Skipped when present.
KEDA_VERSION := v2.21.0
KEDA_DIR := .cache/keda/$(KEDA_VERSION)

keda-crds:
	@if [ -f $(KEDA_DIR)/kafka_scaler.go ]; then exit 0; fi; \
	command -v go >/dev/null || { echo "keda-crds: no 'go' on PATH (KEDA's CRDs come from its Go module github.com/kedacore/keda/v2): install Go" >&2; exit 1; }; \
	mkdir -p .cache/keda; \
	dir=$$(go mod download -json github.com/kedacore/keda/v2@$(KEDA_VERSION) 2> .cache/keda-download.log \
		| sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$$/\1/p'); \
	if [ -z "$$dir" ] || [ ! -d "$$dir" ]; then \
		echo "keda-crds: go mod download github.com/kedacore/keda/v2@$(KEDA_VERSION) failed (log: .cache/keda-download.log)" >&2; exit 1; fi; \
	rm -rf $(KEDA_DIR).part; mkdir -p $(KEDA_DIR).part; \
	cp "$$dir"/config/crd/bases/keda.sh_scaledobjects.yaml "$$dir"/config/crd/bases/keda.sh_triggerauthentications.yaml \
		"$$dir"/pkg/scalers/kafka_scaler.go $(KEDA_DIR).part/ && chmod u+w $(KEDA_DIR).part/* && \
	mv $(KEDA_DIR).part $(KEDA_DIR)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO="sudo"; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# PyGObject for the venv (ingest imports gi.repository.Aravis in-process for gige://
# cameras): Debian's python3-gi, exposed through a .pth that adds a folder holding only a
# link to its `gi` package — not the whole of dist-packages, whose older copies of other
# packages would shadow the venv's. Its C extension is built for CPython 3.11, the
# venv's minor version, so the ABI matches. Chosen over `pip install pygobject`: PyPI's
# 3.50+ need girepository-2.0 (GLib 2.80; bookworm has 2.74), and an older pinned one
# is an sdist that needs a compiler, libgirepository1.0-dev, libcairo2-dev and pycairo
# built too. Without it only gige:// cameras are refused (one line at ingest start).
GI_DIR := /usr/lib/python3/dist-packages/gi

venv-gi: $(STAMP)
	@site=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	if [ -e $$site/_debian_gi/gi ] && [ -f $$site/debian_gi.pth ]; then exit 0; fi; \
	[ -d $(GI_DIR) ] || { echo "venv-gi: no $(GI_DIR) (Debian's python3-gi): GigE cameras unavailable" >&2; exit 0; }; \
	mkdir -p $$site/_debian_gi && ln -sfn $(GI_DIR) $$site/_debian_gi/gi && \
	echo _debian_gi > $$site/debian_gi.pth; \
	$(BIN)/python -c 'import gi; gi.require_version("Aravis", "0.8"); from gi.repository import Aravis' \
		|| echo "venv-gi: gi or Aravis 0.8 not importable from the venv: GigE cameras unavailable" >&2

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy inspector tests bench
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

unit: setup
	$(BIN)/python -m pytest -q -m "not integration" $(PYTEST_ARGS)

# The decode-path fuzz tests with the long hypothesis profile (minutes, not seconds).
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q tests/test_fuzz.py $(PYTEST_ARGS)

demo: setup
	$(BIN)/inspector demo --duration $(DURATION)

bench: setup
	$(BIN)/python -m bench

bench-soak: setup
	$(BIN)/python -m bench --soak

# Reproduces the shipped model (~1.6 h on 2 CPU cores; never run in CI), then scores it
# on held-out simulated runs and writes the model card.
model: setup
	$(BIN)/inspector train --from-scratch --out inspector/models/defects-v1 \
		--n-train 1000 --n-val 200 --epochs 100 --time-hours 1.6 --batch 16 --seed 0
	$(BIN)/inspector evaluate --config configs/demo.yaml --card inspector/models/defects-v1/card.json

# The parts mode's region model (README: Inspection modes): part crops from the simulator,
# fine-tuned from defects-v1's weights (~1 h on 2 CPU cores; never run in CI), then scored
# on held-out runs in parts mode with the demo line's rules, recorded in its card.
model-v2: setup
	$(BIN)/inspector train --parts-dataset --weights inspector/models/defects-v1/model.pt \
		--out inspector/models/defects-v2 --n-train 1200 --n-val 160 --imgsz 320 \
		--epochs 30 --time-hours 1.0 --batch 16 --seed 2
	$(BIN)/inspector evaluate --config configs/demo.yaml --mode parts \
		--region-model inspector/models/defects-v2/model.onnx \
		--card inspector/models/defects-v2/card.json

schemas: setup
	$(BIN)/inspector schemas

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts bench/results
