# The commands of the README. Each creates .venv in the checkout if needed and installs the package into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo
DEMO_EPOCHS ?= 100

.PHONY: demo test lint docs install clean

$(BIN)/ppl-vae: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/ppl-vae

# Train a VAE on the embedded Fashion-MNIST subset, evaluate it, measure its inference gap, plot it
# (about 8 minutes on 2 idle CPU cores after the install).
demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/ppl-vae train --out $(DEMO_DIR) --epochs $(DEMO_EPOCHS) --elbo meanfield
	$(BIN)/ppl-vae evaluate $(DEMO_DIR) --iwae 1000
	$(BIN)/ppl-vae gap $(DEMO_DIR) --split test --n 200 --eval-samples 1000
	$(BIN)/ppl-vae plot $(DEMO_DIR)
	@echo "reports: $(DEMO_DIR)/evaluation_test.json $(DEMO_DIR)/gap/gap_test.md  figures: $(DEMO_DIR)/figures/ $(DEMO_DIR)/gap/"

# two pytest-xdist workers (one thread each, tests/conftest.py), a test file per worker (module fixtures once)
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# ruff, with the configuration in pyproject.toml
lint: install
	$(BIN)/ruff check .

# The API reference from the docstrings, warnings as errors (docs/_build/html/index.html)
$(BIN)/sphinx-build: $(BIN)/ppl-vae
	$(BIN)/pip install --quiet -e ".[test,docs]"
	touch $@

docs: $(BIN)/sphinx-build
	$(BIN)/python -m sphinx -E -W --keep-going -q -b html docs docs/_build/html

clean:
	rm -rf $(VENV) runs *.egg-info docs/_build
