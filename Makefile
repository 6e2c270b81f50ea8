# The two commands of the README: `make book` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= quick
# The small real data sets beside the checkout (offline machines); elsewhere MedMNIST downloads itself.
export MEDVIT_DATA_ROOT ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: book test setup clean

# torch is pinned to the registry's build: the CPU-only local wheel some machines offer for
# `torch==2.13.0` cannot load PyPI's torchvision 0.28.0 (`operator torchvision::nms does not exist`).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch===2.13.0" torchvision==0.28.0
	$(BIN)/python -m pip install -q -e ".[book,cluster,test]"
	touch $@

setup: $(VENV)/.installed

book: setup
	$(BIN)/medvit reproduce --profile $(PROFILE)
	$(BIN)/medvit book

# pytest exits 5 when it collected no test: that is a failure here, said plainly.
test: setup
	@$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf _build book/_executed
