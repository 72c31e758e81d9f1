"""README's Results section, written from the committed result files: no hand-edited numbers.

    python -m benchmarks.report           # rewrites README.md between the results markers
    python -m benchmarks.report --check   # exit 1 when README's section is not what the result files give

Sources: benchmarks/results/*.json, each written by the benchmark named in it (its "command"), and the sample
grids in docs/ (copied there from the runs named below by `--grids`). A table whose file is missing is left out
with a line saying which command makes it.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path


from benchmarks.common import results_machines, run_machines, table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
BEGIN, END = "<!-- results:begin (python -m benchmarks.report) -->", "<!-- results:end -->"

# (picture in docs/, the run file it is copied from by --grids, caption)
GRIDS = [
    ("gan_single_1500.png", "runs/gan_fid/single-w32-n1500-s0/samples_001500.png",
     "GAN, one loss (train.gan --mode single: the freeze form, one D forward on the fakes), 1,500 steps, seed 0 — `python -m benchmarks.gan_fid`"),
    ("gan_alternating_1500.png", "runs/gan_fid/alternating-w32-n1500-s0/samples_001500.png",
     "GAN, alternating updates, 1,500 steps, seed 0 — `python -m benchmarks.gan_fid`"),
    ("gan_alternating_w16_20000.png", "runs/gan_convergence/alternating-w16-n20000-s0/samples_020000.png",
     "GAN at convergence, alternating updates, width 16, 20,000 steps, samples of the EMA of G, seed 0 — `python -m benchmarks.gan_convergence`"),
    ("gan_single_w16_20000.png", "runs/gan_convergence/single-w16-n20000-s0/samples_020000.png",
     "GAN at convergence, one loss (the fused freeze form), width 16, 20,000 steps, samples of the EMA of G, seed 0 — `python -m benchmarks.gan_convergence`"),
    ("gan_cifar10_1000.png", "runs/gan_cifar10_cpu/samples_001000.png",
     "GAN on CIFAR-10 (32x32x3), one loss, width 32, samples of the EMA of G after 1,000 steps on the 2-core CPU, seed 0 — `python -m train.gan --dataset cifar10 --steps 3000 --width 32 --ema-decay 0.999 --sample-every 1000 --workdir runs/gan_cifar10_cpu`"),
    ("gan_cifar10_3000.png", "runs/gan_cifar10_cpu/samples_003000.png",
     "The same run after 3,000 steps"),
    ("ebm_buffer_3000.png", None,
     "EBM replay buffer after 3,000 steps — `python -m train.ebm --steps 3000 --workdir runs/ebm-long`"),
]


def _load(name: str) -> dict | None:
  path = RESULTS / name
  return json.loads(path.read_text()) if path.exists() else None


def _table_section(title: str, name: str, make: str, note: str = "", note_key: str = "", picture: str = "") -> str:
  """The table of results file `name`; `note_key`: a field of that file printed under the table; `picture`: a
  PNG in docs/ drawn by the same command, shown under the table when it exists."""
  data = _load(name)
  if data is None:
    return f"### {title}\n\nNot measured yet: `{make}` writes `benchmarks/results/{name}`.\n"
  note = data.get(note_key, "") if note_key else note
  shown = f"\n![{picture[:-4]}](docs/{picture})\n" if picture and (DOCS / picture).exists() else ""
  return (f"### {title}\n\n`{data['command']}` — {results_machines(data)}, jax {data['jax']}, {data['date']}.\n\n"
          f"{table(data['header'], data['rows'])}\n" + (f"\n{note}\n" if note else "") + shown)


EXACT_TABLES = [
    ("mnist", "MNIST, the EXACT paper's row: its recipes on our small CNN (docs/techniques.md#exact)"),
    ("fashion_mnist", "Fashion-MNIST: every loss at convergence (docs/techniques.md#exact)"),
]


# what a reader of the README table needs beside it (the measurements behind each sentence: benchmarks/RESULTS.md)
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
  """Issue 14's tables (benchmarks.exact_table: each recipe several seeds until its test curve is flat) with their
  per-epoch pictures, which exact_table draws; the 2-epoch loss comparison they replace stays in RESULTS.md."""
  parts = []
  for dataset, title in EXACT_TABLES:
    data = _load(f"exact_table_{dataset}.json")
    if data is None:
      parts.append(f"### {title}\n\nNot measured yet: `python -m benchmarks.exact_table --dataset {dataset}`.\n")
      continue
    picture = f"docs/exact_table_{dataset}.png"
    parts.append(f"### {title}\n\n`{data['command']}`, jax {data['jax']} — runs on {run_machines(data['runs'])}; "
                 f"{data['epochs']:g} epochs, test accuracy after the last. Recipes and verdicts: "
                 f"benchmarks/RESULTS.md.\n\n"
                 + (f"![{dataset} test accuracy per epoch]({picture})\n\n" if (ROOT / picture).exists() else "")
                 + f"{table(data['header'], data['rows'])}\n"
                 + (f"\n{EXACT_NOTES[dataset]}\n" if dataset in EXACT_NOTES else ""))
  return "\n".join(parts)


def langevin_gpu() -> str:
  data = _load("langevin_gpu.json")
  title = "### Langevin chains on a GPU: JAX vs PyTorch eager (docs/techniques.md#ebm)"
  if data is None:
    return f"{title}\n\nNot measured yet: `bash benchmarks/device_check.sh OUT` on a GPU machine.\n"
  cmp = data["compare"]
  rows = [[r[0], r[2], r[3], r[4], r[5]] for r in cmp["rows"]]
  return (f"{title}\n\n`{data['command']}` — {data['machine']}, jax {data['jax']}, {data['date']}. "
          f"{cmp['title']}. {data['flops_note']}\n\n"
          f"{table(['variant', 'ms per step', 'samples*steps/s', 'of matmul peak', 'speed vs PyTorch'], rows)}\n")


def cpu_peers() -> str:
  """Issue 18's CPU comparisons, every run kept (the VM's host and speed change from day to day): Langevin chains
  and the GAN step against PyTorch, and each program's step on one XLA device vs one per core."""
  title = "### Speed against PyTorch on the CPU (docs/techniques.md#ebm, #gan)"
  runs = sorted(RESULTS.glob("langevin_cpu_peers_*.json")) + sorted(RESULTS.glob("gan_step_peers_*.json"))
  layouts = sorted(RESULTS.glob("cpu_devices_*.json"))
  if not runs and not layouts:
    return (f"{title}\n\nNot measured yet: `python -m benchmarks.langevin --torch-python PY --json "
            "benchmarks/results/langevin_cpu_peers_N.json` (and gan_step, cpu_devices likewise).\n")
  parts = [title]
  for path in runs:
    data = json.loads(path.read_text())
    if "compare" in data:
      cmp = data["compare"]
      rows = [[r[0], r[2], r[3], r[5], r[6]] for r in cmp["rows"]]
      body = table(["variant", "ms per step", "samples*steps/s", "speed vs PyTorch eager", "vs best PyTorch float32"],
                   rows)
      note = cmp["title"]
    else:
      body, note = table(data["header"], data["rows"]), "; ".join(data.get("peers", []))
    parts.append(f"`{data['command']}` — {data['machine']}, jax {data['jax']}, {data['date']}. {note}\n\n{body}")
  for path in layouts:
    data = json.loads(path.read_text())
    parts.append(f"`{data['command']}` — {data['machine']}, jax {data['jax']}, {data['date']}.\n\n"
                 f"{table(data['header'], data['rows'])}")
  return "\n\n".join(parts) + "\n"


def section() -> str:
  grids = "\n".join(f"![{png[:-4]}](docs/{png})\n*{caption}*\n" for png, _, caption in GRIDS if (DOCS / png).exists())
  parts = [
      "### Samples\n\n" + grids,
      exact_tables(),
      _table_section("IMDB: BCE vs the margin loss (docs/techniques.md#margin)", "imdb_table_imdb.json",
                     "python -m benchmarks.imdb_table --seeds 0,1,2,3,4"),
      _table_section("SST-2 dev, CNN", "imdb_table_sst2.json",
                     "python -m benchmarks.imdb_table --models cnn --dataset sst2"),
      _table_section("GAN step: one loss vs alternating updates (docs/techniques.md#gan)", "gan_step.json",
                     "python -m benchmarks.gan_step"),
      _table_section("GAN step on a GPU", "gan_step_gpu.json", "bash benchmarks/device_check.sh OUT",
                     note_key="flops_note"),
      _table_section("GAN quality after equal steps", "gan_fid.json", "python -m benchmarks.gan_fid"),
      _table_section("GAN to convergence: one loss and its variants vs alternating, FID vs steps and vs seconds",
                     "gan_convergence.json", "python -m benchmarks.gan_convergence", note_key="note",
                     picture="gan_convergence.png"),
      langevin_gpu(),
      cpu_peers(),
      _table_section("MobileNet on 2 CPU cores: --recipe cpu94 and what each of its changes bought",
                     "mobilenet_table.json", "python -m benchmarks.mobilenet_table", note_key="note",
                     picture="mobilenet_cpu94.png"),
      _table_section("MobileNet on 2 CPU cores: the finished runs again, with test-time flips",
                     "mobilenet_flips.json", "python -m benchmarks.mobilenet_flips",
                     note="Each run's final checkpoint evaluated plainly and with the softmax averaged over each test "
                          "image and its mirror (`train.classify --eval-only --eval-flips`; no training). The goal's "
                          "measure stays the plain accuracy (the seed's 95% is one); the flips are what closes the "
                          "rest of the way at no training cost (benchmarks/RESULTS.md)."),
      _table_section("MobileNet on a GPU: the seed's recipe and the CPU recipe scaled up (docs/techniques.md#mobilenet)",
                     "mobilenet_gpu.json", "bash benchmarks/device_check.sh OUT DATA mobilenet on a GPU machine, "
                     "then python -m benchmarks.device_results OUT/device_check.tgz"),
      _table_section("The test suite on a GPU", "tests_gpu.json",
                     "bash benchmarks/device_check.sh OUT DATA tests on a GPU machine, then "
                     "python -m benchmarks.device_results OUT/device_check.tgz"),
      _table_section("Short CIFAR-10 runs on a GPU", "cifar_gpu.json",
                     "bash benchmarks/device_check.sh OUT DATA cifar on a GPU machine, then "
                     "python -m benchmarks.device_results OUT/device_check.tgz"),
  ]
  return "\n".join(parts)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--check", action="store_true", help="only compare README's section with the result files")
  p.add_argument("--grids", action="store_true", help="first copy the sample grids from their runs into docs/")
  args = p.parse_args(argv)
  readme_path = ROOT / "README.md"
  readme = readme_path.read_text()
  if BEGIN not in readme or END not in readme:
    print(f"README.md lacks the markers {BEGIN!r} ... {END!r}", file=sys.stderr)
    return 2
  if args.grids:
    for png, source, _ in GRIDS:
      if source and (ROOT / source).exists():
        shutil.copyfile(ROOT / source, DOCS / png)
  head, rest = readme.split(BEGIN, 1)
  tail = rest.split(END, 1)[1]
  new = f"{head}{BEGIN}\n{section()}{END}{tail}"
  if args.check:
    if new != readme:
      print("README's Results section differs from benchmarks/results/; run python -m benchmarks.report",
            file=sys.stderr)
      return 1
    return 0
  readme_path.write_text(new)
  print("wrote README.md's Results section")
  return 0


if __name__ == "__main__":
  sys.exit(main())
