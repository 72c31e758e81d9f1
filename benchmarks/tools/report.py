"""docs/results.md's tables, written from the committed result files: no hand-edited numbers.

    python -m benchmarks.tools.report           # rewrites docs/results.md between the results markers
    python -m benchmarks.tools.report --check   # exit 1 when docs/results.md is not what the result files give

Sources: benchmarks/results/*.json, each written by the benchmark named in it (its "command", shell-quoted, with
no local path: `--torch-python PY`), and the sample grids in docs/ (copied there from the runs named below by
`--grids`). A table whose file is missing is left out with a line saying which command makes it. A file of runs
(the peer timings, measured again on other days and hosts) shows the latest run of each machine; the study's
README keeps the older ones.
"""

import json
import shlex
import shutil
import sys
from pathlib import Path

from benchmarks.common import ArgumentParser, table
from benchmarks.studies.common import floor_at, fresh_chain_table, results_machines, run_machines

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
RESULTS_MD = DOCS / "results.md"
BEGIN, END = "<!-- results:begin (python -m benchmarks.tools.report) -->", "<!-- results:end -->"
HEADER = """# Results

Every table below is generated from the committed result files (`benchmarks/results/*.json`) by
`python -m benchmarks.tools.report`; a test keeps them in step. Each command is shell-quoted as run (`PY`: a
Python with PyTorch). The full text of each study, its verdict first and every older run, is in its README:
[EXACT](../benchmarks/studies/exact/README.md), [GAN](../benchmarks/studies/gan/README.md),
[EBM](../benchmarks/studies/ebm/README.md), [MobileNet](../benchmarks/studies/mobilenet/README.md),
[margin loss](../benchmarks/studies/margin/README.md), [sample metrics](../benchmarks/studies/metrics/README.md),
[speed](../benchmarks/speed/README.md).
"""

# (picture in docs/, the run file it is copied from by --grids, caption)
GRIDS = [
    ("gan_single_1500.png", "runs/gan_fid/single-w32-n1500-s0/samples_001500.png",
     "GAN, one loss (train.gan --mode single: the freeze form, one D forward on the fakes), 1,500 steps, seed 0 — `python -m benchmarks.studies.gan.gan_fid`"),
    ("gan_alternating_1500.png", "runs/gan_fid/alternating-w32-n1500-s0/samples_001500.png",
     "GAN, alternating updates, 1,500 steps, seed 0 — `python -m benchmarks.studies.gan.gan_fid`"),
    ("gan_alternating_w16_20000.png", "runs/gan_convergence/alternating-w16-n20000-s0/samples_020000.png",
     "GAN at convergence, alternating updates, width 16, 20,000 steps, samples of the EMA of G, seed 0 — `python -m benchmarks.studies.gan.gan_convergence`"),
    ("gan_single_w16_20000.png", "runs/gan_convergence/single-w16-n20000-s0/samples_020000.png",
     "GAN at convergence, one loss (the fused freeze form), width 16, 20,000 steps, samples of the EMA of G, seed 0 — `python -m benchmarks.studies.gan.gan_convergence`"),
    ("gan_cifar10_1000.png", "runs/gan_cifar10_cpu/samples_001000.png",
     "GAN on CIFAR-10 (32x32x3), one loss, width 32, samples of the EMA of G after 1,000 steps on the 2-core CPU, seed 0 — `" + shlex.join(["python", "-m", "train.gan", "--dataset", "cifar10", "--steps", "3000", "--width", "32", "--ema-decay", "0.999", "--sample-every", "1000", "--workdir", "runs/gan_cifar10_cpu"]) + "`"),
    ("gan_cifar10_3000.png", "runs/gan_cifar10_cpu/samples_003000.png",
     "The same run after 3,000 steps"),
    ("ebm_buffer_3000.png", None,
     "EBM replay buffer after 3,000 steps of the defaults until 2026-12-01 — `python -m train.ebm --recipe du2019 "
     "--steps 3000 --workdir runs/ebm-long`"),
]


def _load(name: str) -> dict | None:
  path = RESULTS / name
  return json.loads(path.read_text()) if path.exists() else None


def latest_per_machine(data: dict) -> list[dict]:
  """The runs of a file of runs (`{"runs": [...]}`, oldest first) to show: the latest of each machine, in the order
  of those runs; a file of one run: that run."""
  runs = data["runs"] if isinstance(data.get("runs"), list) else [data]
  latest = {run["machine"]: run for run in runs}
  return [run for run in runs if latest[run["machine"]] is run]


def _study(folder: str) -> str:
  """A link to a study's README (its verdict and full text), from docs/."""
  return f"[benchmarks/{folder}/README.md](../benchmarks/{folder}/README.md)"


def _table_section(title: str, name: str, make: str, note: str = "", note_key: str = "", picture: str = "",
                   study: str = "", floor: int = 0) -> str:
  """The table of results file `name`; `note_key`: a field of that file printed under the table; `picture`: a
  PNG in docs/ drawn by the same command, shown under the table when it exists; `study`: the folder whose README
  holds the verdict; `floor`: the sample count of the table's FIDs, whose real-data floor is printed under it."""
  data = _load(name)
  if data is None:
    return f"### {title}\n\nNot measured yet: {make} writes `benchmarks/results/{name}`.\n"
  note = data.get(note_key, "") if note_key else note
  note = "\n\n".join(part for part in (note, _floor(floor)) if part)
  shown = f"\n![{picture[:-4]}]({picture})\n" if picture and (DOCS / picture).exists() else ""
  more = f" Verdict and details: {_study(study)}." if study else ""
  return (f"### {title}\n\n`{data['command']}` — {results_machines(data)}, jax {data['jax']}, "
          f"{data['date']}.{more}\n\n"
          f"{table(data['header'], data['rows'])}\n" + (f"\n{note}\n" if note else "") + shown)


EXACT_TABLES = [
    ("mnist", "MNIST, the EXACT paper's row: its recipes on our small CNN (docs/techniques.md#exact)"),
    ("fashion_mnist", "Fashion-MNIST: every loss at convergence (docs/techniques.md#exact)"),
]


# what a reader of the table needs beside it (the measurements behind each sentence: the study's README)
EXACT_NOTES = {
    "mnist": "`ce (SGD lr 0.5, clip 10)` is the authors' CE learning rate: it killed this batch-norm-free CNN in 2 of "
             "3 seeds (every dense unit dead, every image called \"1\"); EXACT's recipe runs at the same rate because "
             "its gradient normalizer and logit batch-norm bound the first steps.",
    "fashion_mnist": "The learned-σ rows of `exact` (13%) and `exact_log_mean` (32%) are the "
                     "unscheduled form: σ, an 11th output trained on −E[p], goes to its floor and the gradient is "
                     "exactly 0 from step 165–233 on; EXACT as published (σ scheduled 10 → 1, margin, logit "
                     "batch-norm, gradient normalizer) is the `exact (published)` row. `soft_acc` seed 2 never learns "
                     "Trouser (its gradient vanishes for a class given up).",
}


def exact_tables() -> str:
  """Issue 14's tables (benchmarks.studies.exact.exact_table: each recipe several seeds until its test curve is flat)
  with their per-epoch pictures, which exact_table draws; the 2-epoch loss comparison they replace stays in the study's README."""
  parts = []
  for dataset, title in EXACT_TABLES:
    data = _load(f"exact_table_{dataset}.json")
    if data is None:
      make = shlex.join(["python", "-m", "benchmarks.studies.exact.exact_table", "--dataset", dataset])
      parts.append(f"### {title}\n\nNot measured yet: `{make}`.\n")
      continue
    picture = f"exact_table_{dataset}.png"
    parts.append(f"### {title}\n\n`{data['command']}`, jax {data['jax']} — runs on {run_machines(data['runs'])}; "
                 f"{data['epochs']:g} epochs, test accuracy after the last. Recipes and verdicts: "
                 f"{_study('studies/exact')}.\n\n"
                 + (f"![{dataset} test accuracy per epoch]({picture})\n\n" if (DOCS / picture).exists() else "")
                 + f"{table(data['header'], data['rows'])}\n"
                 + (f"\n{EXACT_NOTES[dataset]}\n" if dataset in EXACT_NOTES else ""))
  return "\n".join(parts)


def langevin_gpu() -> str:
  data = _load("langevin_gpu.json")
  title = "### Langevin chains on a GPU: JAX vs PyTorch eager (docs/techniques.md#ebm)"
  if data is None:
    return f"{title}\n\nNot measured yet: `bash benchmarks/tools/device_check.sh OUT DATA langevin` on a GPU machine.\n"
  cmp = data["compare"]
  rows = [[r[0], r[2], r[3], r[4], r[5]] for r in cmp["rows"]]
  return (f"{title}\n\n`{data['command']}` — {data['machine']}, jax {data['jax']}, {data['date']}. "
          f"{cmp['title']}. {data['flops_note']} Details: {_study('speed')}.\n\n"
          f"{table(['variant', 'ms per step', 'samples*steps/s', 'of matmul peak', 'speed vs PyTorch'], rows)}\n")


PEER_FILES = ["langevin_cpu_peers.json", "gan_step_peers.json", "ebm_step_peers.json"]
LAYOUT_FILES = ["cpu_devices.json", "cpu_devices_onednn.json", "cpu_devices_ynn.json"]


def _peer_run(run: dict) -> str:
  if "compare" in run:
    cmp = run["compare"]
    rows = [[r[0], r[2], r[3], r[5], r[6]] for r in cmp["rows"]]
    body = table(["variant", "ms per step", "samples*steps/s", "speed vs PyTorch eager", "vs best PyTorch float32"],
                 rows)
    note = cmp["title"]
  else:
    body, note = table(run["header"], run["rows"]), "; ".join(run.get("peers", []))
  return f"`{run['command']}` — {run['machine']}, jax {run['jax']}, {run['date']}. {note}\n\n{body}"


def cpu_peers() -> str:
  """Issue 18's CPU comparisons, the latest run of each machine (the VM's host and speed change from day to day;
  the older runs are in benchmarks/speed/README.md): Langevin chains, the GAN step and the EBM train step (issue
  35) against PyTorch, and each program's step on one XLA device vs one per core."""
  title = "### Speed against PyTorch on the CPU (docs/techniques.md#ebm, #gan)"
  peers = [d for d in map(_load, PEER_FILES) if d]
  layouts = [d for d in map(_load, LAYOUT_FILES) if d]
  if not peers and not layouts:
    make = shlex.join(["python", "-m", "benchmarks.speed.langevin", "--torch-python", "PY", "--json",
                       "benchmarks/results/langevin_cpu_peers.json"])
    return f"{title}\n\nNot measured yet: `{make}` (and gan_step, cpu_devices likewise).\n"
  parts = [f"{title}\n\nThe latest run on each machine; every run, with what changed between them: {_study('speed')}."]
  parts += [_peer_run(run) for data in peers for run in latest_per_machine(data)]
  parts += [f"`{run['command']}` — {run['machine']}, jax {run['jax']}, {run['date']}.\n\n"
            f"{table(run['header'], run['rows'])}" for data in layouts for run in latest_per_machine(data)]
  return "\n\n".join(parts) + "\n"


def ebm_step_gpu() -> str:
  """Issue 35: the main job's train step against PyTorch on a lent GPU (the latest run of each card)."""
  data = _load("ebm_step_gpu.json")
  title = "### The main job's EBM train step on a GPU: JAX vs PyTorch (docs/techniques.md#ebm)"
  if data is None:
    return f"{title}\n\nNot measured yet: `{DEVICE_CHECK.format(item='ebm_step')}`.\n"
  return f"{title}\n\n" + "\n\n".join(_peer_run(run) for run in latest_per_machine(data)) + "\n"


def ebm_long_gpu() -> str:
  """Issue 34: the main job's recipe run long on a lent GPU, FID-FMNIST (500 samples) of the buffer and of fresh
  60-step chains every 1,000 steps, one column per seed."""
  data = _load("ebm_long_gpu.json")
  title = ("### The main job's EBM (until 2026-12-05: no augmented chain starts, `--recipe uva`) run long on a GPU: "
           "FID-FMNIST vs steps, 3 seeds (docs/techniques.md#ebm)")
  if data is None:
    return f"{title}\n\nNot measured yet: `{DEVICE_CHECK.format(item='ebm_long')}`.\n"
  runs = sorted(data["runs"])
  cell = {(r[0], r[1]): r[2:] for r in data["rows"]}
  steps = sorted({r[1] for r in data["rows"]})
  rows = [[step, *(cell.get((run, step), [float("nan")] * 2)[0] for run in runs),
           *(cell.get((run, step), [float("nan")] * 2)[1] for run in runs)] for step in steps]
  reached = ", ".join(f"{run} {data['runs'][run]['steps_reached']:,} steps" for run in runs)
  return (f"{title}\n\n`{data['command']}` — {data['machine']}, jax {data['jax']}, {data['date']}; the runs side by side with the "
          f"other training items on one card, stopped by their guard at: {reached} (the item asks 20,000). "
          f"Verdict: {_study('studies/ebm')}.\n\n"
          f"{table(['step', *(f'buffer {r[-2:]}' for r in runs), *(f'fresh 60 {r[-2:]}' for r in runs)], rows)}\n"
          f"\n{_floor(500)}\n")


def ebm_fresh_chains() -> str:
  """Issue 34: benchmarks.studies.ebm.fresh_chains, each results file (CPU, GPU) as mean +- std over seeds."""
  title = ("### Sampling from noise: recipes of the main job, FID-FMNIST of fresh chains by length (`main`: the "
           "main job now; `uva`: before 2026-12-05) (docs/techniques.md#ebm)")
  parts = []
  what = {"ebm_fresh_chains.json": "The first bf16 comparison (each run on one CPU device: the study then trained "
                                    "in its own process; see the study README). "}
  for name in ("ebm_fresh_chains_recipes.json", "ebm_fresh_chains.json", "ebm_fresh_chains_gpu.json"):
    data = _load(name)
    if data is None:
      continue
    runs = data["runs"]
    lengths = sorted({int(n) for v in runs.values() for n in v["fresh"]})
    machines = sorted({v.get("machine", data.get("machine", "?")) for v in runs.values()})
    command = data.get("command") or "python -m benchmarks.studies.ebm.fresh_chains " + {
        "ebm_fresh_chains_recipes.json": "--recipes main,aug,uva,uvabf16,kl1,kl1aug",
        "ebm_fresh_chains.json": "--recipes uva,uvabf16 --lengths 60 --json benchmarks/results/ebm_fresh_chains.json",
    }[name]
    flag = lambda v, name: v["argv"][v["argv"].index(name) + 1] if name in v["argv"] else "?"
    sizes = sorted({(flag(v, "--steps"), flag(v, "--samples")) for v in runs.values()})
    parts.append(what.get(name, "") + f"`{command}` — {', '.join(machines)}, {max(v.get('date', data.get('date', '')) for v in runs.values())}; "
                 + "; ".join(f"{steps} steps per run, {samples} samples per FID" for steps, samples in sizes)
                 + ".\n\n"
                 f"{fresh_chain_table(runs, list(dict.fromkeys(k.split('/')[0] for k in runs)), lengths)}")
  if not parts:
    return f"{title}\n\nNot measured yet: `python -m benchmarks.studies.ebm.fresh_chains`.\n"
  return f"{title}\n\nVerdict: {_study('studies/ebm')}.\n\n" + "\n\n".join(parts) + f"\n\n{_floor(500)}\n"


def _floor(n: int) -> str:
  """The real-data floor of FID-FMNIST at n samples (benchmarks/results/fid_floor.json), or why it is missing."""
  if not n:
    return ""
  return floor_at(n, RESULTS / "fid_floor.json") or (
      f"Real-data floor at {n:,} samples: not measured yet (`python -m benchmarks.studies.metrics.fid_floor "
      f"--counts {n}`).")


def ebm_seeds() -> str:
  """Issue 38: the main job's seeds, buffer vs fresh chains, every sample metric (benchmarks.studies.ebm.ebm_eval
  of each seed's run, benchmarks/results/ebm_eval_main_s<seed>.json)."""
  title = ("### The main job's seeds (until 2026-12-05: `--recipe uva`) beyond FID: buffer vs fresh chains, KID, "
           "precision/recall (docs/techniques.md#ebm)")
  files = sorted(RESULTS.glob("ebm_eval_main_s*.json"))
  rows, notes, samples = [], set(), 5000
  for path in files:
    data = json.loads(path.read_text())
    for name, s in data.get("scores", {}).items():
      rows.append([path.stem.rsplit("_", 1)[1], name, s["samples"], round(s["fid"], 1),
                   f"{s['kid']:.2f} ± {s['kid_std']:.2f}",
                   *(round(s[k], 3) for k in ("precision", "recall", "density", "coverage"))])
    samples = data.get("samples", samples)
    notes.add(f"{data.get('machine', '?')}, {data.get('date', '?')}, {data.get('samples')} samples, fresh chains "
              f"of {data.get('fresh_steps')} Langevin steps from noise")
  if not rows:
    return f"{title}\n\nNot measured yet: `python -m benchmarks.studies.ebm.ebm_eval --workdir RUN --json F`.\n"
  return (f"{title}\n\n`python -m benchmarks.studies.ebm.ebm_eval --workdir runs/ebm_ensemble/sSEED --samples {samples} "
          f"--json benchmarks/results/ebm_eval_main_sSEED.json` — {'; '.join(sorted(notes))}; the floor: as many "
          f"real training images. Verdict: {_study('studies/ebm')}."
          f"\n\n{table(['seed', 'sample set', 'n', 'FID-FMNIST', 'KID', 'precision', 'recall', 'density', 'coverage'], rows)}\n")


def _cmd(*argv: str) -> str:
  """A command as a reader pastes it: shell-quoted, in backticks."""
  return f"`{shlex.join(argv)}`"


DEVICE_CHECK = "bash benchmarks/tools/device_check.sh OUT DATA {item}` on a GPU machine, then " \
               "`python -m benchmarks.tools.device_results OUT/device_check.tgz"


def section() -> str:
  grids = "\n".join(f"![{png[:-4]}]({png})\n*{caption}*\n" for png, _, caption in GRIDS if (DOCS / png).exists())
  parts = [
      "### Samples\n\n" + grids,
      exact_tables(),
      _table_section("IMDB: BCE vs the margin loss (docs/techniques.md#margin)", "imdb_table_imdb.json",
                     _cmd("python", "-m", "benchmarks.studies.margin.imdb_table", "--seeds", "0,1,2,3,4"),
                     study="studies/margin"),
      _table_section("SST-2 dev, CNN", "imdb_table_sst2.json",
                     _cmd("python", "-m", "benchmarks.studies.margin.imdb_table", "--models", "cnn", "--dataset",
                          "sst2"), study="studies/margin"),
      _table_section("GAN step: one loss vs alternating updates (docs/techniques.md#gan)", "gan_step.json",
                     _cmd("python", "-m", "benchmarks.speed.gan_step"), study="speed"),
      _table_section("GAN step on a GPU", "gan_step_gpu.json", "`" + DEVICE_CHECK.format(item="gan_step") + "`",
                     note_key="flops_note", study="speed"),
      _table_section("GAN quality after equal steps", "gan_fid.json",
                     _cmd("python", "-m", "benchmarks.studies.gan.gan_fid"), study="studies/gan", floor=2000),
      _table_section("GAN to convergence: one loss and its variants vs alternating, FID vs steps and vs seconds",
                     "gan_convergence.json", _cmd("python", "-m", "benchmarks.studies.gan.gan_convergence"),
                     note_key="note", picture="gan_convergence.png", study="studies/gan", floor=5000),
      _table_section("GAN at convergence beyond FID at one count: FID∞, the real-data floor, KID, precision/recall "
                     "(seed 0, the pretrained models)", "gan_rescore.json",
                     _cmd("python", "-m", "benchmarks.studies.gan.gan_rescore"), study="studies/gan"),
      langevin_gpu(),
      ebm_step_gpu(),
      _table_section("The EBM main job run long on the CPU: FID of the buffer and of fresh chains every 1,000 steps "
                     "(issue 34)", "ebm_long.json", _cmd("python", "-m", "benchmarks.studies.ebm.ebm_long"),
                     note_key="summary", picture="ebm_long.png", study="studies/ebm", floor=500),
      ebm_long_gpu(),
      ebm_fresh_chains(),
      ebm_seeds(),
      _table_section("EBMs sampling together: each model alone vs all sharing one buffer, from noise",
                     "ebm_ensemble.json", _cmd("python", "-m", "benchmarks.studies.ebm.ebm_ensemble"),
                     study="studies/ebm"),
      _table_section("The real-data floor of FID-FMNIST at each sample count", "fid_floor.json",
                     _cmd("python", "-m", "benchmarks.studies.metrics.fid_floor"), study="studies/metrics"),
      cpu_peers(),
      _table_section("MobileNet on 2 CPU cores: --recipe cpu94 and what each of its changes bought",
                     "mobilenet_table.json", _cmd("python", "-m", "benchmarks.studies.mobilenet.mobilenet_table"),
                     note_key="note", picture="mobilenet_cpu94.png", study="studies/mobilenet"),
      _table_section("MobileNet on 2 CPU cores: the finished runs again, with test-time flips",
                     "mobilenet_flips.json", _cmd("python", "-m", "benchmarks.studies.mobilenet.mobilenet_flips"),
                     note="Each run's final checkpoint evaluated plainly and with the softmax averaged over each test "
                          "image and its mirror (`train.classify --eval-only --eval-flips`; no training). The goal's "
                          "measure stays the plain accuracy (the seed's 95% is one); the flips are what closes the "
                          "rest of the way at no training cost.", study="studies/mobilenet"),
      _table_section("The EXACT paper's MNIST row on its own net (vgg_m3) on a GPU", "exact_vgg_m3_gpu.json",
                     "`" + DEVICE_CHECK.format(item="exact_vgg_m3") + "`", note_key="note", study="studies/exact"),
      _table_section("The test suite on a GPU", "tests_gpu.json", "`" + DEVICE_CHECK.format(item="tests") + "`",
                     note="Which tests failed there and why (the tests', not the library's; fixed since): "
                          "[docs/gpu.md](gpu.md)."),
  ]
  return "\n".join(parts)


def main(argv=None) -> int:
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--check", action="store_true", help="only compare docs/results.md with the result files")
  p.add_argument("--grids", action="store_true", help="first copy the sample grids from their runs into docs/")
  args = p.parse_args(argv)
  text = RESULTS_MD.read_text() if RESULTS_MD.exists() else f"{HEADER}\n{BEGIN}\n{END}\n"
  if BEGIN not in text or END not in text:
    print(f"docs/results.md lacks the markers {BEGIN!r} ... {END!r}; put them back around the generated tables",
          file=sys.stderr)
    return 2
  if args.grids:
    for png, source, _ in GRIDS:
      if source and (ROOT / source).exists():
        shutil.copyfile(ROOT / source, DOCS / png)
  head, rest = text.split(BEGIN, 1)
  new = f"{head}{BEGIN}\n{section()}{END}{rest.split(END, 1)[1]}"
  if args.check:
    if new != text:
      print("docs/results.md differs from benchmarks/results/; run python -m benchmarks.tools.report", file=sys.stderr)
      return 1
    return 0
  RESULTS_MD.write_text(new)
  print("wrote docs/results.md's tables")
  return 0


if __name__ == "__main__":
  sys.exit(main())
