# The commands of the README: `make book`, `make test`, `make site`. Each sets up .venv itself from
# requirements-lock.txt (the versions the tests passed with) and medvit (editable).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= quick
LOCK := requirements-lock.txt
EXTRAS := book,cluster,data,test
# The small real data sets beside the checkout (offline machines); elsewhere MedMNIST downloads itself.
export MEDVIT_DATA_ROOT ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: book test test-fast test-reader test-cluster site colab setup lock clean

# TORCH_INDEX=<a PyTorch wheel index> (e.g. https://download.pytorch.org/whl/cu126): torch and torchvision built
# for this machine's CUDA driver from there, everything else from the lock (whose torch needs a driver >= 580).
# The lock pins torch with `===` (this exact version string): a local CPU-only wheel some machines offer as
# `2.13.0+cpu` also matches `==2.13.0` and cannot load PyPI's torchvision 0.28.0 (`torchvision::nms does not exist`).
$(VENV)/.installed: pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "make: medvit needs Python >= 3.10, but $(PYTHON) is Python " + sys.version.split()[0] + ": run make PYTHON=python3.11 (or another >= 3.10)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifdef TORCH_INDEX
	$(BIN)/python -m pip install -q torch torchvision --index-url $(TORCH_INDEX)
	grep -vE '^(torch|torchvision|triton|nvidia-|cuda-)' $(LOCK) > $(VENV)/lock-without-torch.txt
	$(BIN)/python -m pip install -q -r $(VENV)/lock-without-torch.txt
else
	$(BIN)/python -m pip install -q -r $(LOCK)
endif
	$(BIN)/python -m pip install -q --no-deps -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip check
	touch $@

setup: $(VENV)/.installed

book: setup
	$(BIN)/medvit reproduce --profile $(PROFILE)
	$(BIN)/medvit book

# The published site, exactly as .github/workflows/book.yml builds it: the notebooks executed for PROFILE
# (finished runs are not redone), then _build/html, ready to deploy as a static site.
site: book
	touch _build/html/.nojekyll
	@echo "site: _build/html (profile $(PROFILE)), ready to deploy"

# The pages' Colab notebooks (the parameters first and editable, the install cell at this commit), at the paths
# the pages' badges open on the `colab` branch; .github/workflows/book.yml publishes _build/colab as that branch.
colab: setup
	rm -rf _build/colab
	$(BIN)/python -c 'from medvit.runner import write_colab_notebooks as w; print(*w("_build/colab"), sep="\n")'

# pytest exits 5 when it collected no test: that is a failure here, said plainly. `make test` runs every test but
# those against a real Slurm cluster and those that look at the book in Chromium (the 15 slowest are listed);
# `make test-fast` also skips the end-to-end ones marked slow, for the edit-test loop. `make test-reader` runs
# the reader tests (the book in headless Chromium, which they install as root when it is missing),
# `make test-cluster` the Slurm ones (the cluster is brought up by .ci/slurm-cluster.sh, as root). `make test`
# and `make test-fast` run two tests at a time (pytest-xdist; a file's tests in one process, so that its
# fixtures are made once; benchmarks/README.md has the times). CI
# (.ci/run) runs all three; with CI=true, a reader or Slurm test that skips fails.
PYTEST = $(BIN)/python -m pytest -q -p no:cacheprovider
define run_pytest
	@$(PYTEST) $(2); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make $(1): pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc
endef

test: setup
	$(call run_pytest,test,-m "not slurm and not reader" -n 2 --dist loadfile --durations=15)

test-fast: setup
	$(call run_pytest,test-fast,-m "not slow and not slurm and not reader" -n 2 --dist loadfile)

test-reader: setup
	$(call run_pytest,test-reader,-m reader --durations=5)

test-cluster: setup
	$(call run_pytest,test-cluster,-m slurm -rP --durations=5)

# Rewrite requirements-lock.txt from .venv after the tests passed in it: its installed versions constrain the
# resolution (for the Python .venv runs and newer); uv resolves the other Pythons (>= 3.10) and platforms.
lock: setup
	$(BIN)/python -m pip install -q uv
	$(BIN)/python -m pip freeze --exclude-editable | grep '==' | grep -v '^uv==' \
		| sed "s/\$$/ ; python_full_version >= '$$($(BIN)/python -c 'import platform; print(platform.python_version())')'/" \
		> $(VENV)/tested-versions.txt
	$(BIN)/uv pip compile pyproject.toml $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e)) --universal \
		--python-version 3.10 -c $(VENV)/tested-versions.txt --custom-compile-command "make lock" -o $(LOCK)
	sed -i 's/^torch==/torch===/' $(LOCK)

comma := ,

clean:
	rm -rf _build book/_executed
