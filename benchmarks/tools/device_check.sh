#!/usr/bin/env bash
# The GPU work of every open issue in one device call, in a fixed priority order, each item under its own time
# guard so that a slow early item never costs the important ones (issue 18):
#   1. ebm_step      (issue 35)  the EBM training step against the PyTorch peers (benchmarks.speed.ebm_step)
#   2. exact_vgg_m3  (issue 35)  the EXACT paper's MNIST row on its net: --recipe exact_paper_mnist, ce_paper_mnist,
#                                hinge_paper_mnist (150 epochs asked; each stops at its guard with SIGTERM, saves, and
#                                its metrics say how many epochs it completed)
#   3. ebm_long      (issue 34)  the main job's EBM recipe for 20,000 steps, FID every 1,000, seeds 0, 1, 2 (since
#                                2026-12-05 with augmented chain starts; ebm_long_gpu.json's runs of 2026-12-04 were
#                                --recipe uva, which a new card's runs replace: git keeps them)
#                                (ebm_long_s0, _s1, _s2)
#   4. fresh_chains  (issue 34)  benchmarks.studies.ebm.fresh_chains: each recipe (fresh_chains_<recipe>) over seeds
#                                0, 1, 2 at 1,000 steps, scored from noise at 60, 120, 256 and 500 Langevin steps
#   5. tests         (issue 18)  the whole test suite on the GPU
# Items 2-4 are training runs, not timings: they run side by side (one GPU, 16 host cores), each under the one guard
# of their group, each JAX process taking a small share of the GPU's memory. Item 1, a timing, runs alone first.
#
# Usage: bash benchmarks/tools/device_check.sh OUT [DATA] [ITEM ...]
#   DATA   raw data folder laid out as $JAXTRICKS_DATA (fashion_mnist/, mnist/, cifar10/); benchmarks/tools/device_bundle.sh
#          makes one (with the wheels the GPU image lacks) in .device/, which the device call carries
#   ITEM   a subset of the items above (still run in the order above); default all. A word asks for the item of
#          that name and for those whose name starts with it and "_" (exact_vgg_m3: its three runs; ebm: both EBM items)
#   BUDGET_S  seconds for the whole call (default 560): an item starts only if its guard fits in what is left,
#          else it is recorded as skipped; its guard stops it with SIGINT (a trainer saves and exits 130; the side-by-side
#          items: SIGTERM, as a script's background jobs ignore SIGINT), then KILL; `timeout` then reports 124
#   TOY=1  tiny sizes and guards: how tests/test_device_check.py runs this script on a CPU
# Writes OUT/device_check.log and OUT/device_check.tgz (every item's results JSON, metrics and grids, and
# items.jsonl: each item's rc, seconds, skipped or not); `python -m benchmarks.tools.device_results OUT/device_check.tgz`
# turns it into benchmarks/results/*_gpu.json for benchmarks.tools.report.
set -u
out=${1:?usage: device_check.sh OUT [DATA] [ITEM ...]}
data=${2:-}
shift $(( $# >= 2 ? 2 : $# ))
items=${*:-ebm_step exact_vgg_m3 ebm_long fresh_chains tests}
py=${PYTHON:-python3}
toy=${TOY:-0}
budget=${BUDGET_S:-560}
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
wanted() { local w; for w in $items; do [[ $1 == "$w" || $1 == "$w"_* ]] && return 0; done; return 1; }
# touched GROUP: an item of the group is asked for (by the group's name, a prefix of it, or one of its items)
touched() { local w; for w in $items; do [[ $1 == "$w" || $1 == "$w"_* || $w == "$1"_* ]] && return 0; done; return 1; }
known=(ebm_step exact_vgg_m3_exact exact_vgg_m3_ce exact_vgg_m3_hinge ebm_long_s0 ebm_long_s1 ebm_long_s2
       fresh_chains_main fresh_chains_shortrun fresh_chains_reinit25 fresh_chains_noise2x fresh_chains_reg1 fresh_chains_kl1aug tests)
for w in $items; do
  ok=0; for k in "${known[@]}"; do [[ $k == "$w" || $k == "$w"_* ]] && ok=1; done
  (( ok )) || { echo "device_check.sh: no item $w; the items: ${known[*]} (or a prefix: exact_vgg_m3, ebm, fresh_chains)" >&2; exit 2; }
done

left_s() { echo $(( budget - ($(date +%s) - start) )); }   # seconds left of the budget
# admit NAME GUARD_S: true when NAME is asked for (wanted) and its guard fits in the budget left; one asked for whose
# guard does not fit is recorded as skipped
admit() {
  wanted "$1" || return 1
  local left=$(left_s)
  (( $2 <= left )) && return 0
  say "$1: skipped ($2 s guard, $left s left of $budget)"
  echo "{\"item\": \"$1\", \"skipped\": true, \"guard_s\": $2, \"left_s\": $left}" >> "$work/items.jsonl"
  return 1
}
# record NAME GUARD_S RC T0: the outcome of an item that ran, in the log and items.jsonl
record() {
  local took=$(( $(date +%s) - $4 ))
  say "$1: exit $3 after $took s"
  echo "{\"item\": \"$1\", \"skipped\": false, \"rc\": $3, \"seconds\": $took, \"guard_s\": $2}" >> "$work/items.jsonl"
}

# item NAME GUARD_S CMD...: runs CMD under its guard if the guard fits in the budget left; records the outcome.
item() {
  local name=$1 guard=$2; shift 2
  admit "$name" "$guard" || return 0
  say "$name (guard $guard s, $(left_s) s left)"
  local t0=$(date +%s)
  timeout -s INT -k 15 "$guard" "$@" >> "$log" 2>&1
  record "$name" "$guard" $? "$t0"
}

# member NAME GUARD_S CMD...: like item, but started in the background, its output in $work/NAME.log; `join` waits
# for every member started since the last join. Members share the GPU: each JAX process takes MEMBER_MEM of its memory.
members=()
member() {
  local name=$1 guard=$2; shift 2
  admit "$name" "$guard" || return 0
  say "$name (in parallel, guard $guard s, $(left_s) s left)"
  ( t0=$(date +%s)
    XLA_PYTHON_CLIENT_MEM_FRACTION=${MEMBER_MEM:-0.06} timeout -s TERM -k 15 "$guard" "$@" > "$work/$name.log" 2>&1
    record "$name" "$guard" $? "$t0" ) &
  members+=($!)
}
join() {
  (( ${#members[@]} )) || return 0
  wait "${members[@]}"; members=()
  for f in "$work"/*.log; do [ -e "$f" ] && { echo "--- ${f##*/}"; tail -n 40 "$f"; } >> "$log"; rm -f "$f"; done
}

quiet=(--no-progress --no-tensorboard)

say "versions"
{ $py -c "from benchmarks.common import machine; import jax; print(machine(), 'jax', jax.__version__)" \
    > "$work/machine.txt"
  cat "$work/machine.txt"; nvidia-smi -L 2>/dev/null; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null
  $py -c "import jax, flax, optax; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, \
'optax', optax.__version__)"; $py -c "import torch; print('torch', torch.__version__)" 2>/dev/null; } 2>&1 | tee -a "$log"

if (( toy )); then   # tiny sizes: the script's plumbing, not its numbers
  # (guards roomy enough for a slow, loaded CPU host: a toy vgg_m3 run, its MNIST preparation and three compiles,
  # took 75-115 s on 2 shared cores at load 11, 2026-12-04; tests/test_device_check.py asks for ebm_long and tests
  # with a 100 s budget: ebm_long's 115 s guard cannot fit and is skipped, the tests' 60 s guard then runs)
  g_ebm_step=150; g_exact=150; g_ebm_long=115; g_fresh=150; g_tests=60
  ebm_step_args=(--batch-size 8 --langevin-steps 2 --channels 4 --repeats 1)
  exact_args=(--steps 3 --width 0.0625 --batch-size 8 --eval-every 3)
  ebm_long_args=(--steps 2 --fid-every 2 --fid-samples 16 --sample-every 2 --channels 4 --langevin-steps 2 \
                 --batch-size 8 --buffer-size 64)
  seeds=(0); recipes=(main shortrun)
  fresh_args=(--steps 2 --samples 8 --lengths 2,4 --train-flags "--channels 4 --batch-size 8 --buffer-size 64 \
--langevin-steps 2 --fid-samples 8 --sample-every 2")
  tests_args=(-n 0 tests/test_optim.py)   # (the later -n wins: no 8 workers on a small CPU; the quickest file)
else
  # the training runs side by side under one guard of 250 s: the exact runs (150 epochs of 234 steps asked) stop
  # with the test accuracy of their last finished epoch saved (one evaluation per epoch), the long EBM runs with
  # their FID curve so far; the fresh-chain study records each finished run as it goes
  g_ebm_step=180; g_exact=250; g_ebm_long=250; g_fresh=250; g_tests=80
  # (shortrun, reinit25, noise2x and reg1 were measured on the H200 on 2026-12-04, ebm_fresh_chains_gpu.json, which
  # device_results merges; main, now with augmented starts, runs beside kl1aug as the card's control)
  seeds=(0 1 2); recipes=(main kl1aug)   # (kl1, aug, kl1aug: the CPU's, 2026-12-05, ebm_fresh_chains_recipes.json)
  fresh_args=()
  ebm_step_args=(--batch-size 128 --repeats 20)
  exact_args=()
  ebm_long_args=(--steps 20000 --fid-every 1000)
  tests_args=(-m "not slow")   # the whole suite needs more than its guard; the slow tests train real models
fi

# 1. the EBM step against the PyTorch peers (issue 35)
item ebm_step "$g_ebm_step" $py -m benchmarks.speed.ebm_step "${ebm_step_args[@]}" --torch-python "$py" \
  --json "$work/ebm_step_gpu.json"
# 2-4. training runs, side by side; first the data sets they read, prepared once (not by each run at once)
fits() { (( $1 <= $(left_s) )); }   # a guard of $1 s fits in what is left
sets=()
{ touched exact_vgg_m3 && fits "$g_exact"; } && sets+=(mnist)
{ { touched ebm_long && fits "$g_ebm_long"; } || { touched fresh_chains && fits "$g_fresh"; }; } && sets+=(fashion_mnist)
if (( ${#sets[@]} )); then
  say "data: preparing ${sets[*]}"
  timeout -s TERM -k 15 300 $py -c "import sys
from jaxtricks.data import load
for name in sys.argv[1:]:
  for split in ('train', 'test'):
    print(name, split, load(name, split)[0].shape)" "${sets[@]}" > "$work/data.log" 2>&1
  rc=$?; grep -v '%|' "$work/data.log" | tail -n 20 >> "$log"; rm -f "$work/data.log"
  say "data: exit $rc"
fi
# 2. the EXACT paper's MNIST row on vgg_m3: EXACT as published, and the CE and hinge rows it compares (issue 35)
for loss in exact ce hinge; do
  member "exact_vgg_m3_$loss" "$g_exact" $py -m train.classify --workdir "$work/exact_vgg_m3_$loss" "${quiet[@]}" \
    --recipe "${loss}_paper_mnist" --dataset mnist "${exact_args[@]}"
done
# 3. the main job's EBM recipe, long, with its FID curve, three seeds (issue 34)
for seed in "${seeds[@]}"; do
  member "ebm_long_s$seed" "$g_ebm_long" $py -m train.ebm --workdir "$work/ebm_long_s$seed" "${quiet[@]}" \
    --seed "$seed" "${ebm_long_args[@]}"
done
# 4. recipes for sampling from noise, each over the seeds (issue 34)
for recipe in "${recipes[@]}"; do
  member "fresh_chains_$recipe" "$g_fresh" $py -m benchmarks.studies.ebm.fresh_chains --recipes "$recipe" \
    --seeds "$(IFS=,; echo "${seeds[*]}")" --root "$work/fresh_runs" --json "$work/fresh_chains_$recipe.json" \
    "${fresh_args[@]}"
done
join
# 5. the test suite (issue 18)
XLA_PYTHON_CLIENT_PREALLOCATE=false item tests "$g_tests" $py -m pytest -q -n 8 -p no:cacheprovider \
  --junitxml="$work/tests.xml" "${tests_args[@]}"

say "done: $(( $(date +%s) - start )) s of $budget"
# everything small that the items wrote, in one file (the device tool brings back at most 8)
(cd "$work" && find . -maxdepth 2 \( -name '*.json' -o -name '*.jsonl' -o -name '*.xml' -o -name '*.png' -o -name '*.txt' \) \
   -size -4M -print0 | tar czf "$out/device_check.tgz" --null -T -)
rm -rf "$work"
