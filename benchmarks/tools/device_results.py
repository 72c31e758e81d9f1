"""Turns what benchmarks/tools/device_check.sh brought back (OUT/device_check.tgz) into result files for
benchmarks.tools.report.

    python -m benchmarks.tools.device_results OUT/device_check.tgz [--results benchmarks/results] [--docs docs]

Writes exact_vgg_m3_gpu.json (each run of the EXACT paper's MNIST row: epochs completed, steps reached, last and
best test accuracy, steps/s), ebm_long_gpu.json (the long EBM runs' FID curves: each run's evaluations, step and
FIDs), ebm_fresh_chains_gpu.json (benchmarks.studies.ebm.fresh_chains' runs from every recipe's process),
tests_gpu.json (the suite's counts on the GPU and the names of what failed), copies ebm_step_gpu.json as it is, the
long EBM run's last grids into docs/ (ebm_long_<buffer|fresh>_gpu.png), and prints each item's outcome (run,
skipped for lack of budget, or stopped by its guard). The machine and date are those of the device run.
"""

import json
import re
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks.common import ArgumentParser, table


def _jsonl(text: str) -> list[dict]:
  return [json.loads(line) for line in text.splitlines() if line.strip()]


def collect(files: dict[str, bytes], machine: str, date: str) -> dict[str, dict]:
  """{result file name: its content} from the archive's files {path: bytes}."""
  text = lambda path: files[path].decode()
  runs = sorted({path.split("/")[0] for path in files if path.endswith("/metrics.jsonl")})
  results = {}
  # "readme": where the tables stand with their verdict (tests/test_benchmarks.py checks they do)
  base = {"machine": machine.rsplit(" jax ", 1)[0], "jax": machine.rsplit("jax ", 1)[-1], "date": date}
  exact = []
  for run in (r for r in runs if r.startswith("exact_vgg_m3_")):
    metrics = _jsonl(text(f"{run}/metrics.jsonl"))
    acc = [r["test/accuracy"] for r in metrics if "test/accuracy" in r]   # one evaluation per epoch
    speed = [r["steps_per_sec"] for r in metrics if "steps_per_sec" in r][-20:]
    exact.append([run.removeprefix("exact_vgg_m3_"), len(acc), max((r["step"] for r in metrics), default=0),
                  100 * acc[-1] if acc else float("nan"), 100 * max(acc) if acc else float("nan"),
                  sorted(speed)[len(speed) // 2] if speed else float("nan")])
  if exact:
    results["exact_vgg_m3_gpu.json"] = {
        **base, "command": "bash benchmarks/tools/device_check.sh OUT DATA exact_vgg_m3",
        "readme": "benchmarks/studies/exact/README.md",
        "header": ["recipe (<loss>_paper_mnist: 150 epochs asked)", "epochs completed", "steps reached",
                   "last test accuracy %", "best test accuracy %", "steps/s"], "rows": exact}
  long_rows, reached = [], {}
  for run in (r for r in runs if r == "ebm_long" or r.startswith("ebm_long_")):   # ebm_long_s<seed>
    metrics = _jsonl(text(f"{run}/metrics.jsonl"))
    fids = ["fid_fmnist_buffer", "fid_fmnist_fresh"]
    long_rows += [[run, r["step"], *(r.get(k, float("nan")) for k in fids)] for r in metrics if any(k in r for k in fids)]
    speed = [r["steps_per_sec"] for r in metrics if "steps_per_sec" in r][-20:]
    reached[run] = {"steps_reached": max((r["step"] for r in metrics), default=0),
                    "steps_per_sec": sorted(speed)[len(speed) // 2] if speed else float("nan")}
  if reached:
    results["ebm_long_gpu.json"] = {
        **base, "command": "bash benchmarks/tools/device_check.sh OUT DATA ebm_long",
        "readme": "benchmarks/studies/ebm/README.md",
        "header": ["run", "step", "fid_fmnist_buffer", "fid_fmnist_fresh"], "rows": long_rows, "runs": reached}
  fresh = {}
  for path in sorted(p for p in files if re.fullmatch(r"fresh_chains_[a-z0-9]+\.json", p)):
    fresh.update(json.loads(text(path))["runs"])
  if fresh:   # benchmarks.studies.ebm.fresh_chains' results file, its runs from every recipe's process
    results["ebm_fresh_chains_gpu.json"] = {**base, "command": "bash benchmarks/tools/device_check.sh OUT DATA "
                                            "fresh_chains", "readme": "benchmarks/studies/ebm/README.md", "runs": fresh}
  if "tests.xml" in files:
    suites = ET.fromstring(files["tests.xml"])
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    results["tests_gpu.json"] = {**base, "command": "bash benchmarks/tools/device_check.sh OUT DATA tests",
                                 "readme": "docs/gpu.md",
                                 "header": ["tests", "passed", "failed", "errors", "skipped"],
                                 "rows": [[counts["tests"], counts["tests"] - counts["failures"] - counts["errors"]
                                           - counts["skipped"], counts["failures"], counts["errors"],
                                           counts["skipped"]]], "failed": failed}
  if "ebm_step_gpu.json" in files:
    results["ebm_step_gpu.json"] = json.loads(text("ebm_step_gpu.json"))
  return results


# result files that keep their earlier runs (a device run measures what is new, e.g. one more recipe)
MERGED = ("ebm_fresh_chains_gpu.json",)


def merge_runs(old: dict, new: dict) -> dict:
  """`new` with every run of `old` kept (each keyed "recipe/seed", stamped with the machine and date of the file it
  came from): a new run whose key `old` has (a recipe measured again, e.g. main as the new card's control) is keyed
  "recipe@date/seed", so that each recipe is compared with the control of its own session."""
  stamp = lambda data: {k: {"machine": data.get("machine"), "date": data.get("date"), **v}
                        for k, v in data.get("runs", {}).items()}
  runs = stamp(old)
  for key, run in stamp(new).items():
    name, seed = key.rsplit("/", 1)
    runs[f"{name}@{new.get('date')}/{seed}" if key in runs else key] = run
  return {**new, "runs": runs}


def main(argv=None) -> int:
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("archive")
  p.add_argument("--results", default="benchmarks/results")
  p.add_argument("--docs", default="docs")
  args = p.parse_args(argv)
  if not Path(args.archive).is_file():
    p.error(f"{args.archive}: no such file; it is OUT/device_check.tgz of a benchmarks/tools/device_check.sh run")
  with tarfile.open(args.archive) as tar:
    files = {m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
  date = time.strftime("%Y-%m-%d", time.gmtime(Path(args.archive).stat().st_mtime))
  machine = files.get("machine.txt", b"unknown machine").decode().strip()
  items = _jsonl(files.get("items.jsonl", b"").decode())
  print(f"device run of {date} on {machine}")
  print(table(["item", "outcome", "seconds", "guard s"],
              [[i["item"], "skipped (budget)" if i["skipped"] else "stopped by its guard" if i["rc"] in (124, 130, 137, 143)
                else f"exit {i['rc']}", i.get("seconds", "–"), i["guard_s"]] for i in items]))
  results, docs = Path(args.results), Path(args.docs)
  results.mkdir(parents=True, exist_ok=True)
  for name, content in collect(files, machine, date).items():
    if name in MERGED and (results / name).exists():
      content = merge_runs(json.loads((results / name).read_text()), content)
    (results / name).write_text(json.dumps(content, indent=1))
    print(f"wrote {results / name}")
  grids = sorted((int(m[2]), m[1], path) for path in files
                 if (m := re.fullmatch(r"ebm_long(?:_s0)?/(buffer|fresh)_(\d+)\.png", path)))
  for kind in ("buffer", "fresh"):
    last = [path for _, k, path in grids if k == kind][-1:]
    for path in last:
      docs.mkdir(parents=True, exist_ok=True)
      target = docs / f"ebm_long_{kind}_gpu.png"
      target.write_bytes(files[path])
      print(f"wrote {target}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
