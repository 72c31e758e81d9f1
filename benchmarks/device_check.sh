#!/usr/bin/env bash
# The checks to run when a GPU is at hand, in priority order, each under its own time limit:
#   1. versions and the device;  2. benchmarks.gan_step (issue 4's GPU column);
#   3. benchmarks.langevin: sweep + the PyTorch-eager comparison on the same GPU (issue 5's GPU column);
#   4. the main job, python -m train.ebm --steps 400, timed;  5. the library's unit tests on the GPU;
# Usage: bash benchmarks/device_check.sh OUTDIR [RAW_DATA_DIR]   (RAW_DATA_DIR holds fashion-mnist/*.gz)
# Results land in OUTDIR: *.json (benchmarks/results format), one log, and the main job's buffer grid.
set -u
out=${1:?usage: device_check.sh OUTDIR [RAW_DATA_DIR]}
data=${2:-}
py=${PYTHON:-python3}
log=$out/device_check.log
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TFDS_DATA_DIR=${TFDS_DATA_DIR:-/tmp/tfds}
# JAX takes less than its default 75% of GPU memory up front, so PyTorch can run beside it in one process
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.4}
step() { echo "=== $(date -u +%T) $*" | tee -a "$log"; }

step versions
{ nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
  $py -c "import jax, flax, optax, orbax.checkpoint as o, torch; print('jax', jax.__version__, jax.devices(), \
'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__)"; } 2>&1 | tee -a "$log"

step gan_step
timeout 110 $py -m benchmarks.gan_step --batches 64,256,1024 --repeats 20 --json "$out/gan_step_gpu.json" 2>&1 \
  | tee -a "$log"

step langevin
timeout 210 $py -m benchmarks.langevin --chains 16,64,256,1024 --steps 20,60 --max-sample-steps 0 \
  --compare-chains 128 --compare-steps 20 --repeats 5 --json "$out/langevin_gpu.json" 2>&1 | tee -a "$log"

data_flag=()
[ -n "$data" ] && data_flag=(--data-dir "$data")
step "train.ebm --steps 400"
t0=$(date +%s)
timeout 110 $py -m train.ebm --steps 400 --workdir /tmp/ebm400 --no-progress "${data_flag[@]}" 2>&1 | tail -n 25 \
  | tee -a "$log"
echo "train.ebm --steps 400: $(( $(date +%s) - t0 )) s wall, data preparation and compilation included" | tee -a "$log"
tail -n 3 /tmp/ebm400/metrics.jsonl 2>/dev/null | tee -a "$log"
cp /tmp/ebm400/buffer_000400.png "$out/ebm_buffer_400_gpu.png" 2>/dev/null

step "unit tests on the GPU"
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 100 $py -m pytest -q -n 6 -p no:cacheprovider tests/test_losses.py \
  tests/test_langevin.py tests/test_gan.py tests/test_ebm.py tests/test_metrics.py tests/test_loop.py \
  tests/test_train_ebm.py tests/test_train_gan.py 2>&1 | tail -n 40 | tee -a "$log"

step done
