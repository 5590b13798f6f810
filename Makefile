# Two commands for a fresh machine (Python 3.11 + pip, package registries only):
#   make demo   # explain three real photos with the embedded offline model
#   make test   # run the test suite
# Both create .venv on first use. torch/torchvision are pinned to the releases in
# this machine's local wheel store (a bare `torch` would pull a multi-GB build).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install demo test tox clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dense-readout demo --out out/demo

# pytest exits 5 when it collects nothing: that is a failure here too.
test: $(STAMP)
	$(BIN)/python -m pytest -q

tox: $(STAMP)
	$(BIN)/python -m pip install --quiet 'tox>=4'
	$(BIN)/tox $(TOXARGS)

clean:
	rm -rf $(VENV) .tox out build src/*.egg-info
