"""The loss comparison of issue 3 / docs/techniques.md#exact: Fashion-MNIST, one model, every loss, several seeds, one budget.

    python -m benchmarks.studies.exact.loss_comparison --model cnn --epochs 3 --seeds 0,1,2

Runs train.classify for each (loss, seed) in runs/loss_comparison/ (a finished run is reused: runs resume),
then prints a table of final test accuracy, mean ± std over seeds, and writes every per-epoch test accuracy to
benchmarks/results/loss_comparison_<model>.json.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ArgumentParser, machine, table
from benchmarks.studies.common import curve, train

LOSSES = ("ce", "margin", "soft_acc", "exact", "exact_log_mean", "exact_log")


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="cnn", choices=["cnn", "mobilenet"])
  p.add_argument("--epochs", type=float, default=3)
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--losses", default=",".join(LOSSES))
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--root", default="runs/loss_comparison")
  p.add_argument("--out", default="benchmarks/results")
  args = p.parse_args(argv)
  seeds = p.comma_list("--seeds", args.seeds)
  results, rows = {}, []
  for loss in p.comma_list("--losses", args.losses, of=str, choices=LOSSES):
    finals = []
    for seed in seeds:
      workdir = Path(args.root) / f"{args.model}-{loss}-e{args.epochs:g}-s{seed}"
      t0 = time.perf_counter()
      run_argv = train("classify", model=args.model, loss=loss, epochs=args.epochs, seed=seed, lr=args.lr,
                       workdir=workdir, progress=False)
      accuracy = curve(workdir, "test/accuracy")
      results[f"{loss}/{seed}"] = {"curve": accuracy, "seconds": time.perf_counter() - t0, "argv": run_argv}
      finals.append(accuracy[-1][1])
      print(f"{loss} seed {seed}: {100 * accuracy[-1][1]:.2f}%", flush=True)
    rows.append([loss, f"{100 * np.mean(finals):.2f} ± {100 * np.std(finals, ddof=1) if len(finals) > 1 else 0:.2f}",
                 " ".join(f"{100 * f:.2f}" for f in finals)])
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / f"loss_comparison_{args.model}.json").write_text(json.dumps(
      {"machine": machine(), "argv": sys.argv[1:] if argv is None else list(argv), "runs": results}, indent=1))
  print(f"Fashion-MNIST test accuracy after {args.epochs:g} epochs, {args.model}, Adam {args.lr}, batch 64, "
        f"seeds {args.seeds} — {machine()}")
  print(table(["loss", "test accuracy % (mean ± std)", "per seed"], rows))


if __name__ == "__main__":
  sys.exit(main())
