# playlog: `make run` starts the service, `make test` runs every test.
# Both install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTOS := $(wildcard protos/playlog/v1/*.proto)
GEN_DIR := src/playlog/v1
GEN_STAMP := $(GEN_DIR)/.generated
INSTALL_STAMP := $(VENV)/.installed

DATA_DIR ?= ./var
LISTEN ?= 127.0.0.1:50051
HTTP_LISTEN ?= 127.0.0.1:8080

.PHONY: install gen lint test run bench soak screenshots clean

install: $(INSTALL_STAMP) $(GEN_STAMP)

$(INSTALL_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The one place generated code comes from: modules and .pyi stubs inside the
# package, never edited by hand.
gen: $(GEN_STAMP)

$(GEN_STAMP): $(PROTOS) $(INSTALL_STAMP)
	rm -rf $(GEN_DIR)
	mkdir -p $(GEN_DIR)
	$(BIN)/python -m grpc_tools.protoc -I protos \
		--python_out=src --pyi_out=src --grpc_python_out=src \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=src \
		$(PROTOS)
	touch $(GEN_DIR)/__init__.py $(GEN_DIR)/py.typed
	touch $@

lint: install
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code
	@if git rev-parse --verify --quiet main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then \
		echo "buf breaking against main"; $(BIN)/buf breaking --against '.git#branch=main'; \
	fi
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The console's browser tests drive Debian's chromium: installed here when
# missing (as root), as clients/build.sh installs the C++ toolchain.
test: install
	sh tests/install-chromium.sh
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# docs/console-overview.png and docs/console-rundown.png, taken by the same
# browser as the tests from a served demo channel.
screenshots: install
	sh tests/install-chromium.sh
	$(BIN)/python -m tests.screenshots docs

run: install
	$(BIN)/playlog serve --data-dir $(DATA_DIR) --listen $(LISTEN) --http-listen $(HTTP_LISTEN) $(ARGS)

# Every workload of bench/ (see bench/README.md); BENCH_ARGS="--quick" for a short run.
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# 1,000 WatchWindow subscribers for 10 minutes (not part of `make test`);
# SOAK_ARGS="--minutes 2" for a shorter one.
soak: install
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(GEN_DIR) build *.egg-info src/*.egg-info
