"""What the studies share: training a program's runs in this process, resuming a multi-run table from its results
file (`pending_runs`), run folders' names (`slug`), curves and minutes read from a run's metrics.jsonl, the accuracy
table and picture of several recipes over seeds, and rewriting a study README's generated table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import table
from jaxtricks import checkpoints, ebm, loop


def flag_argv(flags: dict) -> list[str]:
  """--flag value for each keyword (True/False: --flag / --no-flag), as the programs' parsers read them."""
  argv = []
  for name, value in flags.items():
    flag = "--" + name.replace("_", "-")
    argv += [flag] if value is True else [f"--no-{flag[2:]}"] if value is False else [flag, str(value)]
  return argv


def train(program: str, **flags) -> list[str]:
  """Runs `python -m train.<program>` (`run_program`) with --flag value for each keyword (True/False: --flag /
  --no-flag); raises SystemExit on failure. Returns the argv it ran with. A finished run returns at once (runs
  resume)."""
  return run_program(program, flag_argv(flags))


class ProgramFailed(SystemExit):
  """run_program's failure: a SystemExit naming the command, with the program's exit status as `returncode`."""

  def __init__(self, message: str, returncode: int):
    super().__init__(message)
    self.returncode = returncode


def run_program(program: str, argv: list[str]) -> list[str]:
  """`python -m train.<program> *argv` in a process of its own, as a user runs it: its own CPU device layout
  (a program run inside a process whose JAX has started keeps that process's devices: the study's fresh-chain
  runs trained on one device instead of train.ebm's two until 2026-12-05), its own memory. SystemExit naming the
  command on failure; if this process is interrupted, the program is stopped (SIGTERM: it checkpoints) and
  waited for. Returns argv."""
  root = str(Path(__file__).resolve().parents[2])   # where train/ is, whatever the working directory
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
  child = subprocess.Popen([sys.executable, "-m", f"train.{program}", *argv], env=env)
  try:
    rc = child.wait()
  finally:
    if child.poll() is None:
      child.terminate()
      try:
        child.wait(timeout=120)
      except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
  if rc:
    raise ProgramFailed(f"python -m train.{program} {' '.join(argv)} exited with {rc}", rc)
  return argv


def pending_runs(names: list[str], seeds: list[int], recorded: dict, argv_of, max_runs: int = 0,
                 seed_major: bool = True) -> list:
  """The (name, seed) runs a resumable multi-run benchmark (a multi-seed table) still has to train: those whose
  key "name/seed" is not in `recorded` (its committed results file) with the argv `argv_of(name, seed)` they
  would run with now. Seed-major by default, every name's first seed before any name's second, so a study cut
  short by a session has one run of each; `seed_major=False`: all seeds of a name before the next name. At most
  `max_runs` (0: all)."""
  pairs = ([(name, seed) for seed in seeds for name in names] if seed_major else
           [(name, seed) for name in names for seed in seeds])
  todo = [(name, seed) for name, seed in pairs if recorded.get(f"{name}/{seed}", {}).get("argv") != argv_of(name, seed)]
  return todo[:max_runs] if max_runs else todo


def slug(label: str) -> str:
  """A run folder's name for a display label: every character but letters and digits becomes '-', a pair '--'
  becomes one ("ce (SGD, clip 10)" -> "ce-SGD-clip-10"); the recorded runs' folders are named so."""
  return "".join(c if c.isalnum() else "-" for c in label).strip("-").replace("--", "-")


def curve(workdir, key: str) -> list[tuple[int, float]]:
  """[(step, value)] of metric `key` (e.g. "test/accuracy") over a run's metrics.jsonl."""
  return loop.metric(loop.read_metrics(workdir), key)


def loop_minutes(workdir) -> float:
  """A run's training-loop wall time (evaluations included) from its metrics.jsonl steps/s; holds across resumes."""
  rows = curve(workdir, "steps_per_sec")
  return sum((s - s0) / v for (s0, _), (s, v) in zip([(0, 1.0)] + rows, rows)) / 60


def train_minutes(workdir: Path) -> float:
  """Minutes of a run's train steps: its median step time (metrics.jsonl's steps/s) x its steps. The median keeps
  out what is not training: evaluations, checkpoints, and any time the machine paused the process."""
  rates = [v for _, v in curve(workdir, "steps_per_sec")]
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


def summarize(names: list[str], seeds: list[int], runs: dict) -> tuple[list[str], list[list]]:
  """The accuracy table: one row per recipe whose seeds have all finished (final test accuracy mean ± std over
  seeds, ddof 1, the per-seed values, and the range of the last 3 evaluations as the flatness check)."""
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


def run_machines(runs: dict) -> str:
  """The machines a multi-run table's recorded runs came from, with how many runs and their dates each (the VM's
  host changes between sessions, so one table may hold runs of several)."""
  by = {}
  for run in runs.values():
    by.setdefault(run.get("machine", "machine not recorded"), []).append(run.get("date", "")[:10])
  return "; ".join(f"{m}: {len(d)} run{'s' * (len(d) > 1)} ({', '.join(sorted(set(d)))})" for m, d in by.items())


def results_machines(data: dict) -> str:
  """Where a results file's table was measured: the machines of its runs where every run records one, else the
  machine that wrote the file."""
  runs = data.get("runs") or {}
  if runs and all(isinstance(r, dict) and "machine" in r for r in runs.values()):
    return f"runs on {run_machines(runs)}"
  return data["machine"]


def update_results_md(results, marker: str, md, note_key: str = "") -> int:
  """Rewrites the text between a study README's markers `<!-- marker:begin -->` ... `<!-- marker:end -->` with the
  table of results file `results`, its command and the machines of its runs (and its field `note_key` under the
  table, where given and present). 2 when the markers are missing."""
  data = json.loads(Path(results).read_text())
  begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
  md = Path(md)
  text = md.read_text()
  if begin not in text or end not in text:
    print(f"{md} lacks the markers {begin} ... {end}", file=sys.stderr)
    return 2
  block = (f"`{data['command']}`, jax {data['jax']} — {results_machines(data)}.\n\n"
           f"{table(data['header'], data['rows'])}\n" + (f"\n{data[note_key]}\n" if data.get(note_key) else ""))
  head, rest = text.split(begin, 1)
  md.write_text(f"{head}{begin}\n{block}{end}{rest.split(end, 1)[1]}")
  print(f"rewrote the {marker} table in {md}")
  return 0


def fresh_chain_table(runs: dict, names: list[str], lengths: list[int]) -> str:
  """benchmarks.studies.ebm.fresh_chains' table (also docs/results.md's): FID-FMNIST mean ± std over seeds per recipe
  (runs keyed "recipe/seed"), of fresh chains at each length and of the buffer, and the train minutes."""
  rows = []
  for name in names:
    done = [v for k, v in runs.items() if k.split("/")[0] == name]
    if not done:
      continue
    cell = lambda xs: f"{np.mean(xs):.1f} ± {np.std(xs, ddof=1) if len(xs) > 1 else 0:.1f}"
    rows.append([name, len(done), *[cell([v["fresh"][str(n)]["fid"] for v in done if str(n) in v["fresh"]])
                                    for n in lengths], cell([v["buffer"]["fid"] for v in done]),
                 f"{np.mean([v['train_minutes'] for v in done]):.1f}"])
  return table(["recipe", "seeds", *[f"fresh {n}" for n in lengths], "buffer", "train min"], rows)


# train.ebm's default sampler since 2026-12-05 (its flags --langevin-steps, --step-size, --noise-scale, --grad-clip,
# --reinit-prob, --chain-augment; chains from noise ignore the last two); from 2026-12-01, no augmented starts
# (--recipe uva); before, step 20 and clip 0.01 (--recipe du2019)
EBM_SAMPLER = ebm.SamplerConfig(num_steps=20, step_size=10.0, noise_scale=0.005, grad_clip=0.03, reinit_prob=0.05,
                                augment_shift=2, unroll="auto")   # ("auto": resolved when a chain compiles; asking the backend here
                                                 # would start JAX at import, before a program sets its CPU devices)


def load_ebm_run(workdir: Path):
  """(settings of a train.ebm workdir (config.json), its energy net, its latest state as plain arrays)."""
  config = json.loads((workdir / "config.json").read_text())
  state, _, _ = checkpoints.restore(workdir)
  return config, ebm.energy_net(config["channels"], config.get("net", "resnet")), state


def floor_at(n: int, path: Path = Path("benchmarks/results/fid_floor.json")) -> str | None:
  """A sentence for a table of FIDs at N samples: the floor at N from the results file (None: not measured at N)."""
  if not path.exists():
    return None
  r = json.loads(path.read_text())["floors"].get(str(n))
  if r is None:
    return None
  return (f"Real-data floor at {n:,} samples: FID {np.mean(r['fid']):.2f} ± {np.std(r['fid'], ddof=1):.2f}, "
          f"{min(r['fid']):.2f} to {max(r['fid']):.2f} ({len(r['fid'])} draws of {n:,} Fashion-MNIST training "
          f"images against the same test set; `python -m benchmarks.studies.metrics.fid_floor`).")
