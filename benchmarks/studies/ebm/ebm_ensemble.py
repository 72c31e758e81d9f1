"""Several EBMs sampling with one shared buffer vs each alone, at equal total Langevin steps (issue 17, goal 3;
Du & Mordatch 2019 report that an ensemble sharing a buffer samples better).

    python -m benchmarks.studies.ebm.ebm_ensemble    # trains seeds 0, 1, 2 with train.ebm's defaults, then samples

Trains --seeds models with train.ebm's defaults (runs/ebm_ensemble/s<seed>; finished runs are reused), then
for each model alone and for all of them together runs train.ebm_sample from noise (--start noise: an empty
shared buffer, no training buffer) for --rounds rounds of --num chains per round in all (alone: --num chains of
the one model; together: --num / M chains per model), --langevin-steps steps each: the same number of chains and
Langevin steps in every configuration. FID-FMNIST (the committed feature net, against the 10,000 test images) of
the last round's samples, and beside it KID, precision/recall (k = 3) and density/coverage (k = 5) from
the same features (metrics.scores_against), with the real-data floor: as many Fashion-MNIST *training* images
scored the same way. Writes benchmarks/results/ebm_ensemble.json and docs/ebm_ensemble.png (64 of the ensemble's
last-round samples, a third from each model).
"""

import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ArgumentParser, machine, table, write_results
from benchmarks.studies.common import train
from jaxtricks import metrics
from jaxtricks.data import load
from jaxtricks.images import save_grid

HEADER = ["sampler", "samples", "Langevin chain-steps in all", "FID-FMNIST", "KID", "precision", "recall",
          "density", "coverage", "seconds"]


def row(name: str, s: dict, chain_steps: int) -> list:
  """One line of the table from metrics.scores_against's values (and the sampling seconds, where timed)."""
  return [name, s["samples"], chain_steps, round(s["fid"], 1), f"{s['kid']:.2f} ± {s['kid_std']:.2f}",
          *(round(s[k], 3) for k in ("precision", "recall", "density", "coverage")),
          round(s["seconds"], 1) if "seconds" in s else ""]


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--steps", type=int, default=0, help="train.ebm --steps (0: its default)")
  p.add_argument("--num", type=int, default=5001, help="chains per round in all (a multiple of the models)")
  p.add_argument("--rounds", type=int, default=10)
  p.add_argument("--langevin-steps", type=int, default=20)
  p.add_argument("--train-flags", default="", help="extra train.ebm flags, e.g. '--channels 4 --batch-size 16'")
  p.add_argument("--data-dir", default="")
  p.add_argument("--root", default="runs/ebm_ensemble")
  p.add_argument("--out", default="benchmarks/results")
  p.add_argument("--png", default="docs")
  args = p.parse_args(argv)
  seeds = p.comma_list("--seeds", args.seeds)
  if args.num % len(seeds):
    p.error(f"--num {args.num} must divide by the {len(seeds)} models")
  root = Path(args.root)
  data = {"data_dir": args.data_dir} if args.data_dir else {}
  extra = dict(zip(*[iter(args.train_flags.split())] * 2))
  extra = {k.lstrip("-").replace("-", "_"): v for k, v in extra.items()}
  workdirs = []
  for seed in seeds:
    workdir = root / f"s{seed}"
    train("ebm", seed=seed, workdir=workdir, progress=False, tensorboard=False,
          **({"steps": args.steps} if args.steps else {}), **data, **extra)
    workdirs.append(workdir)
  score = metrics.scores_against(load("fashion_mnist", "test", data_dir=args.data_dir or None)[0])
  configs = [(f"model seed {s} alone", [w], args.num) for s, w in zip(seeds, workdirs)]
  configs.append((f"{len(seeds)} models sharing one buffer", workdirs, args.num // len(seeds)))
  rows, results = [], {}
  for name, dirs, num in configs:
    t0 = time.perf_counter()
    npy = root / f"{len(dirs)}-{dirs[0].name}.npy"
    png = root / f"{len(dirs)}-{dirs[0].name}.png"
    # on one device: the chains of --num 5,001 (a multiple of 3 models) do not split over train.ebm's one device
    # per core, which this process has by now; one device is also how the 2026-12-02 table sampled
    train("ebm_sample", workdirs=",".join(map(str, dirs)), num=num, rounds=args.rounds,
          langevin_steps=args.langevin_steps, start="noise", out=png, out_npy=npy, devices=1)
    x = np.load(npy)
    results[name] = {**score(x), "seconds": time.perf_counter() - t0}
    rows.append(row(name, results[name], args.rounds * args.num * args.langevin_steps))
    print(f"{name}: FID {results[name]['fid']:.1f}", flush=True)
  floor = load("fashion_mnist", "train", data_dir=args.data_dir or None)[0][:args.num]
  results["Fashion-MNIST train images (floor)"] = score(floor)
  rows.append(row("Fashion-MNIST train images (floor)", results["Fashion-MNIST train images (floor)"], 0))
  # 64 of the ensemble's last-round samples (a third from each model's chains)
  x = np.load(npy)
  per = len(x) // len(seeds)
  save_grid(np.concatenate([x[m * per:m * per + 22] for m in range(len(seeds))])[:64], Path(args.png) / "ebm_ensemble.png",
            ncol=8)
  write_results(Path(args.out) / "ebm_ensemble.json", "benchmarks.studies.ebm.ebm_ensemble", argv, HEADER, rows,
                runs=results)
  print(f"From noise, {args.rounds} rounds x {args.num} chains x {args.langevin_steps} steps — {machine()}")
  print(table(HEADER, rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())
