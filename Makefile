# Two commands do all the set-up:
#   make demo   create .venv, install preimage, invert a bundled photo with the embedded model
#   make test   create .venv, install preimage with its test extras, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

# torch/torchvision are pinned by constraints.txt to the build this project is tested with
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $@

demo: setup
	$(BIN)/preimage invert sample:chelsea --layer blocks.3 --out out/demo --force
	@echo "open out/demo/chelsea_compare.png (original | reconstruction)"

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/invert_speed.py
	$(BIN)/python benchmarks/invert_quality.py

clean:
	rm -rf $(VENV) out .pytest_cache
