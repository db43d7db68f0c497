# Quick start: `make demo` and `make test`; both set up .venv first if needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEMO_DIR ?= $(CURDIR)/demo_data
PKG_SOURCES := $(shell find sslam_plugin -name '*.py' -o -name '*.yaml') pyproject.toml setup.py

.PHONY: venv demo demo-data demo-sed ablation test test-fast clean-demo

venv: $(VENV)/.installed

# The pinned stack. fairseq-fixed builds against the installed torch, so it
# comes second and without build isolation (isolation would fetch another torch).
$(VENV)/.stack:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install torch==2.11.0 torchaudio==2.11.0 numpy cython soundfile safetensors tqdm matplotlib submitit tensorboard huggingface_hub pytest scikit-learn h5py==3.16.0
	# sound event detection scoring: the field's own event-F1 (sed_eval) and PSDS (sed_scores_eval) libraries
	$(PIP) install sed_eval==0.2.1 sed_scores_eval==0.0.4
	$(PIP) install --no-build-isolation fairseq-fixed==0.12.3.1
	touch $@

# A regular (non-editable) install: fairseq finds `common.user_dir: sslam_plugin`
# in site-packages from whatever folder hydra runs in. setup.py keeps the build's
# scratch folders (build/, *.egg-info) out of the checkout.
$(VENV)/.installed: $(VENV)/.stack $(PKG_SOURCES)
	$(PIP) install --no-deps --no-build-isolation --force-reinstall .
	touch $@

$(DEMO_DIR)/manifests/train.tsv: scripts/make_demo_data.py | $(VENV)/.installed
	$(PY) scripts/make_demo_data.py $(DEMO_DIR)

demo-data: $(DEMO_DIR)/manifests/train.tsv

TRAIN := PYTHONUNBUFFERED=1 $(VENV)/bin/fairseq-hydra-train --config-dir config/pretrain

# Pre-trains stage 1 (300 updates) and stage 2 (150 updates), then linearly probes
# three encoders on features extracted once (scripts/demo_linear_eval.py).
demo: venv demo-data
	rm -rf $(DEMO_DIR)/runs/stage1 $(DEMO_DIR)/runs/stage2 $(DEMO_DIR)/runs/linear_eval
	$(TRAIN) --config-name demo_stage1 task.data=$(DEMO_DIR)/manifests hydra.run.dir=$(DEMO_DIR)/runs/stage1
	$(TRAIN) --config-name demo_stage2 task.data=$(DEMO_DIR)/manifests hydra.run.dir=$(DEMO_DIR)/runs/stage2 \
		checkpoint.continue_once=$(DEMO_DIR)/runs/stage1/checkpoints/checkpoint_last.pt
	$(PY) scripts/demo_linear_eval.py --data $(DEMO_DIR)/manifests --runs $(DEMO_DIR)/runs/linear_eval \
		--encoder random= \
		--encoder stage1=$(DEMO_DIR)/runs/stage1/checkpoints/checkpoint_last.pt \
		--encoder stage2=$(DEMO_DIR)/runs/stage2/checkpoints/checkpoint_last.pt
	@echo "stage 1: $(DEMO_DIR)/runs/stage1/checkpoints/checkpoint_last.pt (log: $(DEMO_DIR)/runs/stage1/hydra_train.log)"
	@echo "stage 2: $(DEMO_DIR)/runs/stage2/checkpoints/checkpoint_last.pt (log: $(DEMO_DIR)/runs/stage2/hydra_train.log)"

# Sound event detection on the demo (after `make demo`): frame heads on the frozen random, stage-1 and
# stage-2 encoders, trained on polyphonic scenes of the demo corpus; event F1, segment F1 and PSDS in
# $(DEMO_DIR)/runs/sed/results.{md,json} (scripts/sed_demo.py, docs/sed.md). Under 3 minutes on 2 cores.
demo-sed: venv demo-data
	PYTHONUNBUFFERED=1 $(PY) scripts/sed_demo.py $(DEMO_DIR) --out $(DEMO_DIR)/runs/sed \
		--stage1 $(DEMO_DIR)/runs/stage1/checkpoints/checkpoint_last.pt \
		--stage2 $(DEMO_DIR)/runs/stage2/checkpoints/checkpoint_last.pt

# Does stage 2's mixing help at equal updates? One stage-1 run, then per seed stage 2
# (sslam) vs the same schedule without mixtures (mbua, the paper's MB-UA) for ABLATION_UPDATES updates each, both linearly
# probed; mean +- std over seeds in $(DEMO_DIR)/runs/ablation/ablation.{md,json,png}.
ABLATION_SEEDS ?= 1 2 3 4 5
ABLATION_UPDATES ?= 150
ablation: venv demo-data
	rm -rf $(DEMO_DIR)/runs/ablation
	PYTHONUNBUFFERED=1 $(PY) scripts/ablation.py --data $(DEMO_DIR)/manifests --runs $(DEMO_DIR)/runs/ablation \
		--seeds $(ABLATION_SEEDS) --updates $(ABLATION_UPDATES)

# hear-validator (the HEAR API check in tests/test_hear.py) imports TensorFlow. It gets a venv of
# its own that sees .venv's packages through a .pth file: with TensorFlow in .venv, tensorboard
# would import it into every fairseq process.
HEAR_VENV := .venv-hear
$(HEAR_VENV)/.installed: $(VENV)/.stack
	$(PYTHON) -m venv $(HEAR_VENV)
	$(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > \
		"$$($(HEAR_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/sslam_main_venv.pth"
	$(HEAR_VENV)/bin/python -m pip install hearvalidator
	touch $@

# Everything (what CI runs): reinstalls the package first if a source changed.
test: venv $(HEAR_VENV)/.installed
	$(PY) -m pytest -q --durations=30 tests

# The edit loop: the core and unit tests, under 2 minutes on 2 cores (tests/conftest.py marks
# the rest slow). Sets up .venv if there is none but never reinstalls: PYTHONPATH puts the
# checkout's package first, also in the processes the tests start.
test-fast: | $(if $(wildcard $(PY)),,$(VENV)/.installed)
	PYTHONPATH=$(CURDIR) $(PY) -m pytest -q -m "not slow" tests

clean-demo:
	rm -rf $(DEMO_DIR)
