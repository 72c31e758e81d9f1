"""Test-time flips on the finished runs of benchmarks.mobilenet_table: each run's final checkpoint evaluated again on
the test set, plainly and with the softmax averaged over each image and its mirror (`train.classify --eval-flips`).

    python -m benchmarks.mobilenet_flips                  # every recorded run whose checkpoint is here
    python -m benchmarks.mobilenet_flips --results-md     # and its copy in RESULTS.md

Training is untouched (no train-step minute is spent), so the gain is what evaluation alone adds to a trained net.
The plain re-evaluation must give the accuracy the run recorded at its last epoch (a check of the restore, printed
beside it); a run whose checkpoints are not on this machine is left out and named.
"""

import argparse
import json
import sys
from pathlib import Path

from benchmarks.common import run_program, table, update_results_md, write_results


def evaluate_final(argv: list[str], workdir: Path, data_dir: str = "") -> dict[str, float]:
  """Test metrics of the newest checkpoint of the train.classify run `argv` (its --workdir: `workdir`), with
  --eval-flips (its --eval-only writes them to <workdir>/eval.json)."""
  run_program("classify", [*argv, "--eval-only", "--eval-flips", *(["--data-dir", data_dir] if data_dir else [])])
  return json.loads((workdir / "eval.json").read_text())


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--table", default="benchmarks/results/mobilenet_table.json", help="mobilenet_table's results")
  p.add_argument("--out", default="benchmarks/results/mobilenet_flips.json")
  p.add_argument("--data-dir", default="", help="raw data folder (else $JAXTRICKS_DATA or Debian's copy)")
  p.add_argument("--results-md", action="store_true", help="also rewrite the table's copy in RESULTS.md")
  args = p.parse_args(argv)
  if not Path(args.table).exists():
    p.error(f"--table {args.table}: no such file; run python -m benchmarks.mobilenet_table first")
  runs = json.loads(Path(args.table).read_text())["runs"]
  header = ["run (row/seed)", "recorded test accuracy %", "re-evaluated %", "with test-time flips %",
            "change (pts)", "test NLL", "with flips"]
  rows, missing = [], []
  for key, run in runs.items():
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
    rows.append([key, f"{100 * recorded[1]:.2f}", f"{acc:.2f}", f"{flips:.2f}", f"{flips - acc:+.2f}",
                 f"{m['test/nll']:.4f}", f"{m['test/nll_flips']:.4f}"])
    print(" | ".join(rows[-1]), flush=True)
  note = f"left out (no checkpoint here): {', '.join(missing)}" if missing else ""
  print(table(header, rows))
  if note:
    print(note)
  if not rows:
    print("no run of the table has its checkpoints here", file=sys.stderr)
    return 2
  write_results(args.out, "benchmarks.mobilenet_flips", argv if argv is not None else sys.argv[1:], header, rows,
                note=note)
  return update_results_md(args.out, "mobilenet_flips") if args.results_md else 0


if __name__ == "__main__":
  sys.exit(main())
