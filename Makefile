PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The archived MinIO repository's last commit (7aac2a2c5b7c), as the Go module proxy names it.
MINIO_MODULE := github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c
MINIO_BIN_PATH := .cache/bin/minio

.DEFAULT_GOAL := help
WEB_STAMP := web-demo/node_modules/.installed

.PHONY: help run test test-fast fuzz chaos lint fmt bench minio web-deps screenshots clean lock

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# The versions CI and the image install are pinned (with hashes) in requirements*.lock; `make lock`
# re-resolves them from pyproject.toml.
$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

lock: ## re-resolve requirements.lock (the image) and requirements-dev.lock (CI, make run/test)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes -q -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 --generate-hashes -q -o requirements-dev.lock

$(WEB_STAMP): web-demo/package.json web-demo/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd web-demo && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "web-deps: npm not found (apt-get install npm): the web demo and the browser tests need it"; fi

web-deps: $(WEB_STAMP) ## install the web demo's npm packages (Uppy, CRC64NVME, SHA-256, Swagger UI)

run: $(STAMP) $(WEB_STAMP) ## start the embedded default (SQLite + embedded S3) on http://127.0.0.1:8000
	$(BIN)/upload-plane dev

minio: ## build the pinned MinIO into .cache/bin when Go is present
	@if [ -x $(MINIO_BIN_PATH) ]; then echo "minio: using $(MINIO_BIN_PATH)"; \
	elif command -v go >/dev/null 2>&1; then \
	  echo "minio: building $(MINIO_MODULE) (takes minutes, cached in .cache/)"; \
	  GOBIN=$(CURDIR)/.cache/bin go install $(MINIO_MODULE); \
	else echo "minio: Go not found, the real-service tier will be skipped"; fi

# The unit and embedded tiers run on every core (one test file per worker: a file's tests may build
# on each other); the real tier runs alone, its services and timings to itself.
FAST := $(BIN)/pytest -m 'not real' -n auto --dist loadfile

test: $(STAMP) $(WEB_STAMP) minio ## run the whole suite (real tier runs when MariaDB and MinIO are available)
	$(FAST)
	$(BIN)/pytest -m real

test-fast: $(STAMP) ## run the unit and embedded tiers only
	$(FAST)

# The long Schemathesis run (tests/real/test_fuzz.py): every route as every role on MariaDB + MinIO
# for FUZZ_MINUTES in all, seeded by FUZZ_SEED (random when empty, printed); figures go to
# bench/results/fuzz.json. `make test` runs the short, deterministic one.
FUZZ_MINUTES ?= 15
FUZZ_SEED ?=
fuzz: $(STAMP) minio ## long Schemathesis run, bounded by FUZZ_MINUTES (15); figures in bench/results/fuzz.json
	FUZZ_MINUTES=$(FUZZ_MINUTES) FUZZ_SEED=$(FUZZ_SEED) REQUIRE_REAL_SERVICES=1 \
	  $(BIN)/pytest tests/real/test_fuzz.py -k test_long_run -s -p no:cacheprovider

lint: $(STAMP) ## ruff check, format check and mypy --strict on src
	$(BIN)/ruff check src tests bench migrations
	$(BIN)/ruff format --check src tests bench migrations
	$(BIN)/mypy src

fmt: $(STAMP) ## format and autofix with ruff
	$(BIN)/ruff format src tests bench migrations
	$(BIN)/ruff check --fix src tests bench migrations

screenshots: $(STAMP) $(WEB_STAMP) minio ## write screenshots of the web demo and the upload-link page to web-demo/screenshots/
	$(BIN)/python scripts/screenshots.py

bench: $(STAMP) minio ## run the benchmarks in bench/ (prints tables and JSON)
	$(BIN)/python bench/run_all.py

# The full chaos run (tests/real/test_chaos.py; `make test` runs a small one). Knobs: CHAOS_UPLOADS,
# CHAOS_MAX_MIB, CHAOS_SEED, CHAOS_API_KILLS, CHAOS_MINIO_KILLS, CHAOS_DEADLINE (seconds).
CHAOS_UPLOADS ?= 300
CHAOS_MAX_MIB ?= 200
CHAOS_SEED ?= 20261123
CHAOS_API_KILLS ?= 30
CHAOS_MINIO_KILLS ?= 2
CHAOS_DEADLINE ?= 5400

chaos: $(STAMP) minio ## chaos uploads: 300 up to 200 MiB, >= 30 API and 2 MinIO kills (bench/results/chaos.json)
	REQUIRE_REAL_SERVICES=1 CHAOS_UPLOADS=$(CHAOS_UPLOADS) CHAOS_MAX_MIB=$(CHAOS_MAX_MIB) \
	  CHAOS_SEED=$(CHAOS_SEED) CHAOS_API_KILLS=$(CHAOS_API_KILLS) CHAOS_MINIO_KILLS=$(CHAOS_MINIO_KILLS) \
	  CHAOS_DEADLINE=$(CHAOS_DEADLINE) CHAOS_RESULTS=bench/results/chaos.json \
	  $(BIN)/pytest tests/real/test_chaos.py -q -s -p no:cacheprovider

clean: ## remove the virtualenv, caches and embedded data
	rm -rf $(VENV) .data .pytest_cache .ruff_cache .mypy_cache web-demo/node_modules
