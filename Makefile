# README's two commands: `make train` (the EBM main job) and `make test`. Both create .venv if missing, install the project into
# it and make sure the default data set (Fashion-MNIST) is present.
# The interpreter: Python 3.12 where the machine has one (on PATH or pyenv's 3.12.1), else python3 (>= 3.11).
# Deliberately 3.12: jax 0.12 installs there (0.10.2 is the newest for 3.11), and on our 2-core Sapphire Rapids VMs
# it ran a 3x3 conv 2.1x and the EBM step 1.15-1.4x faster (2026-11-27). Override with `make PYTHON=python3.11 ...`.
ifndef PYTHON
PYTHON := $(shell for p in python3.12 "$$(pyenv root 2>/dev/null)/versions/3.12.1/bin/python3.12" python3; do \
            "$$p" -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
endif
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK := requirements.lock
FMNIST_DEB := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PYTEST_ARGS ?=

.PHONY: setup interpreter data train test lint bench upgrade clean onednn

setup: interpreter $(VENV)/.installed onednn

# a venv made by another interpreter (e.g. by an older checkout's python3.11) is made anew
interpreter:
	@test -n "$(PYTHON)" || { echo "no Python >= 3.11 found; install one or pass PYTHON=..."; exit 2; }
	@if [ -x $(PY) ] && [ "$$(cat $(VENV)/.python 2>/dev/null)" != "$$($(PYTHON) -c 'import sys; print(sys.version)')" ]; then \
	  echo "$(VENV) was made by another Python; making it anew with $(PYTHON)"; rm -rf $(VENV); fi

# The exact versions of requirements.lock (those that made the published numbers) with Python 3.12; another
# Python gets pyproject.toml's ranges, and is told so. --no-compile: Python compiles the modules a program imports
# when it first imports them, not all of the installed packages' at install time (14 s of 34 on 2 cores).
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PYTHON) -c 'import sys; print(sys.version)' > $(VENV)/.python
	$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then \
	  echo "$(PY) -m pip install -q --no-compile -c $(LOCK) -e '.[test]'"; \
	  $(PY) -m pip install -q --no-compile -c $(LOCK) -e '.[test]'; \
	else \
	  echo "Python $$($(PY) -c 'import platform; print(platform.python_version())'): installing pyproject.toml's ranges," \
	       "not $(LOCK) (made with Python 3.12), so results may differ from README's in the last digits"; \
	  $(PY) -m pip install -q --no-compile -e '.[test]'; \
	fi
	touch $@

# Fashion-MNIST: from $JAXTRICKS_DATA/fashion_mnist, else Debian's package (installed here when apt-get and
# root are available), else the loader downloads the official files on first use.
data:
	@if [ -n "$$JAXTRICKS_DATA" ] && [ -f "$$JAXTRICKS_DATA/fashion_mnist/train-images-idx3-ubyte.gz" ]; then \
	  echo "Fashion-MNIST: $$JAXTRICKS_DATA/fashion_mnist"; \
	elif [ -f $(FMNIST_DEB) ]; then \
	  echo "Fashion-MNIST: $(dir $(FMNIST_DEB))"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist"; \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)) && \
	  test -f $(FMNIST_DEB); \
	else \
	  echo "Fashion-MNIST: not on this machine; it will be downloaded from the official URL on first use"; \
	fi

train: setup data
	$(PY) -m train.ebm --workdir runs/ebm

# oneDNN convolutions for XLA:CPU (jaxtricks/onednn.py, issue 35: bf16 convolutions that reach a CPU's matrix units):
# compiled where a C++ compiler and oneDNN's headers exist (Debian's libdnnl-dev, installed here when apt-get and
# root are available), left out otherwise: then `--conv onednn` says how to get it, and nothing else changes.
ONEDNN_SO := jaxtricks/csrc/onednn_conv.so
ONEDNN_H := /usr/include/oneapi/dnnl/dnnl.hpp
onednn: $(VENV)/.installed
	@if [ ! -f $(ONEDNN_H) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "oneDNN: installing Debian's libdnnl-dev"; \
	  apt-get install -y -q libdnnl-dev >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libdnnl-dev >/dev/null 2>&1; } || true; \
	fi
	@if command -v $(CXX) >/dev/null && [ -f $(ONEDNN_H) ]; then $(MAKE) -s $(ONEDNN_SO) || \
	  echo "oneDNN convolutions: the build failed (above); --conv onednn is unavailable, nothing else changes"; \
	else echo "oneDNN convolutions: not built (no C++ compiler or no libdnnl-dev); --conv onednn is unavailable"; fi

$(ONEDNN_SO): jaxtricks/csrc/onednn_conv.cc $(VENV)/.installed
	$(CXX) -O2 -std=c++17 -shared -fPIC -w -I"$$($(PY) -c 'import jax; print(jax.ffi.include_dir())')" $< -ldnnl -o $@

test: setup data
	$(PY) -m pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS)

# pyflakes and import order (pyproject.toml's [tool.ruff]); `$(VENV)/bin/ruff check --fix .` mends most findings
lint: setup
	$(VENV)/bin/ruff check .

# Deliberately moves requirements.lock to the newest releases that pyproject.toml allows, in a scratch venv
upgrade: interpreter
	rm -rf $(VENV)-upgrade && $(PYTHON) -m venv $(VENV)-upgrade
	$(VENV)-upgrade/bin/python -m pip install -q --upgrade pip
	$(VENV)-upgrade/bin/python -m pip install -q '.[test]'
	{ sed -n '/^#/p' $(LOCK); $(VENV)-upgrade/bin/python -m pip freeze --all | grep -v -e '^jaxtricks' -e '^pip=='; } > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf $(VENV)-upgrade
	@echo "$(LOCK) now holds the newest versions: the published numbers may move. Run make train, compare with README," \
	      "and say in CHANGELOG.md which numbers moved."

bench: setup data
	$(PY) -m benchmarks.speed.input_pipeline

clean:
	rm -rf $(VENV) $(VENV)-upgrade *.egg-info .pytest_cache build $(ONEDNN_SO)
