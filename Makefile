# The two commands of the README. Both create .venv in the checkout if needed and install the package into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo
DEMO_EPOCHS ?= 100

.PHONY: demo test install clean

$(BIN)/ppl-vae: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/ppl-vae

# Train a VAE on the embedded Fashion-MNIST subset (a couple of minutes on 2 CPU cores), evaluate it, plot it.
demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/ppl-vae train --out $(DEMO_DIR) --epochs $(DEMO_EPOCHS) --elbo meanfield
	$(BIN)/ppl-vae evaluate $(DEMO_DIR) --iwae 1000
	$(BIN)/ppl-vae plot $(DEMO_DIR)
	@echo "report: $(DEMO_DIR)/evaluation_test.json  figures: $(DEMO_DIR)/figures/"

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs *.egg-info
