"""Draw samples from trained EBMs: one workdir of `python -m train.ebm`, or an ensemble of several sharing one
replay buffer (docs/techniques.md#ebm; `jaxtricks.ebm.sample_ensemble`).

    python -m train.ebm_sample --workdirs runs/ebm --out samples.png
    python -m train.ebm_sample --workdirs runs/ebm-s0,runs/ebm-s1,runs/ebm-s2 --rounds 20 --out ensemble.png

Each round draws --num starting points per model from the shared buffer (the first workdir's training buffer,
or noise with --start noise), runs --langevin-steps Langevin steps under each model's energy (vmapped over the
models) and pushes every result back. Writes a PNG grid of the last round (and --out-npy: all of its samples,
float32 in [0, 1], shape [models * num, 28, 28, 1]). With --export-samples N it also writes the N latest samples of
the shared buffer (the last round's first, then earlier rounds') as 3-channel uint8 PNGs (or .npz) for pytorch-fid,
clean-fid and torch-fidelity into --export-dir (docs/programs.md); the real images to compare with come from
`python -m train.ebm --export-real` on the first workdir.
"""

import dataclasses
import os
import sys
from pathlib import Path
from typing import Literal

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtricks import checkpoints, cli, ebm, harness, parallel, replay
from jaxtricks.errors import WorkdirError, require
from jaxtricks.images import save_grid
from jaxtricks.workdir import read_config

# the keys of a train.ebm workdir's config.json (its fingerprint)
TRAIN_EBM_SETTINGS = {"dataset", "batch_size", "net", "channels", "buffer_size", "buffer_dtype", "seed"}


@dataclasses.dataclass(frozen=True)
class Config(harness.ExportConfig):
  """Sample from one trained EBM or an ensemble of them."""
  workdirs: str = dataclasses.field(default="runs/ebm", metadata={"help": "comma-separated workdirs of train.ebm"})
  num: int = dataclasses.field(default=64, metadata={"help": "chains per model and round"})
  rounds: int = dataclasses.field(default=10, metadata={"help": "rounds of chains through the shared buffer"})
  langevin_steps: int = 20        # the sampler settings: train.ebm's defaults (before 2026-12-01: step 20, clip 0.01)
  step_size: float = 10.0
  noise_scale: float | Literal["sqrt_step_size"] = dataclasses.field(
      default=0.005, metadata={"help": "std of the Langevin noise, or sqrt_step_size: sqrt(step size)",
                               "deprecated": {0: "sqrt_step_size"}})
  grad_clip: float = dataclasses.field(default=0.03, metadata={"help": "clip grad_x U to +-this; 0: no clip"})
  reinit_prob: float = 0.05
  unroll: int | Literal["auto", "full"] = dataclasses.field(
      default="auto", metadata={"help": "lax.scan unroll of the chain: N steps per iteration, full, or auto (20 on "
                                        "a CPU: chains up to 20 steps fully unrolled; else 1)",
                                "deprecated": {-1: "auto", 0: "full"}})
  start: Literal["buffer", "noise"] = dataclasses.field(
      default="buffer", metadata={"help": "shared buffer: the first workdir's training buffer, or empty (noise)"})
  seed: int = 0
  out: str = "samples.png"
  out_npy: str = ""
  devices: int | Literal["all"] = dataclasses.field(
      default="all", metadata={"help": "devices to split the chains over: all visible, or the first N",
                               "deprecated": {0: "all"}})
  export_dir: str = dataclasses.field(
      default="export", metadata={"help": "folder of the export: samples/ (PNG files) or samples.npz"})

  def __post_init__(self):
    harness.require_finite(self)
    require(bool(self.paths()), "workdirs", "must name at least one workdir of train.ebm")
    require(bool(self.export_dir), "export_dir", "must name a folder")
    self.check_export()
    pushed = self.rounds * self.num * len(self.paths())
    require(self.export_samples is None or self.export_samples <= pushed, "export_samples",
            f"{self.export_samples} exceeds the {pushed} samples the rounds draw ({{rounds}} x {{num}} x "
            f"{len(self.paths())} models); raise {{rounds}} or {{num}}")
    out = Path(self.out)
    require(not out.is_dir(), "out", f"{self.out}: is a directory; give a file name for the PNG")
    require(out.parent.is_dir() and os.access(out.parent, os.W_OK), "out",
            f"{self.out}: {out.parent} is not a writable folder")
    require(not self.out_npy or not Path(self.out_npy).is_dir(), "out_npy", f"{self.out_npy}: is a directory")
    harness.require_positive(self, "num", "rounds", "langevin_steps", "step_size")
    require(0 <= self.reinit_prob <= 1, "reinit_prob", f"must be in [0, 1], got {self.reinit_prob}")
    require(self.noise_scale == "sqrt_step_size" or self.noise_scale >= 0, "noise_scale",
            f"must be >= 0 or sqrt_step_size, got {self.noise_scale}")
    require(self.grad_clip >= 0, "grad_clip", f"must be >= 0 (0: no clip), got {self.grad_clip}")
    require(self.unroll in ("auto", "full") or self.unroll >= 1, "unroll",
            f"must be auto, full or >= 1, got {self.unroll}")

  def paths(self) -> list[Path]:
    return [Path(p) for p in self.workdirs.split(",") if p.strip()]


def load_model(workdir: Path) -> tuple[dict, dict]:
  """(the run's settings from config.json, its latest state as plain arrays: params, stats, buffer, ...) of a
  workdir of train.ebm or a pretrained EBM (benchmarks/pretrained/); WorkdirError if it holds none."""
  path = workdir / "config.json"
  if not path.is_file():
    raise WorkdirError("workdir", f"{workdir}: no config.json there; is it a workdir of train.ebm?")
  saved = read_config(path)
  saved.setdefault("net", "resnet")   # workdirs from before --net had only the residual net
  if set(saved) != TRAIN_EBM_SETTINGS:
    raise WorkdirError("workdir", f"{workdir}: config.json is not from train.ebm (keys {sorted(saved)})")
  if not checkpoints.steps(workdir) and (workdir / checkpoints.WEIGHTS).is_file():   # a pretrained model
    return saved, checkpoints.restore_weights(workdir)[0]
  state, _, _ = checkpoints.restore(workdir)
  return saved, state


def run(config: Config) -> np.ndarray:
  mesh = harness.mesh(config, config.num)
  loaded = [load_model(p) for p in config.paths()]
  nets = {(c["net"], c["channels"]) for c, _ in loaded}
  require(len(nets) == 1, "workdirs", f"the models differ in net or channels ({sorted(nets)}); "
                          "an ensemble needs one architecture")
  net, channels = nets.pop()
  model = ebm.energy_net(channels, net)
  states = [s for _, s in loaded]
  sampler = ebm.SamplerConfig(
      num_steps=config.langevin_steps, step_size=config.step_size, grad_clip=config.grad_clip or None,
      noise_scale=None if config.noise_scale == "sqrt_step_size" else config.noise_scale,
      reinit_prob=config.reinit_prob, unroll=config.unroll)
  buffer = ebm.buffer_from_checkpoint(states[0])
  if config.start == "noise":
    buffer = replay.create(buffer.data.shape[0], buffer.data.shape[1:], dtype=buffer.data.dtype,
                           data_range=buffer.data_range)
  require(config.export_samples is None or config.export_samples <= buffer.data.shape[0], "export_samples",
          f"{config.export_samples} exceeds the {buffer.data.shape[0]} samples the shared buffer holds; export at "
          "most that")
  if buffer.data.shape[0] % mesh.size == 0:   # the buffer split along 'data' like the chains
    buffer = jax.device_put(buffer, ebm.buffer_shardings(buffer, mesh))
  params_M, stats_M = jax.device_put((ebm.stack([s["params"] for s in states]), ebm.stack([s["stats"] for s in states])),
                                     parallel.replicated(mesh))
  chains = NamedSharding(mesh, P(None, parallel.DATA))
  step = jax.jit(lambda b, k: ebm.sample_ensemble(model, params_M, stats_M, b, k, config.num, sampler,
                                                  chain_sharding=chains))
  key = jax.random.PRNGKey(config.seed)
  for r in range(config.rounds):
    x_M, buffer = step(buffer, jax.random.fold_in(key, r))
  x = np.asarray(x_M).reshape((-1,) + x_M.shape[2:])
  save_grid(x, config.out, ncol=min(len(x), 16))
  if config.out_npy:
    np.save(config.out_npy, x.astype(np.float32))
  print(f"{len(states)} model(s), {config.rounds} rounds of {config.num} chains each: wrote {config.out}")
  if config.export_samples is not None:
    harness.export(config, lambda n: np.asarray(replay.latest(buffer, n)))
  return x


def main(argv=None) -> int:
  return cli.main(Config, run, argv=argv, prog="python -m train.ebm_sample",
                  flags={"batch_size": "--num", "workdir": "--workdirs"})


if __name__ == "__main__":
  sys.exit(main())
