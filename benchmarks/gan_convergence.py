"""Does one loss train a GAN as well as alternating updates, at convergence, per step and per second (issue 16)?

    python -m benchmarks.gan_convergence                         # every variant, 3 seeds, 10,000 steps
    python -m benchmarks.gan_convergence --variants "single;alternating" --seeds 0 --max-runs 1

Each variant is a set of train.gan flags (VARIANTS). Every run keeps an EMA of G (decay 0.999) and logs FID-FMNIST
of --fid-samples samples from G itself and from its EMA every --fid-every steps, so "with and without EMA" come
from the same run. Training seconds at each evaluation are the sum of the loop's per-step times up to it (FID
evaluations and checkpoints excluded), which is what "per second" compares: the single loss gets its cheaper steps.
Finished runs are kept in the committed results file (benchmarks/results/gan_convergence.json) and not redone, so
a study started in one session continues in the next; the run folders (runs/gan_convergence/) resume a run cut
off within a session. `--plot` writes docs/gan_convergence.png (FID vs steps and vs seconds: mean over seeds, band
min..max) from the results file alone.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import flag_argv, machine, pending_runs, table, train, write_results
from jaxtricks import loop

VARIANTS = {
    "alternating": {"mode": "alternating"},
    "single": {"mode": "single"},
    # two time scales: D 4x faster than G (Heusel et al. 2017's TTUR ratio)
    "single, two time scales (lr D 4e-4, G 1e-4)": {"mode": "single", "lr_d": 4e-4, "lr_g": 1e-4},
    # optimism: optax.optimistic_adam on both players (extrapolation from the saved last update)
    "single, optimistic Adam": {"mode": "single", "optimizer": "optimistic_adam"},
    # lambda > 1 where Adam's epsilon is large enough for the scale of G's gradient to matter
    "single, lambda 2, Adam eps 1e-3": {"mode": "single", "lam": 2.0, "adam_eps": 1e-3},
}
DEFAULT = ["alternating", "single", "single, two time scales (lr D 4e-4, G 1e-4)", "single, optimistic Adam",
           "single, lambda 2, Adam eps 1e-3"]


def slug(name: str) -> str:
  return "-".join("".join(c if c.isalnum() else " " for c in name).split())


def curve(workdir: Path) -> dict:
  """FID (G and EMA) and training seconds at each evaluation of a finished train.gan run."""
  records = loop.read_metrics(workdir)
  seconds, elapsed = {}, 0.0
  for r in records:
    if "steps_per_sec" in r and r["step"] > 1:   # step 1: compilation
      elapsed += 1.0 / r["steps_per_sec"]
    seconds[r["step"]] = elapsed
  evals = [r for r in records if "fid_fmnist" in r]
  return {"step": [r["step"] for r in evals], "seconds": [seconds.get(r["step"], elapsed) for r in evals],
          "fid": [r["fid_fmnist"] for r in evals], "fid_ema": [r.get("fid_fmnist_ema") for r in evals]}


def summarize(names, seeds, runs):
  header = ["variant", "final FID (G)", "final FID (EMA of G)", "best FID (EMA) and its step", "train s per run",
            "s per step", "seeds"]
  rows = []
  for name in names:
    done = [runs[f"{name}/{s}"] for s in seeds if f"{name}/{s}" in runs]
    if not done:
      rows.append([name, "not run yet", "", "", "", "", 0])
      continue
    fin = [r["fid"][-1] for r in done]
    ema = [r["fid_ema"][-1] for r in done]
    best = [min(zip(r["fid_ema"], r["step"])) for r in done]
    sd = lambda v: np.std(v, ddof=1) if len(v) > 1 else 0.0
    secs = [r["seconds"][-1] for r in done]
    rows.append([name, f"{np.mean(fin):.1f} ± {sd(fin):.1f}", f"{np.mean(ema):.1f} ± {sd(ema):.1f}",
                 " ".join(f"{f:.1f}@{s}" for f, s in best), f"{np.mean(secs):.0f}",
                 f"{np.mean(secs) / done[0]['step'][-1]:.3f}", len(done)])
  return header, rows


def plot(path: Path, names, runs, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=100)
  for i, name in enumerate(names):
    done = [r for k, r in runs.items() if k.rsplit("/", 1)[0] == name]
    if not done:
      continue
    n = min(len(r["step"]) for r in done)
    for key, style in (("fid", "--"), ("fid_ema", "-")):
      fid = np.array([r[key][:n] for r in done], float)
      for ax, x in zip(axes, (np.array(done[0]["step"][:n]), np.mean([r["seconds"][:n] for r in done], 0))):
        ax.plot(x, fid.mean(0), style, color=f"C{i}",
                label=f"{name}{' (EMA)' if key == 'fid_ema' else ''}, {len(done)} seeds")
        ax.fill_between(x, fid.min(0), fid.max(0), color=f"C{i}", alpha=0.12)
  for ax, xlabel in zip(axes, ("train step", "training seconds (loop only, mean over seeds)")):
    ax.set_xlabel(xlabel)
    ax.set_ylabel("FID-FMNIST")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
  axes[0].set_title(title, fontsize=8)
  axes[1].legend(fontsize=6, loc="upper right")
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path)
  plt.close(fig)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variants", default="", help="semicolon-separated names of VARIANTS; default all")
  p.add_argument("--steps", type=int, default=10000)
  p.add_argument("--width", type=int, default=16)
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--fid-every", type=int, default=1250)
  p.add_argument("--fid-samples", type=int, default=5000)
  p.add_argument("--ema-decay", type=float, default=0.999)
  p.add_argument("--data-dir", default="")
  p.add_argument("--root", default="runs/gan_convergence")
  p.add_argument("--out", default="benchmarks/results")
  p.add_argument("--png", default="docs")
  p.add_argument("--max-runs", type=int, default=0, help="train at most this many runs (0: all)")
  args = p.parse_args(argv)
  names = [n.strip() for n in args.variants.split(";") if n.strip()] or DEFAULT
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    p.error(f"--variants: unknown {unknown}; known: {list(VARIANTS)}")
  seeds = [int(s) for s in args.seeds.split(",")]
  out = Path(args.out) / "gan_convergence.json"
  runs = json.loads(out.read_text()).get("runs", {}) if out.exists() else {}
  header, rows = summarize(names, seeds, runs)
  data = {"data_dir": args.data_dir} if args.data_dir else {}

  def flags_of(name, seed):
    return dict(steps=args.steps, width=args.width, seed=seed, fid_every=args.fid_every,
                fid_samples=args.fid_samples, ema_decay=args.ema_decay, sample_every=args.steps,
                checkpoint_every=500, progress=False, tensorboard=False, **data, **VARIANTS[name])

  for name, seed in pending_runs(names, seeds, runs, lambda n, s: flag_argv(flags_of(n, s)), args.max_runs):
    workdir = Path(args.root) / f"{slug(name)}-w{args.width}-n{args.steps}-s{seed}"
    t0 = time.perf_counter()
    train("gan", workdir=workdir, **flags_of(name, seed))
    key = f"{name}/{seed}"
    runs[key] = {**curve(workdir), "argv": flag_argv(flags_of(name, seed)), "wall_s": time.perf_counter() - t0,
                 "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine()}
    print(f"{name} seed {seed}: FID {runs[key]['fid'][-1]:.1f} (EMA {runs[key]['fid_ema'][-1]:.1f})", flush=True)
    header, rows = summarize(names, seeds, runs)
    write_results(out, "benchmarks.gan_convergence", argv, header, rows, runs=runs, steps=args.steps,
                  width=args.width)
  if runs:
    plot(Path(args.png) / "gan_convergence.png", names, runs,
         f"DCGAN width {args.width}, batch 64, FID-FMNIST of {args.fid_samples} samples — {machine()}")
  print(f"GAN to {args.steps} steps, width {args.width}, seeds {args.seeds} — {machine()}")
  print(table(header, rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())
