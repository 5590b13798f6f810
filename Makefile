# Two commands for a fresh machine (Python 3.11 + pip, package registries only):
#   make demo   # explain three real photos with the embedded offline model
#   make test   # the quality gate (ruff, formatting, mypy) and the test suite with doctests
# Both create .venv on first use. torch/torchvision are pinned to the releases in
# this machine's local wheel store (a bare `torch` would pull a multi-GB build).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# The gate's tools are pinned: a new ruff release may format differently.
LINT_PINS := ruff==0.17.6 mypy==2.4.1
STAMP := $(VENV)/.installed

.PHONY: install demo lint test numerics docs tox ci-matrix clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[test]' $(LINT_PINS)
	# torchattacks (reference PGD for tests/test_attacks.py) pins requests~=2.25.1, which
	# would downgrade urllib3 below what Selenium needs; it runs fine without that pin.
	$(BIN)/python -m pip install --quiet --no-deps torchattacks==3.5.1
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dense-readout demo --out out/demo

# ruff (lint + format check) and mypy over src/; the tests never start on a red gate.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest exits 5 when it collects nothing: that is a failure here too.
test: lint
	$(BIN)/python -m pytest -q

# The tests whose oracles compare floating-point results of different computations
# (marker `numerics`, list in tests/conftest.py) again at 1 and at 4 threads: a result
# that holds at one thread count only is a broken test (`make test` runs at 2).
numerics: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m numerics tests
	OMP_NUM_THREADS=4 $(BIN)/python -m pytest -q -p no:cacheprovider -m numerics tests

# The documentation site (mkdocs.yml) into build/site; --strict: every warning fails
# (a broken link or cross-reference, a missing page, a docstring griffe cannot read).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# pyenv's shims refuse versions that are not selected: put every installed pyenv
# Python's own bin folder on PATH so tox finds python3.10 / python3.12.
PYENV_BINS := $(subst $() ,:,$(wildcard $(HOME)/.pyenv/versions/3.*/bin))

tox: $(STAMP)
	$(BIN)/python -m pip install --quiet 'tox>=4'
	PATH="$(PYENV_BINS):$$PATH" $(BIN)/tox $(TOXARGS)

# What CI runs of the matrix (.ci/run): the other Pythons (py310 at 1 thread, py312 at 4)
# and the lowest releases, on the numerics-marked tests without the `slow` and `data` ones
# (`make test` runs the whole suite on 3.11; `make tox` runs everything everywhere).
# The three run in parallel: most of each environment's time is installing torch & co.
CI_MATRIX_TESTS := -m 'numerics and not slow and not data' -p no:cacheprovider tests
ci-matrix:
	$(MAKE) tox TOXARGS="-e py310,py312,lowest -p 3 --parallel-live -- $(CI_MATRIX_TESTS)"

clean:
	rm -rf $(VENV) .tox out build src/*.egg-info
