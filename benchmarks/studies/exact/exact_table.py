"""EXACT as its authors train it against cross-entropy and the hinge loss, several seeds, until the curves are flat
(issue 14; docs/techniques.md#exact).

    python -m benchmarks.studies.exact.exact_table --dataset mnist --epochs 20 --seeds 0,1,2    # the MNIST row
    python -m benchmarks.studies.exact.exact_table --dataset fashion_mnist --epochs 15 --seeds 0,1,2   # all losses
    python -m benchmarks.studies.exact.exact_table --recipes ce_sgd,exact_published --seeds 0    # some recipes

Each recipe is an id with a display label and a set of train.classify flags (RECIPES below; the paper's settings
from the authors' configs: SGD momentum 0.9, weight decay 1e-4, batch 256, learning rate decayed exponentially to
1e-4; CE lr 0.1 with gradient clip 10; hinge lr 0.05 with margin 5; EXACT lr 0.5 with sigma 10 -> 1, margin 0.5,
logit batch-norm and the gradient normalizer). Runs live in runs/exact_table/ and resume, so an interrupted table continues. Writes
benchmarks/results/exact_table_<dataset>.json (per-epoch test accuracy of every run) and prints the table.
"""

import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ArgumentParser, machine, table, write_results
from benchmarks.studies.common import (
  curve,
  fill_train_minutes,
  flag_argv,
  pending_runs,
  plot,
  slug,
  summarize,
  train,
  train_minutes,
  update_results_md,
)
from jaxtricks import checkpoints

MODULE = "benchmarks.studies.exact.exact_table"
README = Path(__file__).parent / "README.md"   # the study's text; --results-md rewrites its tables
PAPER_SGD = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "schedule": "exponential", "lr_final": 1e-4,
             "batch_size": 256}
EXACT_PUBLISHED = {**PAPER_SGD, "lr": 0.5, "exact_sigma": "scheduled", "exact_sigma_init": 10.0,
                   "exact_sigma_final": 1.0, "exact_margin": 0.5, "logit_batchnorm": True, "grad_normalizer": True}
ADAM = {"optimizer": "adam", "lr": 1e-3, "batch_size": 64}
# recipe id (what --recipes takes) -> (display label, train.classify flags). The label names the recipe in the
# tables, in the results files' run keys ("label/seed") and in its run folders (common.slug).
RECIPES = {
    # the paper's baselines and EXACT as published
    "ce_sgd": ("ce (SGD, clip 10)", {"loss": "ce", **PAPER_SGD, "lr": 0.1, "grad_clip": 10.0}),
    "hinge_sgd": ("hinge (SGD, margin 5)", {"loss": "hinge", **PAPER_SGD, "lr": 0.05, "hinge_margin": 5.0}),
    "exact_published": ("exact (published)", {"loss": "exact", **EXACT_PUBLISHED}),
    # the authors' own best MNIST configs (github ivan-chai/exact, mdn-metric/configs/exact/best/xent-sgd-mnist.yaml,
    # hinge-sgd-mnist.yaml): CE at lr 0.5 (not SPEC's 0.1), hinge with a gradient clip of 1
    "ce_sgd_lr05": ("ce (SGD lr 0.5, clip 10)", {"loss": "ce", **PAPER_SGD, "lr": 0.5, "grad_clip": 10.0}),
    "hinge_sgd_clip1": ("hinge (SGD, margin 5, clip 1)", {"loss": "hinge", **PAPER_SGD, "lr": 0.05,
                                                          "hinge_margin": 5.0, "grad_clip": 1.0}),
    # ... and their MNIST augmentation (template-patch-2-datasets.yaml: rotations <= 20 degrees, shifts <= 20%), for
    # CE at SPEC's lr 0.1 (at lr 0.5 our batch-norm-free CNN died in 2 of 3 seeds: README.md) and EXACT
    "ce_sgd_rotate_shift": ("ce (SGD, clip 10) + rotate/shift", {"loss": "ce", **PAPER_SGD, "lr": 0.1,
                                                                 "grad_clip": 10.0, "augment": "rotate_shift"}),
    "exact_published_rotate_shift": ("exact (published) + rotate/shift", {"loss": "exact", **EXACT_PUBLISHED,
                                                                          "augment": "rotate_shift"}),
    # the per-example -log p_EXACT of the principle, in the published recipe
    "exact_log_published": ("exact_log (published recipe)", {"loss": "exact_log", **EXACT_PUBLISHED}),
    # the paper's -log E[p] variant (log of the batch mean) in the same recipe: -E[p] against it, neither collapsed
    "exact_log_mean_published": ("exact_log_mean (published recipe)", {"loss": "exact_log_mean", **EXACT_PUBLISHED}),
    # the earlier table's forms (Adam 1e-3, batch 64): learned sigma head
    "ce_adam": ("ce (Adam)", {"loss": "ce", **ADAM}),
    "margin_adam": ("margin (Adam)", {"loss": "margin", **ADAM}),
    "soft_acc_adam": ("soft_acc (Adam)", {"loss": "soft_acc", **ADAM}),
    "exact_learned_sigma_adam": ("exact, learned sigma (Adam)", {"loss": "exact", **ADAM}),
    "exact_log_mean_learned_sigma_adam": ("exact_log_mean, learned sigma (Adam)", {"loss": "exact_log_mean", **ADAM}),
    "exact_log_learned_sigma_adam": ("exact_log, learned sigma (Adam)", {"loss": "exact_log", **ADAM}),
}
LABELS = {recipe: label for recipe, (label, _) in RECIPES.items()}
FLAGS = {label: flags for label, flags in RECIPES.values()}   # by label: the tables and run keys speak labels
DEFAULTS = {
    "mnist": ["ce_sgd", "hinge_sgd", "exact_published", "exact_log_published", "ce_sgd_lr05", "hinge_sgd_clip1",
              "ce_sgd_rotate_shift", "exact_published_rotate_shift"],
    "fashion_mnist": ["ce_adam", "margin_adam", "soft_acc_adam", "exact_published", "exact_log_mean_published",
                      "exact_learned_sigma_adam", "exact_log_mean_learned_sigma_adam", "exact_log_learned_sigma_adam",
                      # CE in EXACT's SGD schedule: the fair baseline for EXACT as published
                      "ce_sgd"],
}


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


def plot_runs(args, names, seeds, runs, epochs: float) -> None:
  """The picture of this table's results file."""
  plot(Path(args.png) / f"exact_table_{args.dataset}.png",
       f"{args.dataset}, {args.model}, {epochs:g} epochs, seeds {args.seeds}: test accuracy per epoch",
       names, seeds, runs)


def results_md(args, names: list[str], seeds: list[int], out: Path) -> int:
  """--results-md: the table and picture from the recorded runs, as training writes them, and their copy in the
  study's README (with --per-class's table, if made)."""
  if not out.exists():
    make = shlex.join(["python", "-m", MODULE, "--dataset", args.dataset])
    print(f"{out}: no results yet; run {make} first", file=sys.stderr)
    return 2
  data = json.loads(out.read_text())
  runs = data["runs"]
  fill_train_minutes(runs)
  header, rows = summarize(names, seeds, runs)
  write_results(out, MODULE, data["argv"], header, rows, runs=runs, epochs=data["epochs"], model=data["model"],
                steps_per_epoch=data["steps_per_epoch"])
  plot_runs(args, names, seeds, runs, data["epochs"])
  per_class = Path(args.out) / f"exact_table_{args.dataset}_per_class.json"
  return update_results_md(out, f"exact_table_{args.dataset}", README) or (
      update_results_md(per_class, f"exact_table_{args.dataset}_per_class", README) if per_class.exists() else 0)


def per_class_table(args, names: list[str], out: Path, argv) -> int:
  """--per-class: each class's test accuracy and the dead units of the listed recipes' runs whose run folders are
  here, a table of its own (the training process may be rewriting the results file meanwhile)."""
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
  write_results(Path(args.out) / f"exact_table_{args.dataset}_per_class.json", MODULE, argv, header, rows)
  print(table(header, rows))
  return 0


def train_table(args, names: list[str], seeds: list[int], out: Path, argv) -> int:
  """Trains the runs the results file lacks (common.pending_runs) and rewrites it after each. Finished runs are kept
  in the committed results file, so a table started in one session continues in the next even where the run
  folders are gone; a run is redone only when its flags changed."""
  previous = json.loads(out.read_text()) if out.exists() else {}
  runs = dict(previous.get("runs", {})) if previous.get("model") == args.model else {}
  header, rows = summarize(names, seeds, runs)
  data = {"data_dir": args.data_dir} if args.data_dir else {}

  def flags_of(name, seed):
    workdir = Path(args.root) / f"{args.dataset}-{args.model}-{slug(name)}-e{args.epochs:g}-s{seed}"
    return dict(dataset=args.dataset, model=args.model, epochs=args.epochs, seed=seed, workdir=workdir,
                progress=False, tensorboard=False, **data, **FLAGS[name])

  for name, seed in pending_runs(names, seeds, runs, lambda n, s: flag_argv(flags_of(n, s)), args.max_runs,
                                seed_major=args.order == "seed"):
    flags = flags_of(name, seed)
    t0 = time.perf_counter()
    run_argv = train("classify", **flags)
    accuracy = curve(flags["workdir"], "test/accuracy")
    key = f"{name}/{seed}"
    runs[key] = {"curve": accuracy, "seconds": time.perf_counter() - t0, "argv": run_argv,
                 "train_minutes": train_minutes(flags["workdir"]),
                 "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine()}
    print(f"{name} seed {seed}: {100 * accuracy[-1][1]:.2f}% ({runs[key]['seconds'] / 60:.1f} min)", flush=True)
    header, rows = summarize(names, seeds, runs)
    write_results(out, MODULE, argv, header, rows, runs=runs, epochs=args.epochs, model=args.model,
                  steps_per_epoch=accuracy[0][0])
  if runs:
    plot_runs(args, names, seeds, runs, args.epochs)
  print(f"{args.dataset} test accuracy after {args.epochs:g} epochs, {args.model}, seeds {args.seeds} — {machine()}")
  print(table(header, rows))
  return 0


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dataset", default="mnist", choices=list(DEFAULTS))
  p.add_argument("--recipes", default="", help=f"comma-separated recipe ids, of {', '.join(RECIPES)}; default: the "
                                                  "data set's")
  p.add_argument("--epochs", type=float, default=20)
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--model", default="cnn")
  p.add_argument("--data-dir", default="", help="raw data folder (else $JAXTRICKS_DATA)")
  p.add_argument("--root", default="runs/exact_table")
  p.add_argument("--out", default="benchmarks/results")
  p.add_argument("--png", default="docs", help="folder of the per-epoch curve picture")
  p.add_argument("--results-md", action="store_true",
                 help="only rewrite this data set's table in this study's README.md and its curve picture from the "
                      "results file (no training)")
  p.add_argument("--per-class", action="store_true",
                 help="only measure the per-class test accuracy (and dead units) of the listed recipes' runs whose "
                      "run folders are here, into exact_table_<dataset>_per_class.json (--results-md then puts it in "
                      "README.md)")
  p.add_argument("--order", choices=["seed", "recipe"], default="seed",
                 help="seed: every recipe's seed 0 before any seed 1 (default); recipe: all seeds of the first recipe "
                      "still missing runs, then the next")
  p.add_argument("--max-runs", type=int, default=0,
                 help="stop after training this many runs (0: all); the results file keeps what finished")
  args = p.parse_args(argv)
  names = p.comma_list("--recipes", args.recipes or ",".join(DEFAULTS[args.dataset]), of=str, choices=LABELS)
  seeds = p.comma_list("--seeds", args.seeds)
  out = Path(args.out) / f"exact_table_{args.dataset}.json"
  if args.results_md:
    return results_md(args, names, seeds, out)
  if args.per_class:
    return per_class_table(args, names, out, argv)
  return train_table(args, names, seeds, out, argv)


if __name__ == "__main__":
  sys.exit(main())
