"""The pretrained models in benchmarks/pretrained/: made from a trained workdir, each evaluated by one command that
prints its table's number.

    python -m benchmarks.tools.pretrained export ebm_s0 --workdir runs/ebm   # the workdir's newest checkpoint, slim
    python -m benchmarks.tools.pretrained list                               # name, MB, table number, eval command

A pretrained model is a folder: the run's config.json, weights.msgpack (jaxtricks.checkpoints.save_weights: every
array but the optimizer's; of an EBM's replay buffer the items its FID reads, replay.keep_latest) and
pretrained.json (the command that trained it, the code version, host, date, and where its table's number stands).
Its program's `--eval-only` evaluates it like a workdir (CATALOG's eval commands); tests/test_pretrained.py runs
each command and compares with the table. All models together stay within MAX_BYTES.
"""

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ArgumentParser, machine
from jaxtricks import checkpoints, replay
from jaxtricks.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "benchmarks" / "pretrained"
MAX_BYTES = 15 * 2 ** 20
BUFFER_ITEMS = 500   # of an EBM's replay buffer: train.ebm's --fid-samples default
EXACT_PUBLISHED = ["--dataset", "mnist", "--model", "cnn", "--epochs", "20.0", "--seed", "0", "--loss", "exact",
                   "--optimizer", "sgd", "--momentum", "0.9", "--weight-decay", "0.0001", "--schedule", "exponential",
                   "--lr-final", "0.0001", "--batch-size", "256", "--lr", "0.5", "--exact-sigma", "scheduled",
                   "--exact-sigma-init", "10.0", "--exact-sigma-final", "1.0", "--exact-margin", "0.5",
                   "--logit-batchnorm", "--grad-normalizer"]


def _gan(mode: str) -> dict:
  train = ["--steps", "20000", "--width", "16", "--seed", "0", "--fid-every", "1250", "--fid-samples", "5000",
           "--ema-decay", "0.999", "--sample-every", "20000", "--checkpoint-every", "500", "--no-progress",
           "--no-tensorboard", "--mode", mode]
  return dict(program="train.gan", train=train, expect={"mode": mode, "width": 16, "seed": 0, "ema_decay": 0.999},
              eval=["--fid-samples", "5000"],
              what=f"DCGAN width 16, --mode {mode}, 20,000 steps, EMA 0.999, seed 0",
              table=dict(file="benchmarks/results/gan_convergence.json", run=f"{mode}/0", series="fid_ema"),
              printed="fid_fmnist_ema", rel=1e-3, half=True)


# name -> what trained it (program and flags, run from the repo root), how it is evaluated (flags beside
# --eval-only --workdir, which takes the run's settings from its config.json: only what the evaluation itself
# chooses, the GANs' sample count), where its table's number stands, the
# key its evaluation prints it under, the relative tolerance of the comparison (last-bit float differences between
# CPU models, and `half`), and `half`: its float32 arrays stored as float16, so that every committed file stays
# under 2 MiB (measured 2026-12-04: EXACT's accuracy and nll unchanged, the GANs' FID-EMA +0.025 and +0.070)
CATALOG = {
    "ebm_s0": dict(program="train.ebm", train=["--compute-dtype", "float32", "--conv", "xla"], eval=[],
                   expect={"net": "strided", "channels": 16, "seed": 0},
                   what="the main job (`make train` in float32): strided energy net with augmented chain starts, "
                        "1,000 steps, seed 0",
                   table=dict(file="README.md", pattern=r"\| float32 \([^|]*\| `fid_fmnist_buffer=([\d.]+)"),
                   printed="fid_fmnist_buffer", rel=1e-3),
    "exact_mnist_s0": dict(program="train.classify", train=EXACT_PUBLISHED,
                           expect={"model": "cnn", "loss": "exact", "dataset": "mnist", "seed": 0},
                           eval=[],
                           what="EXACT as published on MNIST, the small CNN, 20 epochs, seed 0",
                           table=dict(file="benchmarks/results/exact_table_mnist.json", run="exact (published)/0",
                                      series="curve"),
                           printed="test/accuracy", rel=3e-4, half=True),   # 3 of 10,000 test images: near-ties
                                                                 # may flip on another CPU model
    "mobilenet_cpu94_s0": dict(program="train.classify",
                               train=["--recipe", "cpu94", "--epochs", "40", "--seed", "0", "--no-progress",
                                      "--no-tensorboard"],
                               expect={"model": "mobilenet", "dataset": "fashion_mnist", "width": 0.5,
                                       "input_size": 28, "seed": 0},
                               eval=[],
                               what="MobileNet width 0.5 on Fashion-MNIST, --recipe cpu94, 40 epochs, seed 0",
                               table=dict(file="benchmarks/results/mobilenet_table.json", run="cpu94/0",
                                          series="curve"),
                               printed="test/accuracy", rel=3e-4, half=True),
    "gan_single_s0": _gan("single"),
    "gan_alternating_s0": _gan("alternating"),
}


def eval_argv(name: str, folder: Path | None = None) -> list[str]:
  """The command that evaluates pretrained model `name` (in `folder`, else its place in the repo)."""
  entry = CATALOG[name]
  where = folder if folder is not None else Path("benchmarks") / "pretrained" / name
  return ["python", "-m", entry["program"], "--eval-only", "--workdir", str(where), *entry["eval"]]


def table_number(name: str) -> float:
  """The number of pretrained model `name` as its table (results file or README) states it."""
  table = CATALOG[name]["table"]
  path = ROOT / table["file"]
  if "pattern" in table:
    return float(re.search(table["pattern"], path.read_text()).group(1))
  series = json.loads(path.read_text())["runs"][table["run"]][table["series"]]
  last = series[-1]
  return float(last[1] if isinstance(last, list) else last)


def export(name: str, workdir: Path, out: Path = FOLDER, check: bool = True, half: bool | None = None) -> Path:
  """<out>/<name>/: config.json, weights.msgpack of the workdir's newest checkpoint, pretrained.json. ConfigError
  when the workdir has no config.json or (with `check`) its settings are not those of the catalog's run. `half`:
  float16 storage (default: the catalog entry's)."""
  entry = CATALOG[name]
  if not (workdir / "config.json").is_file():
    raise ConfigError("workdir", f"{workdir}: no config.json; is it a finished run of {entry['program']}?")
  saved = json.loads((workdir / "config.json").read_text())
  differ = {k: (saved.get(k), v) for k, v in entry["expect"].items() if check and saved.get(k) != v}
  if differ:
    raise ConfigError("workdir", f"{workdir}: not the run of {name} ({entry['what']}): "
                      + ", ".join(f"{k} {a!r}, not {b!r}" for k, (a, b) in differ.items()))
  state, _, step = checkpoints.restore(workdir)
  if "buffer" in state:   # the items the EBM's FID reads (the latest --fid-samples, 500), not the whole buffer
    buffer = replay.keep_latest(replay.ReplayBuffer(**state["buffer"]), BUFFER_ITEMS)
    state = {**state, "buffer": {"data": buffer.data, "count": buffer.count, "pointer": buffer.pointer}}
  folder = out / name
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "config.json").write_text((workdir / "config.json").read_text())
  checkpoints.save_weights(folder, state, step, half=entry.get("half", False) if half is None else half)
  commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip() or "unknown (no git)"
  meta = {"name": name, "what": entry["what"], "step": step,
          "trained_by": shlex.join(["python", "-m", entry["program"], *entry["train"], "--workdir", "WORKDIR"]),
          "evaluate": shlex.join(eval_argv(name)), "table": entry["table"], "printed": entry["printed"],
          "code": commit, "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
  (folder / "pretrained.json").write_text(json.dumps(meta, indent=1) + "\n")
  return folder


def total_bytes(out: Path = FOLDER) -> int:
  """The committed models' bytes: not what their evaluations write there (eval.json, export/; gitignored)."""
  return sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.name != "eval.json"
             and "export" not in p.relative_to(out).parts)


def main(argv=None) -> int:
  parser = ArgumentParser(prog="python -m benchmarks.tools.pretrained", description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  ex = sub.add_parser("export", help="write benchmarks/pretrained/NAME from a trained workdir")
  ex.add_argument("name", choices=sorted(CATALOG))
  ex.add_argument("--workdir", required=True, help="the trained run (its newest checkpoint is taken)")
  sub.add_parser("list", help="each model: size, its table's number, the command that evaluates it")
  args = parser.parse_args(argv)
  if args.command == "export":
    workdir = Path(args.workdir)
    if not checkpoints.steps(workdir):
      parser.exit(2, f"--workdir {workdir}: no checkpoint there; train the run first ({CATALOG[args.name]['what']})\n")
    try:
      folder = export(args.name, workdir)
    except ConfigError as e:
      parser.exit(2, f"--workdir {e.problem}\n")
    print(f"wrote {folder} ({sum(p.stat().st_size for p in folder.iterdir()) / 2 ** 20:.2f} MB); all models: "
          f"{total_bytes() / 2 ** 20:.2f} MB of {MAX_BYTES / 2 ** 20:.0f}")
    return 0
  for name in CATALOG:
    folder = FOLDER / name
    size = f"{total_bytes(folder) / 2 ** 20:.2f} MB" if folder.is_dir() else "not made yet"
    print(f"{name}: {size}, {CATALOG[name]['printed']} = {table_number(name):.6g} in its table\n  {shlex.join(eval_argv(name))}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
