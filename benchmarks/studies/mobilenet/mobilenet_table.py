"""MobileNet on Fashion-MNIST within 150 minutes of a 2-core CPU: `--recipe cpu94` over seeds, and what each of its
changes bought (one removed at a time, seed 0) — issue 15.

    python -m benchmarks.studies.mobilenet.mobilenet_table        # cpu94 seeds 0,1,2, then the ablation rows (seed 0)
    python -m benchmarks.studies.mobilenet.mobilenet_table --rows cpu94 --seeds 0 --max-runs 1     # the first run
    python -m benchmarks.studies.mobilenet.mobilenet_table --rows cpu94_stem2    # one ablation row (ids: ROWS)
    python -m benchmarks.studies.mobilenet.mobilenet_table --results-md    # table, picture, README copy, no training

Each row is `python -m train.classify --recipe cpu94` with the flags of its ROWS entry on top. Runs live in
runs/mobilenet_table/ and resume; finished runs are kept in benchmarks/results/mobilenet_table.json (per-epoch test
accuracy, train-step minutes: the median step time x steps, which leaves out evaluations and pauses), so a table
started in one session continues in the next. The picture (docs/mobilenet_cpu94.png) puts the per-epoch curves
beside the earlier 89.71% run's (BASELINE).
"""

import json
import sys
import time
from pathlib import Path

from benchmarks.common import ArgumentParser, machine, table, write_results
from benchmarks.studies.common import (
  curve,
  flag_argv,
  minutes,
  pending_runs,
  plot,
  run_program,
  slug,
  summarize,
  train_minutes,
  update_results_md,
)

MODULE = "benchmarks.studies.mobilenet.mobilenet_table"
README = Path(__file__).parent / "README.md"   # the study's text; --results-md rewrites its table

# what is changed from cpu94 in each ablation row (everything else is the recipe's; train/classify.py RECIPES).
# cpu94 was first measured with crops + flips + random erasing; flips alone did better, so the recipe became that,
# and the first recipe's runs stay as rows of their own (their ablation is against the first recipe: REFERENCE).
# Row id (what --rows takes) -> (display label, flags). The label names the row in the table, in the results file's
# run keys ("label/seed") and in its run folders (common.slug).
FIRST = "cpu94 with crops and random erasing (the first cpu94)"
ROWS = {
    "cpu94": ("cpu94", {}),
    "cpu94_stem2": ("cpu94 with the stride-2 stem (maps 14, 7, 4, 2, 1)", {"stem_stride": 2}),
    "first_cpu94": (FIRST, {"augment": "crop_flip_erase"}),
    "first_cpu94_stem2": ("the first cpu94 with the stride-2 stem", {"augment": "crop_flip_erase", "stem_stride": 2}),
    "cpu94_no_smoothing": ("cpu94 without label smoothing", {"label_smoothing": 0.0}),
}
ABLATIONS = {label: flags for label, flags in ROWS.values()}   # by label: the table and run keys speak labels
# the row each ablation's change is measured against (seed 0); rows not named here: cpu94
REFERENCE = {"the first cpu94 with the stride-2 stem": FIRST}
# The 89.71% run (this study's README.md, 2026-11-25, jax 0.10.2): stride-2 stem, width 0.5, flips, Adam 2e-3 with
# cosine decay, batch 128, 30 epochs; test accuracy % after each epoch as the README lists it.
BASELINE_NAME = "the 89.71% run (stride-2 stem, flips, Adam; 2026-11-25)"
BASELINE = [71.74, 79.30, 82.86, 83.94, 84.22, 85.32, 84.51, 85.41, 86.77, 86.47, 87.18, 87.98, 88.14, 88.18, 87.42,
            88.48, 88.84, 89.61, 89.27, 89.25, 89.18, 89.20, 89.73, 89.72, 89.80, 89.62, 89.64, 89.60, 89.71, 89.71]


def summarize_all(names: list[str], seeds: list[int], runs: dict) -> tuple[list[str], list[list]]:
  """cpu94 over `seeds`, each ablation row over seed 0, and each row's change against seed 0 of cpu94 (or of the
  row REFERENCE names, which the cell then names)."""
  header, rows = summarize(["cpu94"] if "cpu94" in names else [], seeds, runs)
  _, ablated = summarize([n for n in names if n != "cpu94"], [0], runs)
  header = [*header, "change vs cpu94 seed 0 (pts)"]
  out = []
  for row in [*rows, *ablated]:
    ref_name = REFERENCE.get(row[0], "cpu94")
    run, ref = runs.get(f"{row[0]}/0"), runs.get(f"{ref_name}/0")
    delta = 100 * (run["curve"][-1][1] - ref["curve"][-1][1]) if run and ref and row[0] != "cpu94" else None
    cell = "" if delta is None else f"{delta:+.2f}" + (f" vs {ref_name.split(' (')[0]}" if ref_name != "cpu94" else "")
    out.append([*row, cell])
  return header, out


def goal(seeds: list[int], runs: dict, *, target: float = 94.0, budget_minutes: float = 150.0) -> str:
  """Issue 15's CPU goal judged from the recorded runs: cpu94's mean final test accuracy over `seeds` >= `target`,
  each run within `budget_minutes` of train steps; 'pending' until every seed has finished."""
  done = {s: runs[f"cpu94/{s}"] for s in seeds if f"cpu94/{s}" in runs}
  finals = {s: 100 * r["curve"][-1][1] for s, r in done.items()}
  runs_text = ", ".join(f"seed {s}: {finals[s]:.2f}% in {minutes(r):.0f} min" for s, r in done.items())
  rule = f"goal: mean test accuracy of cpu94 over seeds {','.join(map(str, seeds))} >= {target:.1f}%, " \
         f"each run <= {budget_minutes:g} train-step minutes"
  if len(done) < len(seeds):
    return f"{rule} — pending, {len(done)} of {len(seeds)} seeds done" + (f" ({runs_text})" if done else "")
  mean = sum(finals.values()) / len(finals)
  within = all(minutes(r) <= budget_minutes for r in done.values())
  verdict = "met" if mean >= target and within else "not met"
  return f"{rule} — {verdict}: mean {mean:.2f}% ({runs_text})"


def plot_all(path: Path, names: list[str], seeds: list[int], runs: dict, epochs: float) -> None:
  """Per-epoch test accuracy of every row (mean and band over its seeds) and of the 89.71% run."""
  steps_per_epoch = next(iter(runs.values()))["curve"][0][0] if runs else 1
  with_base = {**runs, f"{BASELINE_NAME}/0": {"curve": [((e + 1) * steps_per_epoch, a / 100)
                                                         for e, a in enumerate(BASELINE)]}}
  plot(path, f"Fashion-MNIST, MobileNet --recipe cpu94 ({epochs:g} epochs)\nand its ablations: test accuracy per "
             f"epoch\n{machine()}", [*names, BASELINE_NAME], seeds, with_base)


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rows", default="", help=f"comma-separated row ids, of {', '.join(ROWS)}; default all")
  p.add_argument("--seeds", default="0,1,2", help="seeds of the cpu94 row (ablation rows: seed 0)")
  p.add_argument("--epochs", type=float, default=40, help="epochs of every run (cpu94's own: 40)")
  p.add_argument("--data-dir", default="", help="raw data folder (else $JAXTRICKS_DATA or Debian's copy)")
  p.add_argument("--root", default="runs/mobilenet_table")
  p.add_argument("--out", default="benchmarks/results")
  p.add_argument("--png", default="docs", help="folder of the curve picture")
  p.add_argument("--extra", default="", help="more train.classify flags for every run, e.g. '--batch-size 8' "
                                              "(toy runs); they enter each run's recorded argv")
  p.add_argument("--results-md", action="store_true",
                 help="train nothing: the table and picture from the results file, and its copy in README.md")
  p.add_argument("--max-runs", type=int, default=0, help="train at most this many runs (0: all)")
  args = p.parse_args(argv)
  labels = {r: label for r, (label, _) in ROWS.items()}
  names = p.comma_list("--rows", args.rows, of=str, choices=labels) if args.rows else list(ABLATIONS)
  seeds = p.comma_list("--seeds", args.seeds)
  out = Path(args.out) / "mobilenet_table.json"
  recorded = json.loads(out.read_text()) if out.exists() else {}
  runs = dict(recorded.get("runs", {}))
  extra = args.extra.split()

  def argv_of(name, seed):
    workdir = Path(args.root) / f"{slug(name)}-e{args.epochs:g}-s{seed}"
    flags = dict(recipe="cpu94", epochs=args.epochs, seed=seed, workdir=workdir, progress=False, tensorboard=False,
                 **({"data_dir": args.data_dir} if args.data_dir else {}), **ABLATIONS[name])
    return flag_argv(flags) + extra

  todo = [] if args.results_md else (
      pending_runs(["cpu94"] if "cpu94" in names else [], seeds, runs, argv_of)
      + pending_runs([n for n in names if n != "cpu94"], [0], runs, argv_of))
  for name, seed in todo[:args.max_runs] if args.max_runs else todo:
    run_argv = argv_of(name, seed)
    workdir = Path(run_argv[run_argv.index("--workdir") + 1])
    t0 = time.perf_counter()
    run_program("classify", run_argv)
    accuracy = curve(workdir, "test/accuracy")
    runs[f"{name}/{seed}"] = {"curve": accuracy, "seconds": time.perf_counter() - t0, "argv": run_argv,
                              "train_minutes": train_minutes(workdir), "date": time.strftime("%Y-%m-%d %H:%M"),
                              "machine": machine()}
    print(f"{name} seed {seed}: {100 * accuracy[-1][1]:.2f}% ({runs[f'{name}/{seed}']['train_minutes']:.1f} "
          f"train-step min)", flush=True)
    header, rows = summarize_all(names, seeds, runs)
    write_results(out, MODULE, argv, header, rows, runs=runs, epochs=args.epochs, note=goal(seeds, runs))
  header, rows = summarize_all(names, seeds, runs)
  if args.results_md and runs:
    write_results(out, MODULE, recorded.get("argv", []), header, rows, runs=runs,
                  epochs=recorded.get("epochs", args.epochs), note=goal(seeds, runs))
  if runs:
    plot_all(Path(args.png) / "mobilenet_cpu94.png", names, seeds, runs, recorded.get("epochs", args.epochs))
  print(f"Fashion-MNIST, MobileNet --recipe cpu94, {args.epochs:g} epochs — {machine()}")
  print(table(header, rows))
  print(goal(seeds, runs))
  return update_results_md(out, "mobilenet_table", README) if args.results_md and runs else 0


if __name__ == "__main__":
  sys.exit(main())
