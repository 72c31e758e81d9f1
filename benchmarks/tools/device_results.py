"""Turns what benchmarks/tools/device_check.sh brought back (OUT/device_check.tgz) into result files for
benchmarks.tools.report.

    python -m benchmarks.tools.device_results OUT/device_check.tgz [--results benchmarks/results] [--docs docs]

Writes mobilenet_gpu.json (each MobileNet recipe: epochs reached, last and best test accuracy, the last with
test-time flips, steps/s),
tests_gpu.json (the suite's counts on the GPU and the names of what failed), cifar_gpu.json (the short CIFAR-10
runs: steps reached and their last metrics), copies gan_step_gpu.json and langevin_gpu.json as they are, the CIFAR-10
grids into docs/ (cifar_<run>_gpu.png), and prints each item's outcome (run, skipped for lack of budget, or stopped
by its guard). The machine and date are those of the device run.
"""

import argparse
import json
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks.common import table


def _jsonl(text: str) -> list[dict]:
  return [json.loads(line) for line in text.splitlines() if line.strip()]


def _last(records: list[dict], key: str):
  values = [(r["step"], r[key]) for r in records if key in r]
  return values[-1] if values else (None, float("nan"))


def collect(files: dict[str, bytes], machine: str, date: str) -> dict[str, dict]:
  """{result file name: its content} from the archive's files {path: bytes}."""
  text = lambda path: files[path].decode()
  runs = sorted({path.split("/")[0] for path in files if path.endswith("/metrics.jsonl")})
  results = {}
  base = {"machine": machine, "jax": machine.rsplit("jax ", 1)[-1], "date": date, "argv": []}
  mobilenet = []
  for run in (r for r in runs if r.startswith("mobilenet_")):
    metrics = _jsonl(text(f"{run}/metrics.jsonl"))
    acc = [(r["step"], r["test/accuracy"]) for r in metrics if "test/accuracy" in r]
    flips = [r["test/accuracy_flips"] for r in metrics if "test/accuracy_flips" in r]
    steps_per_epoch = acc[0][0] if acc else 1
    speed = [r["steps_per_sec"] for r in metrics if "steps_per_sec" in r][-20:]
    mobilenet.append([run.removeprefix("mobilenet_"), f"{acc[-1][0] / steps_per_epoch:.1f}" if acc else "0",
                      100 * acc[-1][1] if acc else float("nan"),
                      100 * max(a for _, a in acc) if acc else float("nan"),
                      100 * flips[-1] if flips else float("nan"),
                      sorted(speed)[len(speed) // 2] if speed else float("nan")])
  if mobilenet:
    results["mobilenet_gpu.json"] = {**base, "command": "bash benchmarks/tools/device_check.sh OUT DATA mobilenet",
                                     "header": ["recipe (seed: 50 epochs asked, cpu94: 40)", "epochs reached",
                                                "last test accuracy %",
                                                "best test accuracy %", "last with test-time flips %",
                                                "steps/s"], "rows": mobilenet}
  if "tests.xml" in files:
    suites = ET.fromstring(files["tests.xml"])
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    results["tests_gpu.json"] = {**base, "command": "bash benchmarks/tools/device_check.sh OUT DATA tests",
                                 "header": ["tests", "passed", "failed", "errors", "skipped"],
                                 "rows": [[counts["tests"], counts["tests"] - counts["failures"] - counts["errors"]
                                           - counts["skipped"], counts["failures"], counts["errors"],
                                           counts["skipped"]]], "failed": failed}
  cifar = []
  for run in (r for r in runs if r.startswith("cifar_")):
    metrics = _jsonl(text(f"{run}/metrics.jsonl"))
    keys = sorted({k for r in metrics for k in r if k.startswith(("test/", "fid")) and isinstance(r[k], float)})
    last_step = max(r["step"] for r in metrics)
    shown = "; ".join(f"{k} {_last(metrics, k)[1]:.4g} (step {_last(metrics, k)[0]})" for k in keys) or "–"
    cifar.append([run.removeprefix("cifar_"), last_step, shown])
  if cifar:
    results["cifar_gpu.json"] = {**base, "command": "bash benchmarks/tools/device_check.sh OUT DATA cifar",
                                 "header": ["run", "steps reached", "last evaluations"], "rows": cifar}
  for name in ("gan_step_gpu.json", "langevin_gpu.json"):
    if name in files:
      results[name] = json.loads(text(name))
  return results


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
              [[i["item"], "skipped (budget)" if i["skipped"] else "stopped by its guard" if i["rc"] in (124, 130, 137)
                else f"exit {i['rc']}", i.get("seconds", "–"), i["guard_s"]] for i in items]))
  results, docs = Path(args.results), Path(args.docs)
  results.mkdir(parents=True, exist_ok=True)
  for name, content in collect(files, machine, date).items():
    (results / name).write_text(json.dumps(content, indent=1))
    print(f"wrote {results / name}")
  for path, data in files.items():
    if path.startswith("cifar_") and path.endswith(".png"):
      run, png = path.split("/")
      target = docs / f"{run}_{png.removesuffix('.png').rstrip('0123456789').rstrip('_')}_gpu.png"
      target.write_bytes(data)
      print(f"wrote {target}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
