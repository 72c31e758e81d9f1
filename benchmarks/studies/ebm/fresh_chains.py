"""Recipes of the EBM main job for sampling from noise, over seeds: FID of fresh chains by chain length.

Generation from noise (issue 34): recipes of the main job aimed at short-run sampling (RECIPES below: train.ebm
flags), over seeds, and for each trained model the FID / chain-length curve of fresh chains from uniform noise,
with each length's wall time.

    python -m benchmarks.studies.ebm.fresh_chains                     # the main job x seeds 0,1,2, 1000 steps
    python -m benchmarks.studies.ebm.fresh_chains --recipes main,shortrun --seeds 0 --lengths 60,500

Each run is `python -m train.ebm` (the main job: its defaults) with the recipe's flags on top, in
ROOT/RECIPE-sSEED (a run that exists resumes; a finished one is only re-scored). Scores: FID-FMNIST (with KID,
precision/recall, density/coverage, from one feature pass: metrics.scores_against) of --samples fresh chains from
uniform noise at each --lengths step count (the run's own sampler settings; jaxtricks.ebm.fresh_samples), and of
the newest --samples images of the replay buffer. Results go into --json, keyed "recipe/seed" with the argv that
made the run; rerunning skips what is recorded with the same argv (the study resumes).
"""

import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import ArgumentParser, machine
from benchmarks.studies import common
from jaxtricks import ebm, metrics, replay
from jaxtricks.data import IMAGE_SHAPES, DataError, load

F32 = dict(compute_dtype="float32", conv="xla")   # train.ebm's float32 path, whatever its default on this CPU

UVA = dict(chain_augment=0)   # the main job until 2026-12-05 (the UvA tutorial's recipe), under which these were measured

# The recipes: train.ebm flags over its defaults. The anchors' levers for short-run sampling that our flags reach.
RECIPES = {
    # the main job as it is (train.ebm's defaults since 2026-12-05: the augmented chain starts, spelled out so that a
    # record stays this recipe if a default changes; bf16 taps on a CPU with bf16 units, float32 elsewhere)
    "main": dict(chain_augment=2),
    "bf16": dict(chain_augment=2, compute_dtype="bfloat16", conv="taps"),   # ... in bf16 taps wherever it runs
    "uva": dict(**UVA, **F32),                     # the main job until 2026-12-05: no augmented starts, float32
    "shortrun": dict(reinit_prob=1.0, **UVA, **F32),  # Nijkamp et al. 2019: non-persistent chains, all from noise
    "reinit25": dict(reinit_prob=0.25, **UVA, **F32),     # a buffer, but a quarter of the chains restart from noise
    "noise2x": dict(noise_scale=0.01, **UVA, **F32),      # twice the Langevin noise (larger noise, Du & Mordatch's advice)
    "reg1": dict(reg=1.0, **UVA, **F32),                  # Du & Mordatch's energy-magnitude penalty weight (ours: 0.1)
    # Improved CD (Du et al. 2021): its KL term (weight 1 as theirs), its data-augmentation transitions (here a flip
    # and a 2-pixel shift; the main job's default since they won here), both together as it trains; in float32
    "kl1": dict(kl=1.0, **UVA, **F32),
    "aug": dict(chain_augment=2, **F32),           # (= the main job in float32 since 2026-12-05)
    "kl1aug": dict(kl=1.0, chain_augment=2, **F32),
    # issue 35: the old main job in bf16 compute with the convolutions as matrix products (its fastest CPU form);
    # its FIDs against uva's say whether bf16 changes results beyond the seeds' spread
    "uvabf16": dict(compute_dtype="bfloat16", conv="taps", **UVA),
}


def model_of(recipe: dict, run):
  """common.load_ebm_run's (config, model, state) with the model in the compute dtype and convolution form the
  recipe names (config.json records only the fingerprint), so that its fresh chains run as its training chains
  did; a recipe that names none (`main`: train.ebm's auto) is scored in float32, as train.ebm --eval-only scores."""
  config, model, state = run
  if "compute_dtype" in recipe or "conv" in recipe:
    model = ebm.energy_net(config["channels"], config.get("net", "resnet"),
                           dtype=recipe.get("compute_dtype"), conv=recipe.get("conv", "xla"))
  return config, model, state


def sampler_of(recipe: dict, train_flags: list[str] = ()) -> ebm.SamplerConfig:
  """The chains' settings of a recipe's runs: train.ebm's default sampler (common.EBM_SAMPLER; config.json holds only
  the fingerprint) with the recipe's sampler flags, then those of --train-flags (as train.ebm reads them, the last
  wins). Fresh chains restart nothing, so reinit_prob does not matter."""
  names = {"langevin_steps": "num_steps", "step_size": "step_size", "noise_scale": "noise_scale",
           "grad_clip": "grad_clip"}
  values = {names[k]: v for k, v in recipe.items() if k in names}
  for i, word in enumerate(train_flags[:-1]):
    name = word.removeprefix("--").replace("-", "_")
    if word.startswith("--") and name in names:
      value = train_flags[i + 1]
      values[names[name]] = int(value) if name == "langevin_steps" else (
          None if value == "sqrt_step_size" else float(value))
  if values.get("grad_clip") == 0:
    values["grad_clip"] = None   # train.ebm: --grad-clip 0 is no clip
  return dataclasses.replace(common.EBM_SAMPLER, **values)


def score_run(run, chains: ebm.SamplerConfig, lengths: list[int], samples: int, score, key) -> dict:
  """{"fresh": {length: scores + seconds}, "buffer": scores, "step": n} of one trained run (common.load_ebm_run's
  settings, energy net and state)."""
  config, model, state = run
  out = {"step": int(state["step"]), "fresh": {}}
  shape = IMAGE_SHAPES[config["dataset"]]
  t0 = time.perf_counter()    # the chain's compile, once: every length calls the same compiled chunk
  ebm.fresh_samples(model, state["params"], state["stats"], key, shape, samples, 1, chains)
  out["compile_and_one_round_s"] = time.perf_counter() - t0
  for length in lengths:
    t0 = time.perf_counter()
    x = ebm.fresh_samples(model, state["params"], state["stats"], key, shape, samples, length, chains)
    seconds = time.perf_counter() - t0                            # the chains alone, not their scoring
    steps = -(-length // chains.num_steps) * chains.num_steps   # fresh_samples rounds up to whole chains
    out["fresh"][str(length)] = {**score(x), "seconds": seconds, "langevin_steps": steps}
  buffer = ebm.buffer_from_checkpoint(state)
  out["buffer"] = score(np.asarray(replay.latest(buffer, min(samples, int(buffer.count)))))
  return out


def main(argv=None) -> int:
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--recipes", default="main", help="comma-separated, of: " + "; ".join(
      f"{name} ({' '.join(common.flag_argv(flags)) or 'the defaults'})" for name, flags in RECIPES.items()))
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--steps", type=int, default=1000, help="train steps of each run")
  p.add_argument("--lengths", default="60,120,256,500", help="fresh-chain step counts to score")
  p.add_argument("--samples", type=int, default=500, help="images per FID (the main job's --fid-samples)")
  p.add_argument("--root", default="runs/fresh_chains", help="folder of the runs' workdirs")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--json", default="benchmarks/results/ebm_fresh_chains_recipes.json")
  p.add_argument("--train-flags", default="", help="extra train.ebm flags for every run, e.g. '--channels 4'")
  args = p.parse_args(argv)
  names = p.comma_list("--recipes", args.recipes, of=str, choices=list(RECIPES))
  seeds = p.comma_list("--seeds", args.seeds)
  lengths = p.comma_list("--lengths", args.lengths, example="60,500")
  if min(lengths) < 1 or args.steps < 1 or args.samples < 2:
    p.error("--lengths and --steps must be positive and --samples at least 2")
  out = Path(args.json)
  results = json.loads(out.read_text()) if out.exists() else {"runs": {}}
  extra = args.train_flags.split()

  def train_argv(name, seed):
    flags = dict(workdir=str(Path(args.root) / f"{name}-s{seed}"), seed=seed, steps=args.steps,
                 fid_every=args.steps, progress=False, tensorboard=False, **RECIPES[name])
    return [*common.flag_argv(flags), *extra]

  def argv_of(name, seed):   # what a recorded result was made with: the run's flags and the scoring's
    return [*train_argv(name, seed), "--lengths", args.lengths, "--samples", str(args.samples)]

  todo = common.pending_runs(names, seeds, results["runs"], argv_of)
  if todo:
    try:
      test_images, _ = load("fashion_mnist", "test", data_dir=args.data_dir)
    except DataError as e:
      print(f"{p.prog}: error: {e}", file=sys.stderr)
      return 2
    score = metrics.scores_against(test_images, net=metrics.load_feature_net())
  for name, seed in todo:
    run_argv = argv_of(name, seed)
    t0 = time.perf_counter()
    try:
      common.run_program("ebm", train_argv(name, seed) + (["--data-dir", args.data_dir] if args.data_dir else []))
    except common.ProgramFailed as e:   # train.ebm said why, in one line; its exit status ends the study's
      return e.returncode
    workdir = Path(args.root) / f"{name}-s{seed}"
    run = model_of(RECIPES[name], common.load_ebm_run(workdir))
    if int(run[2]["step"]) != args.steps:
      print(f"{p.prog}: error: {workdir} holds a run of {int(run[2]['step'])} steps, not --steps {args.steps}; use "
            f"another --root or the same --steps", file=sys.stderr)
      return 2
    scored = score_run(run, sampler_of(RECIPES[name], extra), lengths, args.samples, score, jax.random.PRNGKey(1000 + seed))
    results["runs"][f"{name}/{seed}"] = {"argv": run_argv, "machine": machine(), "jax": jax.__version__,
                                         "date": time.strftime("%Y-%m-%d"), "seconds": time.perf_counter() - t0,
                                         "train_minutes": common.train_minutes(workdir), **scored}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"{name}/{seed}: " + ", ".join(f"fresh {n} steps FID {v['fid']:.1f} ({v['seconds']:.0f} s)"
                                         for n, v in scored["fresh"].items())
          + f"; buffer FID {scored['buffer']['fid']:.1f}", flush=True)
  print(common.fresh_chain_table(results["runs"], names, lengths))
  return 0


if __name__ == "__main__":
  sys.exit(main())
