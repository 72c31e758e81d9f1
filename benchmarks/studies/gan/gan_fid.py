"""The quality side of issue 4 / docs/techniques.md#gan: FID-FMNIST after the same number of steps, one loss vs alternating.

    python -m benchmarks.studies.gan.gan_fid --steps 1500 --width 32 --seeds 0,1,2

Runs train.gan for each (mode, seed) in runs/gan_fid/ (a finished run is reused: runs resume), then prints
FID-FMNIST (2,000 samples vs the 10,000 test images, the committed feature net) and the classifier inception
score at the end, mean ± std over seeds, and the training loop's wall time per run (FID evaluations
included, read from metrics.jsonl); writes every run's FID curve to
benchmarks/results/gan_fid.json. Equal steps means: the single loss updates D and G once per step, alternating
updates D then G once per step (1:1), both with Adam(2e-4, beta1 0.5) per network and batch 64.
"""

import sys
import typing
from pathlib import Path

import numpy as np

from benchmarks.common import ArgumentParser, machine, table, write_results
from benchmarks.studies.common import loop_minutes, train
from jaxtricks import gan, loop


def fid_curve(workdir: Path) -> list[tuple[int, float, float]]:
  return [(l["step"], l["fid_fmnist"], l["inception_score"]) for l in loop.read_metrics(workdir) if "fid_fmnist" in l]


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--modes", default="single,alternating")
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--width", type=int, default=32)
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--fid-every", type=int, default=500)
  p.add_argument("--root", default="runs/gan_fid")
  p.add_argument("--out", default="benchmarks/results")
  args = p.parse_args(argv)
  seeds = p.comma_list("--seeds", args.seeds)
  modes = p.comma_list("--modes", args.modes, of=str, choices=typing.get_args(gan.Mode))
  results, rows = {}, []
  for mode in modes:
    fids, scores, minutes = [], [], []
    for seed in seeds:
      workdir = Path(args.root) / f"{mode}-w{args.width}-n{args.steps}-s{seed}"
      argv = train("gan", mode=mode, steps=args.steps, width=args.width, seed=seed, workdir=workdir,
                   fid_every=args.fid_every, sample_every=args.steps, checkpoint_every=args.steps, progress=False)
      curve = fid_curve(workdir)
      minutes.append(loop_minutes(workdir))
      results[f"{mode}/{seed}"] = {"curve": curve, "loop_minutes": minutes[-1], "argv": argv}
      fids.append(curve[-1][1])
      scores.append(curve[-1][2])
      print(f"{mode} seed {seed}: FID {fids[-1]:.2f}, IS {scores[-1]:.2f}, {minutes[-1]:.1f} min", flush=True)
    std = lambda v: np.std(v, ddof=1) if len(v) > 1 else 0.0
    rows.append([mode, f"{np.mean(fids):.2f} ± {std(fids):.2f}", " ".join(f"{f:.2f}" for f in fids),
                 f"{np.mean(scores):.2f} ± {std(scores):.2f}", f"{np.mean(minutes):.1f}"])
  header = ["mode", "FID-FMNIST (mean ± std)", "per seed", "inception score", "loop min per run"]
  write_results(Path(args.out) / "gan_fid.json", "benchmarks.studies.gan.gan_fid", argv, header, rows, runs=results)
  print(f"FID-FMNIST after {args.steps} steps, DCGAN width {args.width}, batch 64, seeds {args.seeds} — {machine()}")
  print(table(header, rows))


if __name__ == "__main__":
  sys.exit(main())
