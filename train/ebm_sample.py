"""Draw samples from trained EBMs: one workdir of `python -m train.ebm`, or an ensemble of several sharing one
replay buffer (SPEC.md §3; `jaxtricks.ebm.sample_ensemble`).

    python -m train.ebm_sample --workdirs runs/ebm --out samples.png
    python -m train.ebm_sample --workdirs runs/ebm-s0,runs/ebm-s1,runs/ebm-s2 --rounds 20 --out ensemble.png

Each round draws --num starting points per model from the shared buffer (the first workdir's training buffer,
or noise with --start noise), runs --langevin-steps Langevin steps under each model's energy (vmapped over the
models) and pushes every result back. Writes a PNG grid of the last round (and --out-npy: all of its samples,
float32 in [0, 1], shape [models * num, 28, 28, 1]).
"""

import dataclasses
import json
import sys
from pathlib import Path
from typing import Literal

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxtricks import cli, ebm, loop, parallel, replay
from jaxtricks.cli import require
from jaxtricks.images import save_grid
from train import ebm as train_ebm


@dataclasses.dataclass(frozen=True)
class Config:
  """Sample from one trained EBM or an ensemble of them."""
  workdirs: str = dataclasses.field(default="runs/ebm", metadata={"help": "comma-separated workdirs of train.ebm"})
  num: int = dataclasses.field(default=64, metadata={"help": "chains per model and round"})
  rounds: int = dataclasses.field(default=10, metadata={"help": "rounds of chains through the shared buffer"})
  langevin_steps: int = 20
  step_size: float = 20.0
  noise_scale: float = 0.005
  grad_clip: float = 0.01
  reinit_prob: float = 0.05
  start: Literal["buffer", "noise"] = dataclasses.field(
      default="buffer", metadata={"help": "shared buffer: the first workdir's training buffer, or empty (noise)"})
  seed: int = 0
  out: str = "samples.png"
  out_npy: str = ""
  devices: int = dataclasses.field(default=0, metadata={"help": "devices to split the chains over; 0: all visible"})

  def __post_init__(self):
    require(bool(self.paths()), "--workdirs must name at least one workdir of train.ebm")
    for name in ("num", "rounds", "langevin_steps"):
      require(getattr(self, name) > 0, f"{cli.flag(name)} must be positive, got {getattr(self, name)}")
    require(self.step_size > 0, f"--step-size must be positive, got {self.step_size}")
    require(0 <= self.reinit_prob <= 1, f"--reinit-prob must be in [0, 1], got {self.reinit_prob}")

  def paths(self) -> list[Path]:
    return [Path(p) for p in self.workdirs.split(",") if p.strip()]


def load_model(workdir: Path) -> tuple[train_ebm.Config, ebm.EbmState]:
  """(the run's train.ebm config, its latest state) of a workdir; WorkdirError if it holds none."""
  path = workdir / "config.json"
  if not path.is_file():
    raise loop.WorkdirError(f"--workdirs {workdir}: no config.json there; is it a workdir of train.ebm?")
  saved = json.loads(path.read_text())
  if set(saved) != set(train_ebm.FINGERPRINT):
    raise loop.WorkdirError(f"--workdirs {workdir}: config.json is not from train.ebm (keys {sorted(saved)})")
  config = train_ebm.Config(**saved)
  abstract = jax.eval_shape(lambda: train_ebm.make_state(config, jax.random.PRNGKey(0)))
  state, _, _ = loop.restore(workdir, abstract)
  return config, state


def run(config: Config) -> np.ndarray:
  mesh = parallel.make_mesh(config.devices, batch_size=config.num, flag="--num")
  loaded = [load_model(p) for p in config.paths()]
  channels = {c.channels for c, _ in loaded}
  require(len(channels) == 1, f"--workdirs: the models differ in --channels ({sorted(channels)}); "
                              "an ensemble needs one architecture")
  states = [s for _, s in loaded]
  sampler = train_ebm.sampler(dataclasses.replace(
      loaded[0][0], langevin_steps=config.langevin_steps, step_size=config.step_size,
      noise_scale=config.noise_scale, grad_clip=config.grad_clip, reinit_prob=config.reinit_prob))
  buffer = states[0].buffer
  if config.start == "noise":
    buffer = replay.create(buffer.data.shape[0], buffer.data.shape[1:], dtype=buffer.data.dtype,
                           data_range=buffer.data_range)
  if buffer.data.shape[0] % mesh.size == 0:   # the buffer split along 'data' like the chains
    buffer = jax.device_put(buffer, ebm.buffer_shardings(buffer, mesh))
  params_M, stats_M = jax.device_put((ebm.stack([s.params for s in states]), ebm.stack([s.stats for s in states])),
                                     parallel.replicated(mesh))
  chains = NamedSharding(mesh, P(None, parallel.DATA))
  step = jax.jit(lambda b, k: ebm.sample_ensemble(states[0].apply_fn, params_M, stats_M, b, k, config.num, sampler,
                                                  chain_sharding=chains))
  key = jax.random.PRNGKey(config.seed)
  for r in range(config.rounds):
    x_M, buffer = step(buffer, jax.random.fold_in(key, r))
  x = np.asarray(x_M).reshape((-1,) + x_M.shape[2:])
  save_grid(x, config.out, ncol=min(len(x), 16))
  if config.out_npy:
    np.save(config.out_npy, x.astype(np.float32))
  print(f"{len(states)} model(s), {config.rounds} rounds of {config.num} chains each: wrote {config.out}")
  return x


if __name__ == "__main__":
  sys.exit(cli.main(Config, run, prog="python -m train.ebm_sample"))
