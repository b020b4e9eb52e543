# One command to run the pipeline, one to test it. Both create the virtualenv when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install install-bench run psql server serve browser test test-docker test-kubernetes image lock bench lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make install-bench: the product plus the benchmark's peers (the `bench` extra: dlt)
install-bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'

## make bench: realistic 1M days at 0/10/30% rejects: first run, rerun, a later revision, an
## incremental run; the psql \copy floor; peers (BENCH_ARGS="" without peers, "--large" adds 5M,
## "--rows 100000 --reject-rate 0.1" one small day; python -m benchmarks.run --help). Prints one
## table per scenario (date, load average, command, each target met or missed by how much): the
## tables of benchmarks/RESULTS.md; then the details per run.
BENCH_ARGS ?= --compare
bench: install-bench
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

## make run: run the flow once for yesterday (UTC) on the embedded defaults (ARGS="--date ...")
run: $(STAMP)
	$(BIN)/python -m flows.daily_sales $(ARGS)

## make psql: psql on the embedded warehouse in ./.data/postgres (ARGS="-c 'SELECT ...'")
psql: $(STAMP)
	$(BIN)/python -m devharness.embedded_postgres psql $(ARGS)

## make server: a local Prefect server, API and UI on http://127.0.0.1:$(PORT) (PORT=4200); the
## UI is told the same port (PREFECT_UI_API_URL), so any PORT works. Then `make serve PORT=...`.
## Expired automation windows are kept a day, so a run that starts late still alerts
## (LATE_START_BUFFER in deployments/automations.py).
PORT ?= 4200
server: $(STAMP)
	PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT=$(PORT) \
	PREFECT_SERVER_EVENTS_EXPIRED_BUCKET_BUFFER=P1D \
	PREFECT_UI_API_URL=http://127.0.0.1:$(PORT)/api \
		$(BIN)/prefect server start --host 127.0.0.1 --port $(PORT)

## make serve: register the "hourly" deployment on PREFECT_API_URL and serve it (Ctrl-C or
## SIGTERM stops within 10 s); `make serve PORT=4300` targets the `make server` on that port
serve: $(STAMP)
	$(if $(filter command line,$(origin PORT)),PREFECT_API_URL=http://127.0.0.1:$(PORT)/api) \
		$(BIN)/python -m deployments.serve $(ARGS)

## make browser: Debian's chromium for the UI test, installed when missing and we are root
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian chromium for the UI test"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "WARNING: no $(CHROMIUM) and not root: the UI test will fail (apt-get install chromium)"; \
	fi

## make test: the core suite against real PostgreSQL, S3 (moto server), demo API and Prefect
## (everything but the Docker and Kubernetes groups below)
CORE_MARKERS := not docker and not kubernetes
test: $(STAMP) browser
	$(BIN)/python -m pytest -m "$(CORE_MARKERS)" $(PYTEST_ARGS)

## make image: the project image (IMAGE=..., PYTHON_IMAGE=... selects the base image)
IMAGE ?= daily-sales-etl:0.1.0
image:
	DOCKER_BUILDKIT=0 docker build $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)) -t $(IMAGE) .

## make lock: requirements-image.txt, the image's hash-pinned dependencies (pyproject's runtime
## dependencies, the deploy extra and the build backend) from PyPI, for every platform and
## Python >= 3.11; tests/deployments/test_manifests.py fails when pyproject moved away from it
UV_VERSION := 0.13.8
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
		| $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
			--extra deploy --no-emit-package daily-sales-etl --custom-compile-command "make lock" \
			-o requirements-image.txt - pyproject.toml

## make test-docker: the Docker work pool end to end (a Docker engine: DOCKER_HOST or the
## default socket, holding the image; skips without one, fails when CI=true)
test-docker: $(STAMP)
	$(BIN)/python -m pytest tests/infra -m docker -n 0 $(PYTEST_ARGS)

## make test-kubernetes: the Kubernetes work pool end to end (a cluster in KUBECONFIG whose
## node has the image; skips without one, fails when CI=true)
test-kubernetes: $(STAMP)
	$(BIN)/python -m pytest tests/infra -m kubernetes -n 0 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy sales_etl tasks flows blocks deployments devharness

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
