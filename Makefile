# Two commands do all set-up on a fresh machine (Python 3.11):
#   make demo   venv + install, then the whole pipeline on the built-in SynthSal benchmark (dvc repro)
#   make test   venv + install, then the test suite
# Both are idempotent: the venv is created and filled once (re-filled when pyproject.toml changes).

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3
# torch first, pinned, so that pyproject's ranges never make pip swap it (x86_64: CUDA build from this disk;
# aarch64: CPU build). A CPU build put into .venv beforehand (README, Quick start) is kept: 2.14.1+cpu meets ==2.14.1.
TORCH  := $(if $(filter aarch64,$(shell uname -m)),torch==2.9.1 torchvision==0.24.1,torch==2.14.1 torchvision==0.29.1)

.PHONY: setup demo test lint bench gpu-check
setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# dvc needs a git repository: a checkout without one (a tarball) gets one here. DVC's standard output goes through
# tools/demo_output.py: its git add / dvc push advice and the compare stage's table are left out, so the table and
# how to read it (report/table.txt) come once, last; pipefail keeps dvc's exit status.
demo: setup
	@git rev-parse --git-dir >/dev/null 2>&1 || { git init -q && git add -A && \
		git -c user.name=ser -c user.email=ser@localhost commit -qm "ser: initial commit"; }
	@test -d .dvc || $(VENV)/bin/dvc init -q
	@echo "dvc repro (the pipeline; each stage's progress below, the comparison at the end)"
	@DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1 PATH="$(CURDIR)/$(VENV)/bin:$$PATH" \
		bash -o pipefail -c '$(VENV)/bin/dvc repro | $(PY) -m tools.demo_output'
	@echo; echo "Comparison (report/report.md, report/*.png; per run: evals/*/):"; cat report/table.txt

# one pytest worker per core (pytest-xdist): each test uses one torch thread, so the cores work side by side
test: setup
	$(PY) -m pytest -q -n auto

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) -m benchmarks

# what a first run on a CUDA card must learn, < 8 min on one H100-class GPU; on a CPU it skips what needs CUDA
gpu-check: setup
	$(PY) -m benchmarks gpu-check
