# Two commands do everything on a fresh machine with python3 and pip:
#   make demo   install, run examples/quickstart.toml on SQLite + a local Ray, serve the dashboard
#   make test   install (with test extras and Debian's chromium), run the whole suite
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
DB ?= sqlite:///adamscape.db
PORT ?= 8501

.PHONY: install install-test install-bench demo test docs bench gpu-smoke bench-throughput browser clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

install: $(UV)
	$(UV) sync --frozen --compile-bytecode

install-test: $(UV) browser
	$(UV) sync --frozen --extra test --compile-bytecode

# Debian's chromium for the real-browser test (playwright cannot download its own here).
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

demo: install
	$(VENV)/bin/adamscape submit examples/quickstart.toml --db $(DB) --run
	$(VENV)/bin/adamscape results quickstart --db $(DB) --format csv | head -5
	$(VENV)/bin/adamscape dashboard --db $(DB) --port $(PORT)

test: install-test
	$(VENV)/bin/python -m pytest

# The manual (docs/, mkdocs.yml) into build/site/, strictly: a broken link or a page missing from the nav fails.
docs: $(UV)
	$(UV) sync --frozen --extra test --compile-bytecode
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# Optimizer step times on ResNet-18's parameters (CPU; add BENCH_ARGS="--device cuda" on a GPU).
bench: install-test
	$(VENV)/bin/python benchmarks/optimizer_step.py $(BENCH_ARGS)

# First thing on a GPU machine: both CIFAR-10 tasks, 2 optimizers × 2 lr, 2 epochs, amp off/on, a checked row per cell (SMOKE_ARGS="--data-dir DIR").
gpu-smoke: install-test
	$(VENV)/bin/python benchmarks/gpu_smoke.py $(SMOKE_ARGS)

# adamscape against Ray Tune and plain Optuna on one grid (GRID_ARGS="--grid 4|64|512 --workers N --only a,b,c,d"),
# and the driver's own cost per cell on SQLite and PostgreSQL (DRIVER_ARGS="--cells 2000 --workers 1,2,4,8").
install-bench: $(UV)
	$(UV) sync --frozen --extra test --extra bench --compile-bytecode

bench-throughput: install-bench
	$(VENV)/bin/python benchmarks/grid_throughput.py $(GRID_ARGS)
	$(VENV)/bin/python benchmarks/driver_overhead.py $(DRIVER_ARGS)

clean:
	rm -rf .tools $(VENV) adamscape.db adamscape.db-*
