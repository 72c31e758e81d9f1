"""Test-time flips on the finished runs of benchmarks.studies.mobilenet.mobilenet_table: each run's final checkpoint
evaluated again on the test set, plainly and with the softmax averaged over each image and its mirror (`train.classify --eval-flips`).

    python -m benchmarks.studies.mobilenet.mobilenet_flips               # every recorded run whose checkpoint is here
    python -m benchmarks.studies.mobilenet.mobilenet_flips --results-md  # and its copy in the study's README.md

Training is untouched (no train-step minute is spent), so the gain is what evaluation alone adds to a trained net.
The plain re-evaluation must give the accuracy the run recorded at its last epoch (a check of the restore, printed
beside it); a run whose checkpoints are not on this machine is left out and named. A row of the table with 2+
seeds also gets its mean ± std over them.
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.common import ArgumentParser, table, write_results
from benchmarks.studies.common import run_program, update_results_md


def evaluate_final(argv: list[str], workdir: Path, data_dir: str = "") -> dict[str, float]:
  """Test metrics of the newest checkpoint of the train.classify run `argv` (its --workdir: `workdir`), with
  --eval-flips (its --eval-only writes them to <workdir>/eval.json)."""
  run_program("classify", [*argv, "--eval-only", "--eval-flips", *(["--data-dir", data_dir] if data_dir else [])])
  return json.loads((workdir / "eval.json").read_text())


def row_and_seed(key: str) -> tuple[str, int]:
  """'cpu94 with the stride-2 stem (maps 14, 7, 4, 2, 1)/0' -> (that row's name, 0): the table's run keys."""
  row, seed = key.rsplit("/", 1)
  return row, int(seed)


def seed_means(measured: dict[str, dict[str, float]]) -> list[list[str]]:
  """One row per table row measured over 2+ seeds: mean ± std over its seeds (ddof 1, as the table's) of the plain
  and the flip accuracy %, the mean of their difference and of both NLLs. `measured`: 'row/seed' -> 'plain',
  'flips' (accuracy %), 'nll', 'nll_flips'."""
  by_row = defaultdict(list)
  for key, m in measured.items():
    by_row[row_and_seed(key)[0]].append(m)
  out = []
  for name, ms in by_row.items():
    if len(ms) < 2:
      continue
    v = {k: np.array([m[k] for m in ms]) for k in ms[0]}
    out.append([f"{name}, mean ± std of {len(ms)} seeds", "",
                f"{v['plain'].mean():.2f} ± {v['plain'].std(ddof=1):.2f}",
                f"{v['flips'].mean():.2f} ± {v['flips'].std(ddof=1):.2f}",
                f"{(v['flips'] - v['plain']).mean():+.2f}", f"{v['nll'].mean():.4f}", f"{v['nll_flips'].mean():.4f}"])
  return out


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--table", default="benchmarks/results/mobilenet_table.json", help="mobilenet_table's results")
  p.add_argument("--out", default="benchmarks/results/mobilenet_flips.json")
  p.add_argument("--data-dir", default="", help="raw data folder (else $JAXTRICKS_DATA or Debian's copy)")
  p.add_argument("--results-md", action="store_true", help="also rewrite the table's copy in this study's README.md")
  args = p.parse_args(argv)
  if not Path(args.table).exists():
    p.error(f"--table {args.table}: no such file; run python -m benchmarks.studies.mobilenet.mobilenet_table first")
  runs = json.loads(Path(args.table).read_text())["runs"]
  header = ["run (row/seed)", "recorded test accuracy %", "re-evaluated %", "with test-time flips %",
            "change (pts)", "test NLL", "with flips"]
  rows, missing, measured = [], [], {}
  first = {}   # each table row's runs together, the rows in the order of their first run, then by seed
  for key in runs:
    first.setdefault(row_and_seed(key)[0], len(first))
  in_order = sorted(runs, key=lambda key: (first[row_and_seed(key)[0]], row_and_seed(key)[1]))
  for key in in_order:
    run = runs[key]
    workdir = Path(run["argv"][run["argv"].index("--workdir") + 1])
    if not (workdir / "checkpoints").is_dir():
      missing.append(key)
      continue
    m = evaluate_final(run["argv"], workdir, args.data_dir)
    recorded = run["curve"][-1]
    if m["step"] != recorded[0]:
      missing.append(f"{key} (its newest checkpoint is step {m['step']}, its curve ends at {recorded[0]})")
      continue
    acc, flips = 100 * m["test/accuracy"], 100 * m["test/accuracy_flips"]
    measured[key] = {"plain": acc, "flips": flips, "nll": m["test/nll"], "nll_flips": m["test/nll_flips"]}
    rows.append([key, f"{100 * recorded[1]:.2f}", f"{acc:.2f}", f"{flips:.2f}", f"{flips - acc:+.2f}",
                 f"{m['test/nll']:.4f}", f"{m['test/nll_flips']:.4f}"])
    print(" | ".join(rows[-1]), flush=True)
  rows += seed_means(measured)
  note = f"left out (no checkpoint here): {', '.join(missing)}" if missing else ""
  print(table(header, rows))
  if note:
    print(note)
  if not rows:
    print("no run of the table has its checkpoints here", file=sys.stderr)
    return 2
  write_results(args.out, "benchmarks.studies.mobilenet.mobilenet_flips", argv if argv is not None else sys.argv[1:],
                header, rows, note=note)
  return update_results_md(args.out, "mobilenet_flips", Path(__file__).parent / "README.md") if args.results_md else 0


if __name__ == "__main__":
  sys.exit(main())
