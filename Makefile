# fastclv: the benchmark suite (the tests run with `uv run pytest`, see README.md).
#
#   make bench                      scale M (100k customers), 3 rounds per contender
#   BENCH_SCALE=L make bench        scale L (1M customers), 1 round
#   BENCH_SCALE="M L" make bench    several scales, one after the other
#   BENCH_SCALE=L2 make bench       2x L, fastclv only (the memory check)
#   make bench-quoted               the same scale(s) on a fully quoted export of the same data
#                                   (BENCH_QUOTED=1: `fastclv generate --quote-all`; results as <scale>-quoted)
#   make bench-report               rewrite RESULTS.md and the charts from the recorded results
#   make bench-model                the model alone against lifetimes (benchmarks/bench_model.py)
#
# Knobs (environment): BENCH_ROUNDS, BENCH_TIMEOUT (seconds per contender run),
# BENCH_CONTENDERS (comma-separated names), BENCH_MIN_AVAILABLE_GIB; see benchmarks/scales.py.
# Data is generated once per scale into benchmarks/.cache/<scale>/ (gitignored), the quoted
# variant into benchmarks/.cache/<scale>-quoted/.

BENCH_SCALE ?= M
BENCH_QUOTED ?=
# "-quoted" when BENCH_QUOTED is set (and not 0): the raw pytest-benchmark JSON's name.
QUOTED_SUFFIX = $(if $(filter-out 0,$(BENCH_QUOTED)),-quoted,)
# After `uv sync` the environment is .venv; without it, let uv build it from uv.lock.
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,uv run --frozen python)

.PHONY: bench bench-run bench-quoted bench-report bench-model bench-clean

bench: bench-run

# Every scale runs even when a contender fails; the report is written either way, and
# the target fails at the end if any scale had a failing contender.
bench-run:
	@mkdir -p benchmarks/results
	@status=0; \
	for scale in $(subst $(comma), ,$(BENCH_SCALE)); do \
		echo "== benchmark scale $$scale$(QUOTED_SUFFIX)"; \
		BENCH_SCALE=$$scale BENCH_QUOTED=$(BENCH_QUOTED) $(PYTHON) -m pytest -c benchmarks/pytest.ini \
			--rootdir . benchmarks/bench_pipeline.py benchmarks/bench_load.py \
			--benchmark-json=benchmarks/results/raw_$$scale$(QUOTED_SUFFIX).json || status=1; \
	done; \
	$(PYTHON) -m benchmarks.report; \
	exit $$status

# The fully quoted export of the same data (the issue's target: <= 1.5x the unquoted time).
bench-quoted:
	@$(MAKE) --no-print-directory bench-run BENCH_QUOTED=1

bench-report:
	$(PYTHON) -m benchmarks.report

# The predictive model alone, against lifetimes (prints; not part of RESULTS.md).
bench-model:
	$(PYTHON) benchmarks/bench_model.py --customers 100000

# Remove the cached data and work files (not the recorded results).
bench-clean:
	rm -rf benchmarks/.cache

comma := ,

# The Rust core: the bounded fuzz run (random hostile bytes must never panic, and chunking must
# never change the result) with many more inputs than the default test run.
FUZZ_ITERS ?= 20000
.PHONY: fuzz
fuzz:
	cd native && FASTCLV_FUZZ_ITERS=$(FUZZ_ITERS) cargo test --release --locked -p fastclv-core --test never_panics
