"""EXACT as its authors train it against cross-entropy and the hinge loss, several seeds, until the curves are flat
(issue 14; docs/techniques.md#exact).

    python -m benchmarks.exact_table --dataset mnist --epochs 20 --seeds 0,1,2          # the paper's MNIST row
    python -m benchmarks.exact_table --dataset fashion_mnist --epochs 15 --seeds 0,1,2  # every loss at convergence

Each recipe is a set of train.classify flags (RECIPES below; the paper's settings from the authors' configs:
SGD momentum 0.9, weight decay 1e-4, batch 256, learning rate decayed exponentially to 1e-4; CE lr 0.1 with
gradient clip 10; hinge lr 0.05 with margin 5; EXACT lr 0.5 with sigma 10 -> 1, margin 0.5, logit batch-norm and
the gradient normalizer). Runs live in runs/exact_table/ and resume, so an interrupted table continues. Writes
benchmarks/results/exact_table_<dataset>.json (per-epoch test accuracy of every run) and prints the table.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, table, train, write_results
from jaxtricks import loop

PAPER_SGD = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "schedule": "exponential", "lr_final": 1e-4,
             "batch_size": 256}
EXACT_PUBLISHED = {**PAPER_SGD, "lr": 0.5, "exact_sigma": "scheduled", "exact_sigma_init": 10.0,
                   "exact_sigma_final": 1.0, "exact_margin": 0.5, "logit_batchnorm": True, "grad_normalizer": True}
ADAM = {"optimizer": "adam", "lr": 1e-3, "batch_size": 64}
RECIPES = {
    # the paper's baselines and EXACT as published
    "ce (SGD, clip 10)": {"loss": "ce", **PAPER_SGD, "lr": 0.1, "grad_clip": 10.0},
    "hinge (SGD, margin 5)": {"loss": "hinge", **PAPER_SGD, "lr": 0.05, "hinge_margin": 5.0},
    "exact (published)": {"loss": "exact", **EXACT_PUBLISHED},
    # the per-example -log p_EXACT of the principle, in the published recipe
    "exact_log (published recipe)": {"loss": "exact_log", **EXACT_PUBLISHED},
    # the earlier table's forms (Adam 1e-3, batch 64): learned sigma head
    "ce (Adam)": {"loss": "ce", **ADAM},
    "margin (Adam)": {"loss": "margin", **ADAM},
    "soft_acc (Adam)": {"loss": "soft_acc", **ADAM},
    "exact, learned sigma (Adam)": {"loss": "exact", **ADAM},
    "exact_log_mean, learned sigma (Adam)": {"loss": "exact_log_mean", **ADAM},
    "exact_log, learned sigma (Adam)": {"loss": "exact_log", **ADAM},
}
DEFAULTS = {
    "mnist": ["ce (SGD, clip 10)", "hinge (SGD, margin 5)", "exact (published)", "exact_log (published recipe)"],
    "fashion_mnist": ["ce (Adam)", "margin (Adam)", "soft_acc (Adam)", "exact (published)",
                      "exact, learned sigma (Adam)", "exact_log_mean, learned sigma (Adam)",
                      "exact_log, learned sigma (Adam)"],
}


def slug(name: str) -> str:
  return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dataset", default="mnist", choices=list(DEFAULTS))
  p.add_argument("--recipes", default="", help="comma-separated names of RECIPES; default: the data set's")
  p.add_argument("--epochs", type=float, default=20)
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--model", default="cnn")
  p.add_argument("--data-dir", default="", help="raw data folder (else $JAXTRICKS_DATA)")
  p.add_argument("--root", default="runs/exact_table")
  p.add_argument("--out", default="benchmarks/results")
  args = p.parse_args(argv)
  names = [n.strip() for n in args.recipes.split(",") if n.strip()] or DEFAULTS[args.dataset]
  unknown = [n for n in names if n not in RECIPES]
  if unknown:
    p.error(f"--recipes: unknown {unknown}; known: {list(RECIPES)}")
  seeds = [int(s) for s in args.seeds.split(",")]
  runs, rows = {}, []
  for name in names:
    finals, last_epochs = [], []
    for seed in seeds:
      workdir = Path(args.root) / f"{args.dataset}-{args.model}-{slug(name)}-e{args.epochs:g}-s{seed}"
      t0 = time.perf_counter()
      data = {"data_dir": args.data_dir} if args.data_dir else {}
      run_argv = train("classify", dataset=args.dataset, model=args.model, epochs=args.epochs, seed=seed,
                       workdir=workdir, progress=False, tensorboard=False, **data, **RECIPES[name])
      curve = loop.metric(loop.read_metrics(workdir), "test/accuracy")
      runs[f"{name}/{seed}"] = {"curve": curve, "seconds": time.perf_counter() - t0, "argv": run_argv}
      finals.append(100 * curve[-1][1])
      last_epochs.append(np.ptp([100 * a for _, a in curve[-3:]]))
      print(f"{name} seed {seed}: {finals[-1]:.2f}%", flush=True)
    std = np.std(finals, ddof=1) if len(finals) > 1 else 0.0
    rows.append([name, f"{np.mean(finals):.2f} ± {std:.2f}", " ".join(f"{f:.2f}" for f in finals),
                 f"{np.mean(last_epochs):.2f}"])
  header = ["recipe", "test accuracy % (mean ± std)", "per seed", "range of the last 3 epochs (pts)"]
  write_results(Path(args.out) / f"exact_table_{args.dataset}.json", "benchmarks.exact_table", argv, header, rows,
                runs=runs, epochs=args.epochs)
  print(f"{args.dataset} test accuracy after {args.epochs:g} epochs, {args.model}, seeds {args.seeds} — {machine()}")
  print(table(header, rows))


if __name__ == "__main__":
  sys.exit(main())
