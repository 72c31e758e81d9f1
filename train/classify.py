"""Image classification on Fashion-MNIST / MNIST: a small CNN or MobileNet v1 (SPEC.md §4).

    python -m train.classify --model cnn --epochs 1              # ~90% test accuracy in about a minute on CPU
    python -m train.classify --model mobilenet --augment flip    # the seed's recipe: 56x56x3, batch 64, Adam

Writes <workdir>/metrics.jsonl, <workdir>/config.json and orbax checkpoints in <workdir>/checkpoints/;
running again with the same --workdir resumes.
"""

import dataclasses
import functools
import math
import sys
from typing import Literal

import jax
import jax.numpy as jnp
import optax

from jaxtricks import cli, loop
from jaxtricks.cli import require
from jaxtricks.data import load
from jaxtricks.data import pipeline
from jaxtricks.metrics import correct
from jaxtricks.models.cnn import CNN
from jaxtricks.models.mobilenet import MobileNetV1
from jaxtricks.state import TrainState


@dataclasses.dataclass(frozen=True)
class Config:
  """Train an image classifier with cross-entropy."""
  model: Literal["cnn", "mobilenet"] = "cnn"
  dataset: Literal["fashion_mnist", "mnist"] = "fashion_mnist"
  epochs: float = 1.0
  steps: int = dataclasses.field(default=0, metadata={"help": "train steps; 0: from --epochs"})
  batch_size: int = 64
  lr: float = 1e-3
  width: float = dataclasses.field(default=1.0, metadata={"help": "MobileNet width multiplier"})
  input_size: int = dataclasses.field(default=56, metadata={"help": "MobileNet input side (28 -> resized)"})
  augment: Literal["none", "flip"] = "none"
  seed: int = 0
  workdir: str = "runs/classify"
  data_dir: str = dataclasses.field(default="", metadata={"help": "raw data folder (else $JAXTRICKS_DATA)"})
  checkpoint_every: int = 500
  eval_every: int = dataclasses.field(default=0, metadata={"help": "steps between test evaluations; 0: each epoch"})
  eval_batch_size: int = 1000
  progress: bool = True

  def __post_init__(self):
    require(self.steps >= 0, f"--steps must be >= 0 (0 means from --epochs), got {self.steps}")
    require(self.steps > 0 or self.epochs > 0, f"--epochs must be positive, got {self.epochs}")
    require(self.batch_size > 0, f"--batch-size must be positive, got {self.batch_size}")
    require(self.lr > 0, f"--lr must be positive, got {self.lr}")
    require(self.width > 0, f"--width must be positive, got {self.width}")
    require(self.input_size >= 28, f"--input-size must be >= 28, got {self.input_size}")
    require(self.checkpoint_every > 0, f"--checkpoint-every must be positive, got {self.checkpoint_every}")
    require(self.eval_every >= 0, f"--eval-every must be >= 0, got {self.eval_every}")
    require(self.eval_batch_size > 0, f"--eval-batch-size must be positive, got {self.eval_batch_size}")


def make_model(config: Config):
  if config.model == "cnn":
    return CNN()
  return MobileNetV1(width=config.width)


def preprocess(config: Config, key: jax.Array, batch: dict, *, train: bool) -> dict:
  """uint8 -> float in [0, 1]; flips when training with --augment flip; MobileNet: resize and 3 channels."""
  x = pipeline.to_float(batch["image"])
  if train and config.augment == "flip":
    x = pipeline.random_flip(key, x)
  if config.model == "mobilenet":
    x = pipeline.resize_rgb(x, config.input_size)
  return {"image": x, "label": batch["label"]}


def init_state(config: Config, model, key: jax.Array) -> TrainState:
  size = config.input_size if config.model == "mobilenet" else 28
  x = jnp.zeros((1, size, size, 3 if config.model == "mobilenet" else 1))
  variables = model.init(key, x)
  return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=optax.adam(config.lr),
                           batch_stats=variables.get("batch_stats", {}))


def train_step(state: TrainState, batch: dict, key: jax.Array) -> tuple[TrainState, dict]:
  """One Adam step on the mean softmax cross-entropy."""
  def loss_fn(params):
    logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, batch["image"],
                                     train=True, rngs={"dropout": key}, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
  metrics = {"loss": loss, "accuracy": correct(logits, batch["label"]).mean(),
             "grad_norm": optax.global_norm(grads), "param_norm": optax.global_norm(state.params)}
  return state, metrics


@jax.jit
def _eval_batch(state: TrainState, batch: dict, mask_B: jax.Array) -> dict:
  logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, batch["image"])
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  return {"correct": (correct(logits, batch["label"]) * mask_B).sum(), "loss": (ce * mask_B).sum()}


def make_eval_fn(config: Config, test: dict):
  prep = jax.jit(functools.partial(preprocess, config, train=False))
  key = jax.random.PRNGKey(0)   # unused without augmentation
  n = test["label"].shape[0]

  def evaluate(state):
    sums = [_eval_batch(state, prep(key, b), m) for b, m in pipeline.eval_batches(test, batch_size=config.eval_batch_size)]
    total = jax.device_get(jax.tree.map(lambda *v: sum(v), *sums))
    return {"test/accuracy": total["correct"] / n, "test/loss": total["loss"] / n}
  return evaluate


def run(config: Config, hooks=()) -> TrainState:
  images, labels = load(config.dataset, "train", data_dir=config.data_dir or None)
  test_images, test_labels = load(config.dataset, "test", data_dir=config.data_dir or None)
  require(config.batch_size <= len(labels), f"--batch-size {config.batch_size} exceeds the {len(labels)} training examples")
  key = jax.random.PRNGKey(config.seed)
  model_key, data_key, step_key = jax.random.split(key, 3)
  batches = pipeline.DeviceBatches({"image": images, "label": labels}, batch_size=config.batch_size,
                                   key=data_key, transform=functools.partial(preprocess, config, train=True))
  steps = config.steps or math.ceil(config.epochs * batches.steps_per_epoch)
  model = make_model(config)
  fingerprint = {k: v for k, v in dataclasses.asdict(config).items()
                 if k in ("model", "dataset", "width", "input_size", "seed", "batch_size", "augment")}
  return loop.run(
      loop.LoopConfig(steps=steps, workdir=config.workdir, checkpoint_every=config.checkpoint_every,
                      eval_every=config.eval_every or batches.steps_per_epoch, progress=config.progress),
      init_fn=lambda: init_state(config, model, model_key),
      train_step=jax.jit(train_step, donate_argnums=0),
      batches=batches, key=step_key,
      eval_fn=make_eval_fn(config, {"image": jax.device_put(test_images), "label": jax.device_put(test_labels)}),
      hooks=hooks, fingerprint=fingerprint)


if __name__ == "__main__":
  sys.exit(cli.main(Config, run, prog="python -m train.classify"))
