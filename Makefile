# Two commands do all the set-up:
#   make demo   create .venv, install preimage, invert a bundled photo with the embedded model
#   make test   create .venv, install preimage with its test extras, the Debian packages the tests use
#               (when run as root), then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup system-packages demo test bench clean

# Debian packages: Chromium (and a font) for the browser-UI tests, Fashion-MNIST for the GAN and
# captioning benchmarks. Installed when missing and running as root; otherwise the command is printed
# and the browser tests skip with the reason.
DEBIAN_PACKAGES := chromium fonts-dejavu-core dataset-fashion-mnist

setup: $(VENV)/.installed

# torch/torchvision are pinned by constraints.txt to the build this project is tested with
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $@

system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "missing Debian packages:$$missing (as root: apt-get install$$missing)"; fi

demo: setup
	$(BIN)/preimage invert sample:chelsea --layer blocks.3 --out out/demo --force
	@echo "open out/demo/chelsea_compare.png (original | reconstruction)"

test: setup system-packages
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/invert_speed.py
	$(BIN)/python benchmarks/invert_quality.py

clean:
	rm -rf $(VENV) out .pytest_cache
