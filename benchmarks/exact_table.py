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
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import flag_argv, machine, pending_runs, table, train, update_results_md, write_results
from jaxtricks import checkpoints, loop

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
    # the authors' own best MNIST configs (github ivan-chai/exact, mdn-metric/configs/exact/best/xent-sgd-mnist.yaml,
    # hinge-sgd-mnist.yaml): CE at lr 0.5 (not SPEC's 0.1), hinge with a gradient clip of 1
    "ce (SGD lr 0.5, clip 10)": {"loss": "ce", **PAPER_SGD, "lr": 0.5, "grad_clip": 10.0},
    "hinge (SGD, margin 5, clip 1)": {"loss": "hinge", **PAPER_SGD, "lr": 0.05, "hinge_margin": 5.0,
                                      "grad_clip": 1.0},
    # ... and their MNIST augmentation (template-patch-2-datasets.yaml: rotations <= 20 degrees, shifts <= 20%), for
    # CE at SPEC's lr 0.1 (at lr 0.5 our batch-norm-free CNN died in 2 of 3 seeds: RESULTS.md) and EXACT
    "ce (SGD, clip 10) + rotate/shift": {"loss": "ce", **PAPER_SGD, "lr": 0.1, "grad_clip": 10.0,
                                         "augment": "rotate_shift"},
    "exact (published) + rotate/shift": {"loss": "exact", **EXACT_PUBLISHED, "augment": "rotate_shift"},
    # the per-example -log p_EXACT of the principle, in the published recipe
    "exact_log (published recipe)": {"loss": "exact_log", **EXACT_PUBLISHED},
    # the paper's -log E[p] variant (log of the batch mean) in the same recipe: -E[p] against it, neither collapsed
    "exact_log_mean (published recipe)": {"loss": "exact_log_mean", **EXACT_PUBLISHED},
    # the earlier table's forms (Adam 1e-3, batch 64): learned sigma head
    "ce (Adam)": {"loss": "ce", **ADAM},
    "margin (Adam)": {"loss": "margin", **ADAM},
    "soft_acc (Adam)": {"loss": "soft_acc", **ADAM},
    "exact, learned sigma (Adam)": {"loss": "exact", **ADAM},
    "exact_log_mean, learned sigma (Adam)": {"loss": "exact_log_mean", **ADAM},
    "exact_log, learned sigma (Adam)": {"loss": "exact_log", **ADAM},
}
DEFAULTS = {
    "mnist": ["ce (SGD, clip 10)", "hinge (SGD, margin 5)", "exact (published)", "exact_log (published recipe)",
              "ce (SGD lr 0.5, clip 10)", "hinge (SGD, margin 5, clip 1)", "ce (SGD, clip 10) + rotate/shift",
              "exact (published) + rotate/shift"],
    "fashion_mnist": ["ce (Adam)", "margin (Adam)", "soft_acc (Adam)", "exact (published)",
                      "exact_log_mean (published recipe)", "exact, learned sigma (Adam)",
                      "exact_log_mean, learned sigma (Adam)", "exact_log, learned sigma (Adam)",
                      # CE in EXACT's SGD schedule: the fair baseline for EXACT as published
                      "ce (SGD, clip 10)"],
}


def slug(name: str) -> str:
  return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


def train_minutes(workdir: Path) -> float:
  """Minutes of a run's train steps: its median step time (metrics.jsonl's steps/s) x its steps. The median keeps
  out what is not training: evaluations, checkpoints, and any time the machine paused the process."""
  rates = [v for _, v in loop.metric(loop.read_metrics(workdir), "steps_per_sec")]
  return float(np.median([1.0 / v for v in rates]) * len(rates) / 60) if rates else float("nan")


def minutes(run: dict) -> float:
  """The run's train-step minutes (`train_minutes`); wall time for runs recorded before that was kept."""
  return run.get("train_minutes") or run["seconds"] / 60


def fill_train_minutes(runs: dict) -> bool:
  """Sets train_minutes of recorded runs whose run folder is still here; True if any changed."""
  changed = False
  for run in runs.values():
    workdir = Path(run["argv"][run["argv"].index("--workdir") + 1])
    if (workdir / "metrics.jsonl").exists():
      value = train_minutes(workdir)
      changed |= run.get("train_minutes") != value
      run["train_minutes"] = value
    run.pop("loop_minutes", None)
  return changed


def recipe_names(text: str) -> list[str]:
  """Names of RECIPES in a comma-separated list; a comma inside a recipe's own name ("ce (SGD, clip 10)") is
  kept: pieces are joined until they form a known name."""
  names, piece = [], ""
  for part in text.split(","):
    piece = f"{piece},{part}" if piece else part.strip()
    if piece.strip() in RECIPES:
      names.append(piece.strip())
      piece = ""
  if piece.strip():
    raise ValueError(f"unknown recipe {piece.strip()!r}")
  return names


def per_class_accuracy(workdir: Path, dataset: str, data_dir: str = "") -> tuple[list[float], list[float]]:
  """(test accuracy of each class, fraction of dead units of each hidden layer) of a finished run of the small CNN
  (its final checkpoint; logits are the first 10 outputs, EXACT's learned-sigma head has an 11th): where a table
  row's seeds disagree, this shows whether whole classes are missed, and whether the net died (a unit is dead when
  its pre-activation is <= 0 at every position of every test image: its ReLU passes no value and no gradient)."""
  import jax.numpy as jnp

  from jaxtricks.data import load
  from jaxtricks.models.cnn import CNN
  state, _, _ = checkpoints.restore(workdir)
  params = state["params"]
  images, labels = load(dataset, "test", data_dir=data_dir or None)
  model = CNN(num_classes=params["Dense_1"]["kernel"].shape[-1])
  outputs, inter = model.apply({"params": params}, jnp.asarray(images, jnp.float32) / 255.0,
                               capture_intermediates=True, mutable=["intermediates"])
  predicted = np.asarray(outputs[:, :10].argmax(-1))
  hidden = [inter["intermediates"][name]["__call__"][0] for name in ("Conv_0", "Conv_1", "Dense_0")]
  dead = [float(np.mean(np.asarray(h).reshape(-1, h.shape[-1]).max(0) <= 0)) for h in hidden]
  return [float((predicted[labels == k] == k).mean()) for k in range(10)], dead


def summarize(names: list[str], seeds: list[int], runs: dict) -> tuple[list[str], list[list]]:
  """The table: one row per recipe whose seeds have all finished (final test accuracy mean ± std over seeds,
  the per-seed values, and the range of the last 3 evaluations as the flatness check)."""
  header = ["recipe", "test accuracy % (mean ± std)", "per seed", "range of the last 3 epochs (pts)",
            "train-step min/run"]
  rows = []
  for name in names:
    done = [runs[f"{name}/{seed}"] for seed in seeds if f"{name}/{seed}" in runs]
    if len(done) < len(seeds):
      rows.append([name, f"{len(done)} of {len(seeds)} seeds done",
                   " ".join(f"{100 * r['curve'][-1][1]:.2f}" for r in done), "", ""])
      continue
    finals = [100 * r["curve"][-1][1] for r in done]
    flat = [np.ptp([100 * a for _, a in r["curve"][-3:]]) for r in done]
    std = np.std(finals, ddof=1) if len(finals) > 1 else 0.0
    rows.append([name, f"{np.mean(finals):.2f} ± {std:.2f}", " ".join(f"{f:.2f}" for f in finals),
                 f"{np.mean(flat):.2f}", f"{np.mean([minutes(r) for r in done]):.1f}"])
  return header, rows


def plot(path: Path, title: str, names: list[str], seeds: list[int], runs: dict) -> None:
  """Per-epoch test accuracy of every recipe: mean over seeds as a line, min..max over seeds as a band. A run is
  evaluated after each epoch, so its first evaluation's step is its epoch length (recipes differ in batch size)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
  for i, name in enumerate(names):
    curves = [runs[f"{name}/{s}"]["curve"] for s in seeds if f"{name}/{s}" in runs]
    if not curves:
      continue
    n = min(len(c) for c in curves)
    epochs = np.array([step for step, _ in curves[0][:n]]) / curves[0][0][0]
    acc = 100 * np.array([[a for _, a in c[:n]] for c in curves])
    for a in (ax, zoom):
      a.plot(epochs, acc.mean(0), color=f"C{i}", label=f"{name} ({len(curves)} seeds)")
      a.fill_between(epochs, acc.min(0), acc.max(0), color=f"C{i}", alpha=0.2)
  best = max((100 * runs[k]["curve"][-1][1] for k in runs if k.split("/")[0] in names), default=100)
  zoom.set_ylim(best - 3, best + 0.5)
  zoom.set_title("zoom: the top 3 points", fontsize=9)
  ax.set_title(title, fontsize=9)
  for a in (ax, zoom):
    a.set_xlabel("epoch")
    a.set_ylabel("test accuracy %")
    a.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path)
  plt.close(fig)


def plot_runs(args, names, seeds, runs, epochs: float) -> None:
  """The picture of this table's results file."""
  plot(Path(args.png) / f"exact_table_{args.dataset}.png",
       f"{args.dataset}, {args.model}, {epochs:g} epochs, seeds {args.seeds}: test accuracy per epoch",
       names, seeds, runs)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dataset", default="mnist", choices=list(DEFAULTS))
  p.add_argument("--recipes", default="", help="comma-separated names of RECIPES (as printed, commas in a name "
                                                  "included); default: the data set's")
  p.add_argument("--epochs", type=float, default=20)
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--model", default="cnn")
  p.add_argument("--data-dir", default="", help="raw data folder (else $JAXTRICKS_DATA)")
  p.add_argument("--root", default="runs/exact_table")
  p.add_argument("--out", default="benchmarks/results")
  p.add_argument("--png", default="docs", help="folder of the per-epoch curve picture")
  p.add_argument("--results-md", action="store_true",
                 help="only rewrite this data set's table in benchmarks/RESULTS.md and its curve picture from the "
                      "results file (no training)")
  p.add_argument("--per-class", action="store_true",
                 help="only measure the per-class test accuracy (and dead units) of the listed recipes' runs whose "
                      "run folders are here, into exact_table_<dataset>_per_class.json (--results-md then puts it in "
                      "RESULTS.md)")
  p.add_argument("--order", choices=["seed", "recipe"], default="seed",
                 help="seed: every recipe's seed 0 before any seed 1 (default); recipe: all seeds of the first recipe "
                      "still missing runs, then the next")
  p.add_argument("--max-runs", type=int, default=0,
                 help="stop after training this many runs (0: all); the results file keeps what finished")
  args = p.parse_args(argv)
  try:
    names = recipe_names(args.recipes) or DEFAULTS[args.dataset]
  except ValueError as e:
    p.error(f"--recipes: {e}; known: {list(RECIPES)}")
  seeds = [int(s) for s in args.seeds.split(",")]
  out = Path(args.out) / f"exact_table_{args.dataset}.json"
  if args.results_md:
    if not out.exists():
      print(f"{out}: no results yet; run python -m benchmarks.exact_table --dataset {args.dataset} first",
            file=sys.stderr)
      return 2
    data = json.loads(out.read_text())
    runs = data["runs"]
    fill_train_minutes(runs)
    header, rows = summarize(names, seeds, runs)   # the table from the recorded runs, as training writes it
    write_results(out, "benchmarks.exact_table", data["argv"], header, rows, runs=runs, epochs=data["epochs"],
                  model=data["model"], steps_per_epoch=data["steps_per_epoch"])
    plot_runs(args, names, seeds, runs, data["epochs"])
    per_class = Path(args.out) / f"exact_table_{args.dataset}_per_class.json"   # --per-class's table, if made
    return update_results_md(out, f"exact_table_{args.dataset}") or (
        update_results_md(per_class, f"exact_table_{args.dataset}_per_class") if per_class.exists() else 0)
  if args.per_class:   # a table of its own (the training process may be rewriting the results file meanwhile)
    if not out.exists():
      print(f"{out}: no results yet", file=sys.stderr)
      return 2
    from jaxtricks.data import FASHION_MNIST_CLASSES
    classes = FASHION_MNIST_CLASSES if args.dataset == "fashion_mnist" else [str(k) for k in range(10)]
    rows = []
    for key, run in json.loads(out.read_text())["runs"].items():
      workdir = Path(run["argv"][run["argv"].index("--workdir") + 1])
      if key.rsplit("/", 1)[0] in names and (workdir / "checkpoints").exists():
        acc, dead = per_class_accuracy(workdir, args.dataset, args.data_dir)
        rows.append([key, f"{100 * run['curve'][-1][1]:.2f}", *(f"{100 * a:.1f}" for a in acc),
                     " / ".join(f"{100 * d:.0f}" for d in dead)])
    header = ["run (recipe/seed)", "test accuracy %", *classes, "dead units % (conv 1 / conv 2 / dense)"]
    write_results(Path(args.out) / f"exact_table_{args.dataset}_per_class.json", "benchmarks.exact_table", argv,
                  header, rows)
    print(table(header, rows))
    return 0
  # Finished runs are kept in the committed results file, so a table started in one session continues in the
  # next even where the run folders are gone; a run is redone only when its flags changed.
  previous = json.loads(out.read_text()) if out.exists() else {}
  runs = dict(previous.get("runs", {})) if previous.get("model") == args.model else {}
  header, rows = summarize(names, seeds, runs)
  data = {"data_dir": args.data_dir} if args.data_dir else {}

  def flags_of(name, seed):
    workdir = Path(args.root) / f"{args.dataset}-{args.model}-{slug(name)}-e{args.epochs:g}-s{seed}"
    return dict(dataset=args.dataset, model=args.model, epochs=args.epochs, seed=seed, workdir=workdir,
                progress=False, tensorboard=False, **data, **RECIPES[name])

  for name, seed in pending_runs(names, seeds, runs, lambda n, s: flag_argv(flags_of(n, s)), args.max_runs,
                                seed_major=args.order == "seed"):
    flags = flags_of(name, seed)
    t0 = time.perf_counter()
    run_argv = train("classify", **flags)
    curve = loop.metric(loop.read_metrics(flags["workdir"]), "test/accuracy")
    key = f"{name}/{seed}"
    runs[key] = {"curve": curve, "seconds": time.perf_counter() - t0, "argv": run_argv,
                 "train_minutes": train_minutes(flags["workdir"]),
                 "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine()}
    print(f"{name} seed {seed}: {100 * curve[-1][1]:.2f}% ({runs[key]['seconds'] / 60:.1f} min)", flush=True)
    header, rows = summarize(names, seeds, runs)
    write_results(out, "benchmarks.exact_table", argv, header, rows, runs=runs, epochs=args.epochs,
                  model=args.model, steps_per_epoch=curve[0][0])
  if runs:
    plot_runs(args, names, seeds, runs, args.epochs)
  print(f"{args.dataset} test accuracy after {args.epochs:g} epochs, {args.model}, seeds {args.seeds} — {machine()}")
  print(table(header, rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())
