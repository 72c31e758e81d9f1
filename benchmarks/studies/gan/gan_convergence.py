"""Does one loss train a GAN as well as alternating updates, at convergence, per step and per second (issue 16)?

    python -m benchmarks.studies.gan.gan_convergence                         # every variant, 3 seeds, 20,000 steps
    python -m benchmarks.studies.gan.gan_convergence --variants single,alternating --seeds 0 --max-runs 1

Each variant is a set of train.gan flags (VARIANTS). Every run keeps an EMA of G (decay 0.999) and logs FID-FMNIST
of --fid-samples samples from G itself and from its EMA every --fid-every steps, so "with and without EMA" come
from the same run. Training seconds at each evaluation are the sum of the loop's per-step times up to it (FID
evaluations and checkpoints excluded), which is what "per second" compares: the single loss gets its cheaper steps.
Finished runs are kept in the committed results file (benchmarks/results/gan_convergence.json) and not redone, so
a study started in one session continues in the next; the run folders (runs/gan_convergence/) resume a run cut
off within a session. Each call draws docs/gan_convergence.png (FID vs steps and vs seconds: mean over seeds, band
min..max); `--results-md` trains nothing: it rewrites the table, the picture and the copy of the table in this study's README.md
(between its gan_convergence markers) from the results file alone.

Per second: the loop's own seconds depend on what else ran on the machine during each run, so the study's "per
second" axis is steps x each variant's step time measured with `--time` — every variant's jitted step (compiled as
train.gan compiles it: XLA's own CPU convolutions, EMA update included) on one batch, in one process, calls
interleaved (median of --repeats), recorded in the results file beside the runs:

    python -m benchmarks.studies.gan.gan_convergence --time --repeats 30     # no training; run it on a quiet machine

The verdict between variants is a test of the difference of final FID (EMA) against alternating over every recorded
run (`difference`: Welch's t-test with its 95% interval, and Mann-Whitney U), not a per-seed ranking: GAN runs are
not bitwise portable across CPU models, so the spread must include the hosts'. The table counts each variant's runs
per CPU model; a second host adds runs with other seeds (`--seeds 5,6,7,8,9`), and the table pools them all.
"""

import functools
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import ArgumentParser, machine, table, time_interleaved, write_results
from benchmarks.studies.common import flag_argv, pending_runs, slug, train, update_results_md
from jaxtricks import gan, loop, parallel
from jaxtricks.models.dcgan import Discriminator, Generator

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
# variant id (what --variants takes) -> its display label: VARIANTS' key, which names it in the table, in the
# results file's run keys ("label/seed") and in its run folders (common.slug)
IDS = {"alternating": "alternating", "single": "single",
       "single_ttur": "single, two time scales (lr D 4e-4, G 1e-4)",
       "single_optimistic_adam": "single, optimistic Adam",
       "single_lambda2": "single, lambda 2, Adam eps 1e-3"}
DEFAULT = list(IDS)
ALL = [IDS[v] for v in DEFAULT]   # the table's rows: every variant, whichever a call trains
MODULE = "benchmarks.studies.gan.gan_convergence"


def step_seconds(names, *, width: int, batch: int = 64, z_dim: int = 100, ema_decay: float = 0.999,
                 repeats: int = 20) -> dict[str, float]:
  """{variant: median seconds of its train step}, all compiled as train.gan compiles its step and timed in this
  process with calls interleaved (common.time_interleaved) on one Fashion-MNIST-shaped batch."""
  generator, discriminator = Generator(image_shape=(28, 28, 1), width=width), Discriminator(width=width)
  options = parallel.cpu_compiler_options(ynn_convolutions=False)
  key = jax.random.key(0)
  x = jax.random.uniform(key, (batch, 28, 28, 1), minval=-1.0, maxval=1.0)
  fns = {}
  for name in names:
    v = {"lr_g": 2e-4, "lr_d": 2e-4, "lam": 1.0, "adam_eps": 1e-8, "optimizer": "adam", **VARIANTS[name]}
    tx = gan.adam_players(lr_g=v["lr_g"], lr_d=v["lr_d"], b1=0.5, eps=v["adam_eps"],
                          optimistic=v["optimizer"] == "optimistic_adam")
    step = functools.partial(gan.train_step, mode=v["mode"],
                             generator=generator, discriminator=discriminator, tx=tx, z_dim=z_dim, lam=v["lam"],
                             ema_decay=ema_decay)
    jitted = jax.jit(lambda state, x, key, step=step: step(state, x, key)[0], donate_argnums=0,
                     **({"compiler_options": options} if options else {}))
    carry = [gan.with_ema(gan.init(key, generator, discriminator, (1, z_dim), (1, 28, 28, 1), tx))]

    def call(jitted=jitted, carry=carry):
      carry[0] = jitted(carry[0], x, key)
      return carry[0].params
    fns[name] = call
  return time_interleaved(fns, repeats=repeats, warmup=3)


def curve(workdir: Path) -> dict:
  """FID (G and EMA) and training seconds at each evaluation of a finished train.gan run."""
  records = loop.read_metrics(workdir)
  seconds, elapsed = {}, 0.0
  for r in records:
    if "steps_per_sec" in r and r["step"] > 1:   # step 1: compilation
      elapsed += 1.0 / r["steps_per_sec"]
    seconds[r["step"]] = elapsed
  evals = [r for r in records if "fid_fmnist" in r]
  out = {"step": [r["step"] for r in evals], "seconds": [seconds.get(r["step"], elapsed) for r in evals],
         "fid": [r["fid_fmnist"] for r in evals], "fid_ema": [r.get("fid_fmnist_ema") for r in evals]}
  last = evals[-1] if evals else {}
  for metric in BEYOND:   # the EMA's scores beside FID at the last evaluation, where train.gan logged them
    if f"{metric}_fmnist_ema" in last:
      out[f"{metric}_ema"] = last[f"{metric}_fmnist_ema"]
  return out


BEYOND = ("kid", "precision", "recall")   # train.gan's scores beside FID (since 2026-12-04) the table shows


def beyond_fid(done: list[dict]) -> str:
  """KID, precision and recall of the EMA at the end, mean over the runs that logged them (and how many did)."""
  have = [r for r in done if all(f"{m}_ema" in r for m in BEYOND)]
  if not have:
    return "not logged"
  return (" / ".join(f"{np.mean([r[f'{m}_ema'] for r in have]):.{1 if m == 'kid' else 3}f}" for m in BEYOND)
          + f" ({len(have)} runs)")


def summarize(names, seeds, runs, timing=None):
  """Table rows; `timing`: the results file's {"ms": {variant: ms per step}, ...} from --time, or None. Per second:
  each variant's final FID (EMA) beside alternating's mean FID (EMA) after as many seconds (its curve on steps x
  its step time, interpolated); the issue's goal: mean final FID (EMA) inside alternating's seed range (min..max)
  or below it, at <= 0.9x its seconds."""
  ms = (timing or {}).get("ms", {})
  header = ["variant", "final FID (G)", "final FID (EMA of G)", "best FID (EMA) and its step",
            "ms per step (interleaved)", "step time vs alternating", "train s to the last step (steps x ms)",
            "alternating's FID (EMA) after as many seconds",
            "goal: in (or below) alternating's range at <= 0.9x its time",
            "loop s per step (shared machine)", "KID / precision / recall (EMA), end", "hosts", "seeds"]
  alt = recorded_runs(runs, "alternating")
  alt_final = [r["fid_ema"][-1] for r in alt]
  rows = []
  for name in names:
    done = recorded_runs(runs, name)
    if not done:
      rows.append([name, "not run yet", *[""] * (len(header) - 3), 0])
      continue
    fin = [r["fid"][-1] for r in done]
    ema = [r["fid_ema"][-1] for r in done]
    best = [min(zip(r["fid_ema"], r["step"])) for r in done]
    sd = lambda v: np.std(v, ddof=1) if len(v) > 1 else 0.0
    secs = [r["seconds"][-1] for r in done]
    steps = done[0]["step"][-1]
    t, t_alt = ms.get(name), ms.get("alternating")
    same_time = goal = ""
    if t and t_alt and alt and name != "alternating":
      n = min(len(r["step"]) for r in alt)
      alt_secs = np.array(alt[0]["step"][:n]) * t_alt / 1e3
      alt_mean = np.mean([r["fid_ema"][:n] for r in alt], 0)
      if alt_secs[0] <= steps * t / 1e3 <= alt_secs[-1]:
        same_time = f"{np.interp(steps * t / 1e3, alt_secs, alt_mean):.1f}"
      inside = np.mean(ema) <= max(alt_final)   # in alternating's seed range, or below (better than) it
      goal = (("yes" if inside and t <= 0.9 * t_alt else "no") if min(len(done), len(alt)) >= len(seeds) else
              f"after {len(seeds)} seeds of both")
    rows.append([name, f"{np.mean(fin):.1f} ± {sd(fin):.1f}", f"{np.mean(ema):.1f} ± {sd(ema):.1f}",
                 " ".join(f"{f:.1f}@{s}" for f, s in best), f"{t:.2f}" if t else "",
                 f"{t / t_alt:.2f}x" if t and t_alt else "", f"{t * steps / 1e3:.0f}" if t else "", same_time, goal,
                 f"{np.mean(secs) / steps:.3f}", beyond_fid(done), hosts(done), len(done)])
  return header, rows


def recorded_runs(runs: dict, name: str) -> list[dict]:
  """Every recorded run of variant `name` (keys "name/seed"), seeds in order, from whichever host ran them."""
  keys = sorted((k for k in runs if k.rsplit("/", 1)[0] == name), key=lambda k: int(k.rsplit("/", 1)[1]))
  return [runs[k] for k in keys]


def hosts(done: list[dict]) -> str:
  """The hosts that ran the runs (the CPU model and its vector and matrix extensions, as benchmarks.common.machine
  names them), with their counts ("AMD EPYC, AVX2, AVX-512, AVX-512 BF16 x3")."""
  kinds = [r.get("machine", "?").split(" CPU,")[0] for r in done]
  return ", ".join(f"{k} x{kinds.count(k)}" for k in dict.fromkeys(kinds))


def difference(runs: dict, name: str, against: str = "alternating") -> dict | None:
  """Final FID (EMA) of `name` minus `against`'s over all their recorded runs (seeds and hosts pooled): the mean
  difference with Welch's 95% interval, Welch's t-test and the Mann-Whitney U test (two-sided, scipy.stats). A
  verdict rests on this, not on a per-seed ranking: GAN runs are not bitwise portable across CPU models, so the
  spread has to include the hosts'. None with fewer than 2 runs of either."""
  from scipy import stats
  a = np.array([r["fid_ema"][-1] for r in recorded_runs(runs, name)])
  b = np.array([r["fid_ema"][-1] for r in recorded_runs(runs, against)])
  if min(len(a), len(b)) < 2:
    return None
  welch = stats.ttest_ind(a, b, equal_var=False)
  low, high = welch.confidence_interval(0.95)
  return {"variant": name, "against": against, "n": [len(a), len(b)], "difference": float(a.mean() - b.mean()),
          "ci95": [float(low), float(high)], "welch_t": float(welch.statistic), "welch_df": float(welch.df),
          "welch_p": float(welch.pvalue), "mann_whitney_p": float(stats.mannwhitneyu(a, b).pvalue),
          "hosts": [hosts(recorded_runs(runs, name)), hosts(recorded_runs(runs, against))]}


def difference_line(d: dict) -> str:
  """One sentence of `difference`'s result."""
  return (f"{d['variant']} - {d['against']}, final FID (EMA): {d['difference']:+.1f} (95% CI {d['ci95'][0]:+.1f} to "
          f"{d['ci95'][1]:+.1f}); Welch t = {d['welch_t']:.2f} (df {d['welch_df']:.1f}), p = {d['welch_p']:.3f}; "
          f"Mann-Whitney p = {d['mann_whitney_p']:.3f}; runs {d['n'][0]} ({d['hosts'][0]}) and {d['n'][1]} "
          f"({d['hosts'][1]})")


def plot(path: Path, names, runs, title: str, timing=None) -> None:
  """FID vs steps and vs training seconds: steps x the variant's interleaved step time where --time measured it,
  else the loop's own seconds (mean over seeds)."""
  ms = (timing or {}).get("ms", {})
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
      steps = np.array(done[0]["step"][:n])
      secs = steps * ms[name] / 1e3 if name in ms else np.mean([r["seconds"][:n] for r in done], 0)
      for ax, x in zip(axes, (steps, secs)):
        ax.plot(x, fid.mean(0), style, color=f"C{i}",
                label=f"{name}{' (EMA)' if key == 'fid_ema' else ''}, {len(done)} seeds")
        ax.fill_between(x, fid.min(0), fid.max(0), color=f"C{i}", alpha=0.12)
  seconds_label = ("training seconds (steps x step time, interleaved)" if ms else
                   "training seconds (loop only, mean over seeds)")
  for ax, xlabel in zip(axes, ("train step", seconds_label)):
    ax.set_xlabel(xlabel)
    ax.set_ylabel("FID-FMNIST")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
  fig.suptitle(title, fontsize=9)
  axes[1].legend(fontsize=6, loc="upper right")
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path)
  plt.close(fig)


def timing_of(args, names, argv, timing) -> dict:
  """--time: every variant's step time (interleaved, one process), merged into the recorded `timing`."""
  t = step_seconds(names, width=args.width, ema_decay=args.ema_decay, repeats=args.repeats)
  return {"ms": {**(timing or {}).get("ms", {}), **{n: 1e3 * v for n, v in t.items()}}, "width": args.width,
          "batch": 64, "repeats": args.repeats, "argv": sys.argv[1:] if argv is None else argv,
          "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine()}


def flags_of(args, name: str, seed: int) -> dict:
  """train.gan's flags of variant `name`'s run of `seed` with the study's settings (`args`)."""
  data = {"data_dir": args.data_dir} if args.data_dir else {}
  return dict(steps=args.steps, width=args.width, seed=seed, fid_every=args.fid_every,
              fid_samples=args.fid_samples, ema_decay=args.ema_decay, sample_every=args.steps,
              checkpoint_every=500, progress=False, tensorboard=False, **data, **VARIANTS[name])


def comparable(runs: dict, args) -> dict:
  """The recorded runs made with the study's settings of this call (`args`: steps, width, FID evaluations, EMA;
  where the data was read from aside): the runs the table and the test of differences pool, whichever variants
  this call trains."""
  def settings(argv):
    return [w for i, w in enumerate(argv) if w != "--data-dir" and (i == 0 or argv[i - 1] != "--data-dir")]
  out = {}
  for key, run in runs.items():
    name, seed = key.rsplit("/", 1)
    if name in VARIANTS and settings(run.get("argv", [])) == settings(flag_argv(flags_of(args, name, int(seed)))):
      out[key] = run
  return out


def record(out: Path, argv, args, seeds, runs, timing) -> tuple[list[str], list[list]]:
  """Writes the results file: every run, and the table and test of differences of the comparable ones (of every
  variant, not only those this call trains); returns the table."""
  kept = comparable(runs, args)
  header, rows = summarize(ALL, seeds, kept, timing)
  write_results(out, MODULE, argv, header, rows, runs=runs, timing=timing, steps=args.steps, width=args.width,
                **differences(ALL, kept))
  return header, rows


def train_runs(args, names, seeds, runs, timing, out: Path, argv) -> tuple[list[str], list[list]]:
  """Trains the runs the results file lacks (common.pending_runs), rewriting it after each; the table."""
  header, rows = summarize(ALL, seeds, comparable(runs, args), timing)
  for name, seed in pending_runs(names, seeds, runs, lambda n, s: flag_argv(flags_of(args, n, s)), args.max_runs):
    workdir = Path(args.root) / f"{slug(name)}-w{args.width}-n{args.steps}-s{seed}"
    t0 = time.perf_counter()
    train("gan", workdir=workdir, **flags_of(args, name, seed))
    key = f"{name}/{seed}"
    runs[key] = {**curve(workdir), "argv": flag_argv(flags_of(args, name, seed)), "wall_s": time.perf_counter() - t0,
                 "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine()}
    print(f"{name} seed {seed}: FID {runs[key]['fid'][-1]:.1f} (EMA {runs[key]['fid_ema'][-1]:.1f})", flush=True)
    header, rows = record(out, argv, args, seeds, runs, timing)
  return header, rows


def differences(names, runs) -> dict:
  """write_results' fields for each variant's `difference` from alternating: the results, and their sentences
  (the "note" under the table in README and docs/results.md)."""
  found = [d for d in (difference(runs, name) for name in names if name != "alternating") if d]
  return {"differences": found, "note": "\n".join(f"- {difference_line(d)}" for d in found)} if found else {}


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variants", default="", help=f"comma-separated variant ids, of {', '.join(IDS)}; default all")
  p.add_argument("--steps", type=int, default=20000)
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
  p.add_argument("--time", action="store_true",
                 help="train nothing: time every variant's step (interleaved, one process) and record it")
  p.add_argument("--repeats", type=int, default=20, help="with --time: timed calls of each step")
  p.add_argument("--results-md", action="store_true",
                 help="train nothing: the table and picture from the results file, and its copy in README.md")
  args = p.parse_args(argv)
  names = p.comma_list("--variants", args.variants or ",".join(DEFAULT), of=str, choices=IDS)
  seeds = p.comma_list("--seeds", args.seeds)
  out = Path(args.out) / "gan_convergence.json"
  recorded = json.loads(out.read_text()) if out.exists() else {}
  runs, timing = recorded.get("runs", {}), recorded.get("timing")
  if args.time or args.results_md:   # no training; the table's command stays the study's
    timing = timing_of(args, names, argv, timing) if args.time else timing
    header, rows = record(out, recorded.get("argv", []), args, seeds, runs, timing)
  else:
    # the file's command stays the study's first (a call that adds seeds or a host's runs is not the table's)
    header, rows = train_runs(args, names, seeds, runs, timing, out, recorded.get("argv", argv))
  kept = comparable(runs, args)
  if runs:
    plot(Path(args.png) / "gan_convergence.png", ALL, kept,
         f"DCGAN width {args.width}, batch 64, FID-FMNIST of {args.fid_samples} samples — {machine()}", timing)
  print(f"GAN to {args.steps} steps, width {args.width}, seeds {args.seeds} — {machine()}")
  print(table(header, rows))
  for d in differences(ALL, kept).get("differences", []):
    print(difference_line(d))
  return (update_results_md(out, "gan_convergence", Path(__file__).parent / "README.md", note_key="note")
          if args.results_md else 0)


if __name__ == "__main__":
  sys.exit(main())
