"""The EBM main job run long: FID of the buffer and of fresh chains every 1,000 steps to 20,000, over seeds.

Issue 34, item 3: do the main job's runs stay stable when trained 20x longer, and does generation from noise follow
the buffer? Each run is `python -m train.ebm --steps 20000 --fid-every 1000` with the recipe's flags, in
ROOT/RECIPE-sSEED; a run resumes where it stopped (a session ends: SIGTERM or Ctrl-C stop this study, which stops
the run with its checkpoint saved), so a table that takes longer than a session fills up over several.

    python -m benchmarks.studies.ebm.ebm_long                           # the main job, seeds 0, 1, 2
    python -m benchmarks.studies.ebm.ebm_long --seeds 0 --max-runs 1    # one run (or the rest of it)
    python -m benchmarks.studies.ebm.ebm_long --collect                 # only re-read the runs' curves

Both recipes spell out their settings and pin bf16 compute with the convolutions as matrix products (train.ebm's
default on an AMD Zen 4/5 CPU), so that a run resumed on another CPU model, or after a default changed, goes on as
it began: `main` is the main job (augmented chain starts, 120-step fresh chains), `uvabf16` the main job until
2026-12-05 (no augmented starts, 60-step fresh chains; the GPU's long runs, ebm_long_gpu.json, were that recipe in
float32). A run that fails (train.ebm's line says why: a divergence, a fault) is recorded as stopped and the next
one goes on; a stopped run is not retried until its record is removed. After training (or when stopped) every run
folder of the asked recipes and seeds is read into --json: at each evaluation its buffer and fresh-chain FIDs (500
samples: the main job's), the buffer's recall, the fresh samples' precision, recall and coverage, the largest
|energy| and gradient norm since the last evaluation (metrics.jsonl's energy_real, energy_fake, grad_norm: what
diverges first), and the training minutes so far; the table of those curves, with a summary per run, goes into
benchmarks/studies/ebm/README.md (--results-md) and their plot, FID against steps and against minutes, into --png.
"""

import json
import shlex
import signal
import sys
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import ArgumentParser, machine, table
from benchmarks.studies import common
from jaxtricks import loop

BF16 = dict(compute_dtype="bfloat16", conv="taps")
# train.ebm flags over its defaults: the main job (augmented chain starts), and the main job until 2026-12-05 (none),
# both pinned to bf16 taps (fresh_chains' `uvabf16`; the GPU's long runs of 2026-12-04 were that recipe in float32)
# (spelled out, not left to train.ebm's defaults: a recorded run stays that recipe when a default changes)
RECIPES = {"main": dict(chain_augment=2, fresh_steps=120, **BF16),
           "uvabf16": dict(chain_augment=0, fresh_steps=60, **BF16)}
HEADER = ["run", "step", "train min", "FID buffer", "FID fresh", "buffer recall", "fresh precision / recall / coverage",
          "max abs energy", "max grad norm"]
SUMMARY_HEADER = ["run", "steps", "FID buffer at 1,000 / 10,000 / end (best)", "FID fresh min / median / max",
                  "fresh FID vs fresh coverage, precision (correlation)", "max abs energy, max grad norm after the first evaluation",
                  "train min"]


def curve(workdir: Path) -> list[dict]:
  """Each evaluation of a train.ebm run: step, buffer and fresh FIDs, buffer recall, the largest |energy| and
  gradient norm of the steps since the evaluation before, and the loop's minutes up to it (the sum of its steps'
  1/steps_per_sec: evaluations, checkpoints and a resumed process's compilation in; the first step's compilation
  and the time between sessions out). A resumed run's repeated steps count once (the last)."""
  rows = {}
  for r in loop.read_metrics(workdir):
    rows.setdefault(r["step"], {}).update(r)
  out, energy, grad, minutes = [], 0.0, 0.0, 0.0
  for step in sorted(rows):
    r = rows[step]
    if "steps_per_sec" in r and step > 1:   # step 1: compilation
      minutes += 1.0 / r["steps_per_sec"] / 60
    energy = max(energy, abs(r.get("energy_real", 0.0)), abs(r.get("energy_fake", 0.0)))
    grad = max(grad, r.get("grad_norm", 0.0))
    if "fid_fmnist_buffer" in r:
      out.append(dict(step=step, minutes=minutes, buffer=r["fid_fmnist_buffer"], fresh=r["fid_fmnist_fresh"],
                      recall=r.get("recall_fmnist_buffer"), energy=energy, grad=grad,
                      **{f"fresh_{m}": r.get(f"{m}_fmnist_fresh") for m in ("precision", "recall", "coverage")}))
      energy = grad = 0.0
  return out


def table_rows(runs: dict) -> list[list]:
  number = lambda v: "-" if v is None else f"{v:.3f}"
  return [[key, e["step"], f"{e['minutes']:.1f}", f"{e['buffer']:.1f}", f"{e['fresh']:.1f}", number(e["recall"]),
           " / ".join(number(e.get(f"fresh_{m}")) for m in ("precision", "recall", "coverage")),
           f"{e['energy']:.3g}", f"{e['grad']:.3g}"]
          for key, run in runs.items() for e in run.get("curve", [])]


def summary_rows(runs: dict) -> list[list]:
  """Per run of at least 3 evaluations: where the buffer's FID went (at steps 1,000 and 10,000, at the end, best),
  the spread of the fresh chains' FID over the evaluations, how that FID moves with the fresh samples' coverage
  and precision over them (Pearson correlation; "-" where a series is missing or constant: a fresh FID that rises
  as coverage falls and precision rises is chains piling into few modes, not worse images), the largest |energy|
  and gradient norm after the first evaluation (whose steps start from an untrained net), and the train minutes."""

  def corr(c, fresh, m):
    series = [e.get(f"fresh_{m}") for e in c]
    if None in series or np.std(series) == 0 or np.std(fresh) == 0:
      return "-"
    return f"{np.corrcoef(fresh, series)[0, 1]:+.2f}"

  rows = []
  for key, run in runs.items():
    c = run.get("curve", [])
    if len(c) < 3:
      continue
    fresh = np.array([e["fresh"] for e in c])
    at = {e["step"]: e["buffer"] for e in c}
    rows.append([key, c[-1]["step"],
                 " / ".join(f"{at[s]:.1f}" if s in at else "-" for s in (1000, 10000)) + f" / {c[-1]['buffer']:.1f}"
                 f" ({min(at.values()):.1f})", f"{fresh.min():.1f} / {np.median(fresh):.1f} / {fresh.max():.1f}",
                 f"{corr(c, fresh, 'coverage')}, {corr(c, fresh, 'precision')}", f"{max(e['energy'] for e in c[1:]):.3g}, "
                 f"{max(e['grad'] for e in c[1:]):.3g}", f"{c[-1]['minutes']:.1f}"])
  return rows


def plot(path: Path, runs: dict) -> None:
  """FID of the buffer (solid) and of fresh chains from noise (dashed; train.ebm's --fresh-steps) against steps
  and train minutes, per run."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=100)
  for i, (key, run) in enumerate(runs.items()):
    c = run.get("curve", [])
    for ax, x in zip(axes, ([e["step"] for e in c], [e["minutes"] for e in c])):
      ax.plot(x, [e["buffer"] for e in c], "-", color=f"C{i}", label=f"{key} buffer")
      ax.plot(x, [e["fresh"] for e in c], "--", color=f"C{i}", label=f"{key} fresh")
  for ax, xlabel in zip(axes, ("training step", "train minutes (2-core CPU)")):
    ax.set_xlabel(xlabel)
    ax.set_ylabel("FID-FMNIST (500 samples)")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  axes[0].set_title("EBM main job run long: replay buffer and fresh chains from noise", fontsize=9)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path)
  plt.close(fig)


def host() -> str:
  """The CPU this study runs on (benchmarks.common.machine without its JAX device count: this process's, not that
  of the train.ebm processes it starts)."""
  return machine().rsplit(" (", 1)[0]


def train_runs(todo, argv_of, extra, results, prog) -> tuple[int, set]:
  """Trains each pending (name, seed) in turn: (exit status, keys trained). A run that fails (train.ebm's own line
  said why: divergence, a fault) is recorded as stopped with its exit status and the next run goes on; bad flags
  (exit 2) end the study at once; Ctrl-C or SIGTERM, to the study or to train.ebm, end it after train.ebm has
  saved (the run resumes next time: not recorded as stopped)."""
  trained = set()
  for name, seed in todo:
    key = f"{name}/{seed}"
    trained.add(key)
    try:
      common.run_program("ebm", argv_of(name, seed) + extra)
    except common.ProgramFailed as e:
      code = e.returncode
      if code == 2:
        return 2, trained
      if code in (130, 143):   # train.ebm was stopped (SIGINT, SIGTERM) and saved: it resumes, it did not fail
        return 130, trained
      print(f"{prog}: {key} stopped: {e}", file=sys.stderr)
      results["runs"].setdefault(key, {})["stopped"] = f"exit {code}"
    except KeyboardInterrupt:
      return 130, trained
  return 0, trained


def record(results, names, seeds, args, argv_of, trained) -> None:
  """Reads each run folder's curve into results["runs"]; a run's flags, date and hosts change only when this call
  trained it (or it is new), so --collect refreshes curves without relabelling them."""
  for name in names:
    for seed in seeds:
      key, workdir = f"{name}/{seed}", Path(args.root) / f"{name}-s{seed}"
      if not (workdir / "metrics.jsonl").exists():
        continue
      c, old = curve(workdir), results["runs"].get(key, {})
      run = dict(old) if old.get("argv") and key not in trained else {
          **old, "argv": argv_of(name, seed), "machines": sorted({*old.get("machines", []), host()}),
          "jax": jax.__version__, "date": time.strftime("%Y-%m-%d")}
      run.update(finished=bool(c) and c[-1]["step"] >= args.steps, curve=c)
      results["runs"][key] = run


def main(argv=None) -> int:
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--recipes", default="main", help="comma-separated, of: " + "; ".join(
      f"{name} ({' '.join(common.flag_argv(flags))})" for name, flags in RECIPES.items()))
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--steps", type=int, default=20000, help="train steps of each run")
  p.add_argument("--fid-every", type=int, default=1000)
  p.add_argument("--max-runs", type=int, default=0, help="train at most this many runs in this call (0: all)")
  p.add_argument("--collect", action="store_true", help="train nothing: only read the runs' curves")
  p.add_argument("--root", default="runs/ebm_long", help="folder of the runs' workdirs")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--json", default="benchmarks/results/ebm_long.json")
  p.add_argument("--png", default="docs", help="folder for ebm_long.png")
  p.add_argument("--results-md", default=None, help="a README with <!-- ebm_long:begin/end --> markers to rewrite")
  p.add_argument("--train-flags", default="", help="extra train.ebm flags for every run, e.g. '--channels 4'")
  args = p.parse_args(argv)
  names = p.comma_list("--recipes", args.recipes, of=str, choices=list(RECIPES))
  seeds = p.comma_list("--seeds", args.seeds)
  if args.steps < 1 or args.fid_every < 1 or args.max_runs < 0:
    p.error("--steps and --fid-every must be positive, --max-runs >= 0")
  out = Path(args.json)
  results = json.loads(out.read_text()) if out.exists() else {"runs": {}}
  extra = ["--data-dir", args.data_dir] if args.data_dir else []   # not recorded: where the data is, not the run

  def argv_of(name, seed):
    flags = dict(workdir=str(Path(args.root) / f"{name}-s{seed}"), seed=seed, steps=args.steps,
                 fid_every=args.fid_every, progress=False, tensorboard=False, **RECIPES[name])
    return [*common.flag_argv(flags), *args.train_flags.split()]

  done = {k: r for k, r in results["runs"].items() if r.get("finished") or r.get("stopped")}
  todo = [] if args.collect else common.pending_runs(names, seeds, done, argv_of, args.max_runs)
  previous = signal.signal(signal.SIGTERM, signal.default_int_handler)   # SIGTERM as Ctrl-C: stop, save, collect
  try:
    status, trained = train_runs(todo, argv_of, extra, results, p.prog)
  finally:
    signal.signal(signal.SIGTERM, previous)
  if status == 2:
    return 2   # train.ebm said which flag, in its one line; nothing was trained, nothing is rewritten
  record(results, names, seeds, args, argv_of, trained)
  defining = {"--recipes": args.recipes, "--steps": args.steps, "--fid-every": args.fid_every,
              "--train-flags": args.train_flags}   # what makes the runs (not --max-runs, --collect or where it writes)
  words = [w for k, v in defining.items() if v != p.get_default(k[2:].replace("-", "_")) for w in (k, str(v))]
  results.update(command=shlex.join(["python", "-m", "benchmarks.studies.ebm.ebm_long", *words]),
                 machine=host(), jax=jax.__version__, date=time.strftime("%Y-%m-%d"), header=HEADER,
                 rows=table_rows(results["runs"]))
  summary = summary_rows(results["runs"])
  results["summary"] = "Per run:\n\n" + table(SUMMARY_HEADER, summary) if summary else ""
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=1))
  if results["runs"]:
    plot(Path(args.png) / "ebm_long.png", results["runs"])
  for key, run in results["runs"].items():
    c = run.get("curve", [])
    best = min(c, key=lambda e: e["buffer"]) if c else None
    print(f"{key}: {c[-1]['step'] if c else 0} steps" + (f", buffer FID {c[-1]['buffer']:.1f} (best {best['buffer']:.1f}"
          f" at {best['step']}), fresh {c[-1]['fresh']:.1f}, {c[-1]['minutes']:.0f} train min" if c else ""))
  if args.results_md:
    status = status or common.update_results_md(out, "ebm_long", args.results_md, note_key="summary")
  return status


if __name__ == "__main__":
  sys.exit(main())
