#!/usr/bin/env bash
# Prepares .device/ for a device call (the GPU image has JAX, flax, optax, orbax, chex, PyTorch, but not these):
#   .device/whl/   wheels of the packages the image lacks, at the versions of this venv (tensorflow-datasets and
#                  the part of its dependencies the image lacks, array_record, dm-pix, tensorboardX, ...)
#   .device/data/  fashion_mnist/ (Debian's files or $JAXTRICKS_DATA's), mnist/, then cifar10/ when they fit
# Everything must fit the device tool's 64 MiB working-tree limit; the script says the size and fails above 60 MiB.
# Then, in the device call (carry [".device"]):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .device/whl/*.whl && export PYTHONPATH=/tmp/site && bash benchmarks/tools/device_check.sh $OUT .device/data
set -eu
dest=${1:-.device}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$dest/whl" "$dest/data"
version() { "$py" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
pkgs=(tensorflow-datasets array_record dm-tree immutabledict simple_parsing docstring_parser tensorflow-metadata
      googleapis-common-protos termcolor toml dm-pix tensorboardX importlib_resources)
specs=()
for p in "${pkgs[@]}"; do v=$(version "$p"); specs+=("$p${v:+==$v}"); done
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$dest/whl" "${specs[@]}"
# promise (a tensorflow-datasets dependency) has no wheel on PyPI: build one (pure Python)
v=$(version promise); "$py" -m pip wheel -q --no-deps -w "$dest/whl" "promise${v:+==$v}"
data=${JAXTRICKS_DATA:-}
fm=/usr/share/datasets/fashion-mnist
[ -n "$data" ] && [ -d "$data/fashion_mnist" ] && fm=$data/fashion_mnist
mkdir -p "$dest/data/fashion_mnist"; cp "$fm"/*-ubyte.gz "$dest/data/fashion_mnist/"
for name in mnist cifar10; do   # mnist first: the exact_vgg_m3 item needs it
  if [ -n "$data" ] && [ -d "$data/$name" ]; then
    size=$(du -sm "$dest" | cut -f1); add=$(du -sm "$data/$name" | cut -f1)
    if (( size + add <= 60 )); then cp -r "$data/$name" "$dest/data/"; else echo "$name left out: no room"; fi
  fi
done
total=$(du -sm "$dest" | cut -f1)
echo "$dest: ${total} MiB ($(ls "$dest/whl" | wc -l) wheels; data: $(ls "$dest/data" | tr '\n' ' '))"
(( total <= 60 )) || { echo "$dest is over 60 MiB: the device call carries at most 64 MiB in all" >&2; exit 1; }
