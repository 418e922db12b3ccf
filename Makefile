# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The prebuilt CPU wheel; an unpinned torch would pull several GB of CUDA packages.
TORCH := torch==2.13.0

.PHONY: demo demo-full test lint venv clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

# The main job on the simulation backend: capture a tray of 320 simulated coins with the real
# drivers on the emulators, train a small CPU model on them, evaluate it on held-out coins.
# Training runs as two processes of one thread each (torchrun, gloo): on a 2-core box they train
# 1.4x faster than one process on both cores. Each takes 32 images a step (one per coin side), so
# a step is 64 (the rank count is part of the recipe); 1,800 steps fit the 15 minutes `make demo`
# is allowed (README, "Training recipe and figures"). `--aug archive` (three images in ten grey, a
# quarter through JPEG) kept grey queries' answers 93 % of the time where `tuned` kept 85 %, and
# lost nothing in colour; a sixth epoch took every split over every goal (README, figures table).
DEMO_TRAIN := --data data/demo --image-size 64 --no-progress
demo: venv
	$(VENV)/bin/rig probe --config sim
	$(VENV)/bin/rig simulate --coins 320 --types 6 --seed 0 --image-size 256 --out data/demo
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node=2 -m pipeline.cli train $(DEMO_TRAIN) --epochs 6 --steps-per-epoch 300 --per-class 1 --lr 6e-3 --ema-decay 0.99 --val-every 2 --prefetch 0 --aug archive --out runs/demo
	$(VENV)/bin/pipeline evaluate --run runs/demo

# The full recipe (about 30 minutes here): 7,200 steps of 32 in one process, as the README's
# figures for the embedding, search and robustness were measured.
demo-full: venv
	$(VENV)/bin/rig simulate --coins 320 --types 6 --seed 0 --image-size 256 --out data/demo
	$(VENV)/bin/pipeline train $(DEMO_TRAIN) --epochs 24 --steps-per-epoch 300 --ema-decay 0.999 --val-every 3 --out runs/demo-full
	$(VENV)/bin/pipeline evaluate --run runs/demo-full

# Twice as many test processes as a 2-core box has cores: many tests wait on emulator replies,
# reply timeouts and subprocess start-up, so 2 workers left the cores idle (1.6 of 2 busy even
# at 3 workers); 4 workers ran the suite in 347 s where 2 took 435-464 s.
TEST_WORKERS ?= 4

test: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
