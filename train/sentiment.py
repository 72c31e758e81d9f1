"""Sentiment classification (IMDB or SST-2) with plain or margin-truncated binary cross-entropy (SPEC.md §1).

    python -m train.sentiment --model lstm --loss margin            # the seed: 20k words, maxlen 80, 15 epochs
    python -m train.sentiment --model cnn --loss bce                # 5k words, maxlen 400, 10 epochs
    python -m train.sentiment --model cnn --dataset sst2            # evaluated on SST-2 dev

The seed's settings are the defaults (Adam 1e-3, batch 32; --num-words, --maxlen and --epochs 0 mean the seed's
values for the model). Test accuracy (SST-2: dev) every epoch into metrics.jsonl; resume as every trainer.
"""

import dataclasses
import functools
import math
import sys
from typing import Literal

import jax
import jax.numpy as jnp
import optax

from jaxtricks import cli, losses, loop, parallel
from jaxtricks.cli import require
from jaxtricks.data import pipeline, text
from jaxtricks.models.text import CNNClassifier, LSTMClassifier
from jaxtricks.state import TrainState

SEED_SETTINGS = {"lstm": {"num_words": 20000, "maxlen": 80, "epochs": 15},
                 "cnn": {"num_words": 5000, "maxlen": 400, "epochs": 10}}
EVAL_SPLIT = {"imdb": "test", "sst2": "validation"}
SST2_MAXLEN = 64   # SST-2's longest sentence has 54 tokens; the seed's 400 would be 86% padding


@dataclasses.dataclass(frozen=True)
class Config:
  """Train a sentiment classifier with BCE or the margin loss."""
  model: Literal["lstm", "cnn"] = "lstm"
  loss: Literal["bce", "margin"] = "bce"
  margin: float = dataclasses.field(default=0.6, metadata={"help": "--loss margin: threshold m in (0.5, 1)"})
  dataset: Literal["imdb", "sst2"] = "imdb"
  epochs: float = dataclasses.field(default=0.0, metadata={"help": "0: the seed's (LSTM 15, CNN 10)"})
  steps: int = dataclasses.field(default=0, metadata={"help": "train steps; 0: from --epochs"})
  batch_size: int = 32
  lr: float = 1e-3
  num_words: int = dataclasses.field(default=0, metadata={"help": "vocabulary cap; 0: the seed's (20000 / 5000)"})
  maxlen: int = dataclasses.field(default=0, metadata={"help": "sequence length; 0: the seed's (80 / 400; 64 on SST-2)"})
  seed: int = 0
  workdir: str = "runs/sentiment"
  data_dir: str = dataclasses.field(default="", metadata={"help": "raw data folder (else $JAXTRICKS_DATA)"})
  checkpoint_every: int = 1000
  eval_batch_size: int = 1000
  devices: int = dataclasses.field(default=0, metadata={"help": "devices to split each batch over; 0: all visible"})
  progress: bool = True

  def __post_init__(self):
    require(self.epochs >= 0, f"--epochs must be >= 0 (0: the seed's), got {self.epochs}")
    require(self.steps >= 0, f"--steps must be >= 0 (0: from --epochs), got {self.steps}")
    require(self.loss != "margin" or 0.5 < self.margin < 1, f"--margin must be in (0.5, 1), got {self.margin}")
    for name in ("batch_size", "checkpoint_every", "eval_batch_size"):
      require(getattr(self, name) > 0, f"{cli.flag(name)} must be positive, got {getattr(self, name)}")
    require(self.lr > 0, f"--lr must be positive, got {self.lr}")
    require(self.num_words == 0 or self.num_words > 3, f"--num-words must be > 3 (or 0), got {self.num_words}")
    require(self.maxlen >= 0, f"--maxlen must be >= 0 (0: the seed's), got {self.maxlen}")

  def setting(self, name: str):
    """num_words, maxlen or epochs: the flag, or the seed's value for the model when the flag is 0."""
    if name == "maxlen" and self.dataset == "sst2":
      return self.maxlen or SST2_MAXLEN
    return getattr(self, name) or SEED_SETTINGS[self.model][name]


def make_model(config: Config):
  if config.model == "lstm":
    return LSTMClassifier(vocab_size=config.setting("num_words"))
  return CNNClassifier(vocab_size=config.setting("num_words"))


def objective(config: Config, logits_B: jax.Array, labels_B: jax.Array) -> jax.Array:
  if config.loss == "margin":
    return losses.margin_binary_cross_entropy(logits_B, labels_B, margin=config.margin).mean()
  return optax.sigmoid_binary_cross_entropy(logits_B, labels_B.astype(logits_B.dtype)).mean()


def init_state(config: Config, key: jax.Array) -> TrainState:
  model = make_model(config)
  params = model.init(key, jnp.zeros((1, config.setting("maxlen")), jnp.int32))["params"]
  return TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(config.lr), batch_stats={})


def train_step(state: TrainState, batch: dict, key: jax.Array, *, config: Config):
  def loss_fn(params):
    logits = state.apply_fn({"params": params}, batch["ids"], train=True, rngs={"dropout": key})
    return objective(config, logits, batch["label"]), logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads)
  accuracy = ((logits > 0) == (batch["label"] == 1)).mean()
  return state, {"loss": loss, "accuracy": accuracy, "grad_norm": optax.global_norm(grads)}


@jax.jit
def _eval_batch(state: TrainState, batch: dict, mask_B: jax.Array) -> dict:
  logits = state.apply_fn({"params": state.params}, batch["ids"])
  y = batch["label"]
  bce = optax.sigmoid_binary_cross_entropy(logits, y.astype(logits.dtype))
  return {"correct": (((logits > 0) == (y == 1)) * mask_B).sum(), "nll": (bce * mask_B).sum()}


def make_eval_fn(config: Config, data: dict, split: str):
  n = data["label"].shape[0]

  def evaluate(state):
    sums = [_eval_batch(state, b, m) for b, m in pipeline.eval_batches(data, batch_size=config.eval_batch_size)]
    total = jax.device_get(jax.tree.map(lambda *v: sum(v), *sums))
    return {f"{split}/accuracy": total["correct"] / n, f"{split}/nll": total["nll"] / n}
  return evaluate


def run(config: Config, hooks=()):
  mesh = parallel.make_mesh(config.devices, batch_size=config.batch_size)   # before any data is read
  split = EVAL_SPLIT[config.dataset]
  data = text.load_sequences(config.dataset, ("train", split), num_words=config.setting("num_words"),
                             maxlen=config.setting("maxlen"), data_dir=config.data_dir or None)
  (x, y), (x_eval, y_eval) = data["train"], data[split]
  require(config.batch_size <= len(y), f"--batch-size {config.batch_size} exceeds the {len(y)} training examples")
  key = jax.random.PRNGKey(config.seed)
  init_key, data_key, step_key = jax.random.split(key, 3)
  batches = pipeline.DeviceBatches({"ids": x, "label": y}, batch_size=config.batch_size, key=data_key, mesh=mesh)
  steps = config.steps or math.ceil(config.setting("epochs") * batches.steps_per_epoch)
  fingerprint = {"model": config.model, "loss": config.loss, "margin": config.margin, "dataset": config.dataset,
                 "batch_size": config.batch_size, "seed": config.seed, "num_words": config.setting("num_words"),
                 "maxlen": config.setting("maxlen")}
  return loop.run(
      loop.LoopConfig(steps=steps, workdir=config.workdir, checkpoint_every=config.checkpoint_every,
                      eval_every=batches.steps_per_epoch, progress=config.progress),
      init_fn=lambda: init_state(config, init_key),
      train_step=parallel.jit_step(functools.partial(train_step, config=config), mesh),
      batches=batches, key=step_key,
      eval_fn=make_eval_fn(config, {"ids": jax.device_put(x_eval), "label": jax.device_put(y_eval)}, split),
      hooks=hooks, fingerprint=fingerprint, state_sharding=parallel.replicated(mesh))


if __name__ == "__main__":
  sys.exit(cli.main(Config, run, prog="python -m train.sentiment"))
