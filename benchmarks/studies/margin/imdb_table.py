"""The seed's IMDB table re-measured (issue 6 / docs/techniques.md#margin): LSTM and CNN x BCE and margin loss, several seeds.

    python -m benchmarks.studies.margin.imdb_table --seeds 0,1,2,3,4                 # both models, both losses
    python -m benchmarks.studies.margin.imdb_table --models cnn --dataset sst2       # SST-2 dev with the CNN

Runs train.sentiment for each (model, loss, seed) in runs/imdb_table/ (finished runs are reused: runs resume)
with the seed's settings, then prints the test accuracy after the last epoch (mean ± std over seeds) and, the
seed's steadiness claim, the standard deviation of test accuracy from epoch to epoch over the second half of
training (mean over seeds); writes every per-epoch accuracy to benchmarks/results/imdb_table_<dataset>.json. "loop min per run" is the
training loop's wall time (evaluations included, start-up and compilation not) read from metrics.jsonl.
"""

import sys
from pathlib import Path

import numpy as np

from benchmarks.common import ArgumentParser, machine, table, write_results
from benchmarks.studies.common import curve, loop_minutes, train

EVAL_SPLIT = {"imdb": "test", "sst2": "validation"}   # what train.sentiment evaluates on


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="lstm,cnn")
  p.add_argument("--losses", default="bce,margin")
  p.add_argument("--seeds", default="0,1,2,3,4")
  p.add_argument("--dataset", default="imdb", choices=["imdb", "sst2"])
  p.add_argument("--root", default="runs/imdb_table")
  p.add_argument("--out", default="benchmarks/results")
  args = p.parse_args(argv)
  split = EVAL_SPLIT[args.dataset]
  seeds = p.comma_list("--seeds", args.seeds)
  results, rows = {}, []
  models = p.comma_list("--models", args.models, of=str, choices=("lstm", "cnn"))   # train.sentiment's
  losses = p.comma_list("--losses", args.losses, of=str, choices=("bce", "margin"))
  for model in models:
    for loss in losses:
      finals, wobble, minutes = [], [], []
      for seed in seeds:
        workdir = Path(args.root) / f"{args.dataset}-{model}-{loss}-s{seed}"
        argv = train("sentiment", model=model, loss=loss, dataset=args.dataset, seed=seed, workdir=workdir,
                     progress=False)
        minutes.append(loop_minutes(workdir))
        accuracy = curve(workdir, f"{split}/accuracy")
        accs = [a for _, a in accuracy]
        finals.append(accs[-1])
        wobble.append(float(np.std(accs[len(accs) // 2:], ddof=1)) if len(accs) > 2 else float("nan"))
        results[f"{model}/{loss}/{seed}"] = {"curve": accuracy, "loop_minutes": minutes[-1],
                                             "argv": argv}
        print(f"{model} {loss} seed {seed}: {100 * accs[-1]:.2f}%", flush=True)
      std = np.std(finals, ddof=1) if len(finals) > 1 else 0.0
      rows.append([model, loss, f"{100 * np.mean(finals):.2f} ± {100 * std:.2f}",
                   " ".join(f"{100 * f:.2f}" for f in finals), f"{100 * np.mean(wobble):.2f}",
                   f"{np.mean(minutes):.1f}"])
  header = ["model", "loss", "accuracy % (mean ± std)", "per seed", "epoch-to-epoch std, 2nd half (pts)",
            "loop min per run"]
  write_results(Path(args.out) / f"imdb_table_{args.dataset}.json", "benchmarks.studies.margin.imdb_table", argv,
                header, rows,
                split=split, runs=results)
  print(f"{args.dataset} {split} accuracy after the last epoch, seeds {args.seeds} — {machine()}")
  print(table(header, rows))


if __name__ == "__main__":
  sys.exit(main())
