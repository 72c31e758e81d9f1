"""Which CPU layout each program should default to (issue 18): one XLA device for the whole CPU, or one per core
(the batch split over them), each with and without XLA's oneDNN flag.

    python -m benchmarks.speed.cpu_devices                         # every program, both layouts
    python -m benchmarks.speed.cpu_devices --programs ebm,gan --flags ",--xla_cpu_use_onednn=true" --repeats 2

Each cell is a fresh process `python -m train.<program> --steps S ...` (its defaults otherwise) with the layout set
from outside (JAX_NUM_CPU_DEVICES, which wins over a program's own --cpu-devices default) and the flag in
XLA_FLAGS; its time is the median per-step time from metrics.jsonl's steps/s, first steps dropped (compile).
Cells of one program run interleaved, --repeats rounds, median taken, so machine drift hits them alike. Prints
ms per step and the ratio to one device without flags; `--json` keeps the table.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import ArgumentParser
from jaxtricks.parallel import cpu_cores

# the programs as `make train` / README run them, shortened; evaluation and sampling pushed past the end
PROGRAMS = {
    "ebm": ["--fid-every", "1000000", "--sample-every", "1000000"],
    "gan": ["--fid-every", "1000000", "--sample-every", "1000000"],
    "classify": ["--eval-every", "1000000"],
    "classify --recipe cpu94": ["--recipe", "cpu94", "--eval-every", "1000000"],
    "classify --recipe seed": ["--recipe", "seed", "--eval-every", "1000000"],
    "sentiment": [],   # evaluates once per epoch: not within these few steps
}


def step_ms(program: str, steps: int, devices: int, xla_flags: str, data_dir: str, skip: int) -> float:
  """Median ms per train step of one fresh run (its first `skip` steps dropped)."""
  name = program.split(" ", 1)[0]
  extra = PROGRAMS[program]
  with tempfile.TemporaryDirectory() as tmp:
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
    argv = [sys.executable, "-m", f"train.{name}", "--steps", str(steps), "--workdir", f"{tmp}/run",
            "--checkpoint-every", str(10 * steps), "--no-progress", "--no-tensorboard", *extra]
    if data_dir:
      argv += ["--data-dir", data_dir]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
    if r.returncode:
      raise SystemExit(f"{' '.join(argv[1:])} (JAX_NUM_CPU_DEVICES={devices}, XLA_FLAGS={xla_flags!r}) exited "
                       f"with {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
    rates = [json.loads(l)["steps_per_sec"] for l in Path(tmp, "run", "metrics.jsonl").read_text().splitlines()
             if '"steps_per_sec"' in l]
  return 1e3 * float(np.median(1.0 / np.asarray(rates[skip:])))


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--programs", default=",".join(PROGRAMS), help=f"comma-separated, of {list(PROGRAMS)}")
  p.add_argument("--devices", default=f"1,{cpu_cores()}", help="CPU device counts to try")
  p.add_argument("--flags", default="", help="comma-separated XLA_FLAGS values to try ('' = none), "
                 "e.g. ',--xla_cpu_use_onednn=true'")
  p.add_argument("--steps", type=int, default=30)
  p.add_argument("--skip", type=int, default=5, help="first steps left out of the median")
  p.add_argument("--repeats", type=int, default=1)
  p.add_argument("--data-dir", default="")
  p.add_argument("--json", default="")
  args = p.parse_args(argv)
  programs = p.comma_list("--programs", args.programs, of=str, choices=list(PROGRAMS))
  cells = [(d, f) for f in args.flags.split(",") for d in p.comma_list("--devices", args.devices)]
  import jax

  from benchmarks.common import table, write_results
  rows = []
  for program in programs:
    times = {cell: [] for cell in cells}
    for _ in range(args.repeats):
      for cell in cells:
        times[cell].append(step_ms(program, args.steps, *cell, args.data_dir, args.skip))
        print(" ", program, cell, f"{times[cell][-1]:.1f} ms", flush=True)
    base = float(np.median(times[cells[0]]))
    for (devices, flags), t in times.items():
      ms = float(np.median(t))
      rows.append([program, devices, flags or "(none)", ms, f"{base / ms:.2f}x"])
  header = ["program", "CPU devices", "XLA_FLAGS", "ms per step", "speed vs first row"]
  print(f"Train steps per CPU layout — {cpu_cores()} cores, jax {jax.__version__}, {args.steps} steps, median")
  print(table(header, rows))
  if args.json:
    write_results(args.json, "benchmarks.speed.cpu_devices", argv, header, rows)
  return 0


if __name__ == "__main__":
  sys.exit(main())
