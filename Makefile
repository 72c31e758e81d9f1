# README's two commands: `make train` (the EBM main job) and `make test`. Both create .venv if missing, install the project into
# it and make sure the default data set (Fashion-MNIST) is present.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FMNIST_DEB := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PYTEST_ARGS ?=

.PHONY: setup data train test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
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
	$(PY) -m train.ebm --steps 400 --workdir runs/ebm

test: setup data
	$(PY) -m pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS)

bench: setup data
	$(PY) -m benchmarks.input_pipeline

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
