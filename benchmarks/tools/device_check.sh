#!/usr/bin/env bash
# The GPU work of every open issue in one device call, in a fixed priority order, each item under its own time
# guard so that a slow early item never costs the important ones (issue 18):
#   1. mobilenet  (issue 15)  the seed's recipe (--recipe seed: 56x56x3, width 1, batch 64, Adam, 50 epochs) and the
#                             CPU recipe scaled up (--recipe cpu94 --width 1), each aiming at >= 95% test accuracy
#   2. tests      (issue 18)  the whole test suite on the GPU
#   3. gan_step   (issue 16)  the GAN step table with the sub-pixel generator
#   4. langevin   (issue 18)  Langevin chains against the PyTorch peers (eager, bf16 autocast, torch.compile)
#   5. cifar      (14, 16, 17) short CIFAR-10 runs: the GAN in both modes, the EBM, CE vs EXACT
#
# Usage: bash benchmarks/tools/device_check.sh OUT [DATA] [ITEM ...]
#   DATA   raw data folder laid out as $JAXTRICKS_DATA (fashion_mnist/, mnist/, cifar10/); benchmarks/tools/device_bundle.sh
#          makes one (with the wheels the GPU image lacks) in .device/, which the device call carries
#   ITEM   a subset of the items above (still run in the order above); default all
#   BUDGET_S  seconds for the whole call (default 540): an item starts only if its guard fits in what is left,
#          else it is recorded as skipped; its guard stops it with SIGINT (a trainer saves and exits 130), then KILL
#   TOY=1  tiny sizes and guards: how tests/test_device_check.py runs this script on a CPU
# Writes OUT/device_check.log and OUT/device_check.tgz (every item's results JSON, metrics and grids, and
# items.jsonl: each item's rc, seconds, skipped or not); `python -m benchmarks.tools.device_results OUT/device_check.tgz`
# turns it into benchmarks/results/*_gpu.json for benchmarks.tools.report.
set -u
out=${1:?usage: device_check.sh OUT [DATA] [ITEM ...]}
data=${2:-}
shift $(( $# >= 2 ? 2 : $# ))
items=${*:-mobilenet tests gan_step langevin cifar}
py=${PYTHON:-python3}
toy=${TOY:-0}
budget=${BUDGET_S:-540}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")
log=$out/device_check.log
: > "$log"
start=$(date +%s)
export PYTHONUNBUFFERED=1 TFDS_DATA_DIR=${TFDS_DATA_DIR:-$work/tfds}
# JAX takes less than its default 75% of GPU memory up front, so PyTorch can run beside it in one process
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.4}
[ -n "$data" ] && export JAXTRICKS_DATA=$(cd "$data" && pwd)
say() { echo "=== $(date -u +%T) $*" | tee -a "$log"; }
wanted() { [[ " $items " == *" $1 "* ]]; }

# item NAME GUARD_S CMD...: runs CMD under its guard if the guard fits in the budget left; records the outcome.
item() {
  local name=$1 guard=$2; shift 2
  wanted "$name" || wanted "${name%%_*}" || return 0     # an item is asked for by its name or its group's
  local left=$(( budget - ($(date +%s) - start) ))
  if (( guard > left )); then
    say "$name: skipped ($guard s guard, $left s left of $budget)"
    echo "{\"item\": \"$name\", \"skipped\": true, \"guard_s\": $guard, \"left_s\": $left}" >> "$work/items.jsonl"
    return 0
  fi
  say "$name (guard $guard s, $left s left)"
  local t0=$(date +%s)
  timeout -s INT -k 15 "$guard" "$@" >> "$log" 2>&1
  local rc=$?
  local took=$(( $(date +%s) - t0 ))
  say "$name: exit $rc after $took s"
  echo "{\"item\": \"$name\", \"skipped\": false, \"rc\": $rc, \"seconds\": $took, \"guard_s\": $guard}" \
    >> "$work/items.jsonl"
}

quiet=(--no-progress --no-tensorboard)

say "versions"
{ $py -c "from benchmarks.common import machine; import jax; print(machine(), 'jax', jax.__version__)" \
    > "$work/machine.txt"
  cat "$work/machine.txt"; nvidia-smi -L 2>/dev/null; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null
  $py -c "import jax, flax, optax; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, \
'optax', optax.__version__)"; $py -c "import torch; print('torch', torch.__version__)" 2>/dev/null; } 2>&1 | tee -a "$log"

if (( toy )); then   # tiny sizes: the script's plumbing, not its numbers
  # (guards roomy enough for a slow CPU host: the toy MobileNet's data preparation and compile took 96 s on
  # an AMD EPYC AVX2 host, 2026-12-02; the GAN's 315 s leaves a 320 s budget 5 s for what runs before it, which
  # tests/test_device_check.py uses to see an item skipped)
  g_seed=300; g_cpu=300; g_tests=60; g_gan=315; g_lgv=60; g_cifar=300
  # (--depthwise conv: the form a GPU's auto picks, half the CPU compile of the shifted sums)
  mn_seed=(--steps 3 --width 0.25 --eval-every 3 --depthwise conv); mn_cpu=("${mn_seed[@]}")
  tests_args=(tests/test_optim.py); gan_args=(--batches 4 --repeats 1 --width 4 --torch-python "$py")
  lgv_args=(--channels 2 --chains 4 --steps 2 --compare-chains 4 --compare-steps 2 --repeats 1 --max-sample-steps 0)
  cifar_gan=(--steps 2 --width 4 --fid-every 2 --sample-every 2); cifar_ebm=(--steps 2 --channels 4 --langevin-steps 2)
  cifar_cls=(--steps 2 --eval-every 2)
else
  # MobileNet: 50 epochs of the seed's recipe are ~47k steps; the guard stops a slower run with its last epoch's
  # test accuracy saved (the log says how many epochs it reached)
  g_seed=200; g_cpu=150; g_tests=150; g_gan=120; g_lgv=90; g_cifar=150
  mn_seed=(); mn_cpu=(--width 1.0)
  tests_args=(); gan_args=(--batches 64,256,1024 --repeats 20 --torch-python "$py")
  lgv_args=(--chains 16,64,256,1024 --steps 20,60 --max-sample-steps 0 --compare-chains 128 --compare-steps 20 \
            --repeats 5)
  cifar_gan=(--steps 3000 --fid-every 1000 --sample-every 1000); cifar_ebm=(--steps 1500 --fid-every 500)
  cifar_cls=(--epochs 10)
fi

# 1. MobileNet to 95% (issue 15)
# (--eval-flips: each evaluation also with test-time flips, reported beside the plain accuracy)
item mobilenet_seed "$g_seed" $py -m train.classify --workdir "$work/mobilenet_seed" "${quiet[@]}" --recipe seed \
  --eval-flips "${mn_seed[@]}"
item mobilenet_cpu94_wide "$g_cpu" $py -m train.classify --workdir "$work/mobilenet_cpu94_wide" "${quiet[@]}" \
  --recipe cpu94 --eval-flips "${mn_cpu[@]}"
# 2. the test suite (issue 18)
XLA_PYTHON_CLIENT_PREALLOCATE=false item tests "$g_tests" $py -m pytest -q -n 8 -p no:cacheprovider \
  --junitxml="$work/tests.xml" "${tests_args[@]}"
# 3. the GAN step with the sub-pixel generator (issue 16)
item gan_step "$g_gan" $py -m benchmarks.speed.gan_step "${gan_args[@]}" --json "$work/gan_step_gpu.json"
# 4. Langevin chains against the PyTorch peers (issue 18)
item langevin "$g_lgv" $py -m benchmarks.speed.langevin "${lgv_args[@]}" --json "$work/langevin_gpu.json"
# 5. short CIFAR-10 runs (issues 14, 16, 17), a fifth of the guard each
each=$(( g_cifar / 5 ))
item cifar_gan_single "$each" $py -m train.gan --dataset cifar10 --mode single --workdir "$work/cifar_gan_single" \
  "${quiet[@]}" "${cifar_gan[@]}"
item cifar_gan_alternating "$each" $py -m train.gan --dataset cifar10 --mode alternating \
  --workdir "$work/cifar_gan_alternating" "${quiet[@]}" "${cifar_gan[@]}"
item cifar_ebm "$each" $py -m train.ebm --dataset cifar10 --workdir "$work/cifar_ebm" "${quiet[@]}" "${cifar_ebm[@]}"
item cifar_ce "$each" $py -m train.classify --workdir "$work/cifar_ce" "${quiet[@]}" --dataset cifar10 \
  "${cifar_cls[@]}"
item cifar_exact "$each" $py -m train.classify --workdir "$work/cifar_exact" "${quiet[@]}" --dataset cifar10 \
  --loss exact --exact-sigma scheduled --exact-margin 0.5 --logit-batchnorm --grad-normalizer --optimizer sgd \
  --lr 0.5 --schedule exponential --weight-decay 1e-4 --batch-size 256 "${cifar_cls[@]}"

say "done: $(( $(date +%s) - start )) s of $budget"
# everything small that the items wrote, in one file (the device tool brings back at most 8)
(cd "$work" && find . -maxdepth 2 \( -name '*.json' -o -name '*.jsonl' -o -name '*.xml' -o -name '*.png' -o -name '*.txt' \) \
   -size -4M -print0 | tar czf "$out/device_check.tgz" --null -T -)
rm -rf "$work"
