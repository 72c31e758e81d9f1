"""Sentiment classification (IMDB or SST-2) with plain or margin-truncated binary cross-entropy (docs/techniques.md#margin).

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

from jaxtricks import classifier, cli, harness, loop, losses
from jaxtricks.data import text
from jaxtricks.errors import require
from jaxtricks.models.text import CNNClassifier, LSTMClassifier

SEED_SETTINGS = {"lstm": {"num_words": 20000, "maxlen": 80, "epochs": 15},
                 "cnn": {"num_words": 5000, "maxlen": 400, "epochs": 10}}
EVAL_SPLIT = {"imdb": "test", "sst2": "validation"}
SST2_MAXLEN = 64   # SST-2's longest sentence has 54 tokens; the seed's 400 would be 86% padding


MARGIN = 0.6   # the margin loss's threshold m by default (the seed's)


@dataclasses.dataclass(frozen=True)
class Config(harness.BaseConfig):
  """Train a sentiment classifier with BCE or the margin loss."""
  model: Literal["lstm", "cnn"] = "lstm"
  loss: Literal["bce", "margin"] = "bce"
  margin: float = dataclasses.field(default=MARGIN, metadata={"help": "--loss margin: threshold m in (0.5, 1)"})
  dataset: Literal["imdb", "sst2"] = "imdb"
  epochs: float = dataclasses.field(default=0.0, metadata={"help": "0: the seed's (LSTM 15, CNN 10)"})
  steps: int | None = dataclasses.field(
      default=None, metadata={"help": "train steps (default: --epochs' worth)", "deprecated": {0: None}})
  batch_size: int = 32
  lr: float = 1e-3
  num_words: int = dataclasses.field(default=0, metadata={"help": "vocabulary cap; 0: the seed's (20000 / 5000)"})
  maxlen: int = dataclasses.field(default=0, metadata={"help": "sequence length; 0: the seed's (80 / 400; 64 on SST-2)"})
  workdir: str = "runs/sentiment"
  checkpoint_every: int = 1000
  eval_batch_size: int = 1000

  def __post_init__(self):
    super().__post_init__()
    require(self.epochs >= 0, "epochs", f"must be >= 0 (0: the seed's), got {self.epochs}")
    require(self.steps is None or self.steps > 0, "steps",
            f"must be positive (or left out: from {{epochs}}), got {self.steps}")
    require(self.loss != "margin" or 0.5 < self.margin < 1, "margin", f"must be in (0.5, 1), got {self.margin}")
    require(self.loss == "margin" or self.margin == MARGIN, "margin",
            f"{self.margin} does nothing with {{loss}} {self.loss} (it is the margin loss's threshold); add {{loss}} "
            "margin, or leave it out")
    harness.require_positive(self, "batch_size", "eval_batch_size", "lr")
    require(self.num_words == 0 or self.num_words > 3, "num_words", f"must be > 3 (or 0), got {self.num_words}")
    require(self.maxlen >= 0, "maxlen", f"must be >= 0 (0: the seed's), got {self.maxlen}")
    width = CNNClassifier.kernel_size   # the CNN's VALID convolution leaves maxlen - width + 1 positions to pool
    require(self.model != "cnn" or self.setting("maxlen") >= width, "maxlen",
            f"{self.setting('maxlen')} is shorter than the CNN's convolution (width {width}): nothing of a review would "
            f"be left to classify; use {{maxlen}} {width} or more")

  def setting(self, name: str):
    """num_words, maxlen or epochs: the flag, or the seed's value for the model when the flag is 0."""
    if name == "maxlen" and self.dataset == "sst2":
      return self.maxlen or SST2_MAXLEN
    return getattr(self, name) or SEED_SETTINGS[self.model][name]


def make_model(config: Config):
  if config.model == "lstm":
    return LSTMClassifier(vocab_size=config.setting("num_words"))
  return CNNClassifier(vocab_size=config.setting("num_words"))


def objective(config: Config, logits_B: jax.Array, batch: dict, step=None) -> jax.Array:
  labels_B = batch["label"]
  losses.check_in_range("objective", "labels", labels_B, 0, 2)   # under checkify: the first step
  if config.loss == "margin":
    return losses.margin_binary_cross_entropy(logits_B, labels_B, margin=config.margin).mean()
  return optax.sigmoid_binary_cross_entropy(logits_B, labels_B.astype(logits_B.dtype)).mean()


def accuracy(logits_B: jax.Array, batch: dict) -> dict:
  return {"accuracy": ((logits_B > 0) == (batch["label"] == 1)).mean()}


def train_step(state, batch, key, *, config: Config, model, tx):
  return classifier.train_step(state, batch, key, model=model, tx=tx, objective=functools.partial(objective, config),
                               metrics_fn=accuracy, input_key="ids")


def per_example(model, state, batch) -> dict:
  logits = classifier.predict(model, state, batch["ids"])
  y = batch["label"]
  return {"accuracy": ((logits > 0) == (y == 1)).astype(jnp.float32),
          "nll": optax.sigmoid_binary_cross_entropy(logits, y.astype(logits.dtype))}


def run(config: Config, actions=()):
  mesh = harness.mesh(config, config.batch_size)   # before any data is read
  split = EVAL_SPLIT[config.dataset]
  data = text.load_sequences(config.dataset, ("train", split), num_words=config.setting("num_words"),
                             maxlen=config.setting("maxlen"), data_dir=config.data_dir or None)
  (x, y), (x_eval, y_eval) = data["train"], data[split]
  keys = harness.keys(config.seed, "init", "data", "step")
  batches = harness.batches({"ids": x, "label": y}, config.batch_size, keys["data"], mesh)
  steps = (config.steps if config.steps is not None
           else math.ceil(config.setting("epochs") * batches.steps_per_epoch))
  model, tx = make_model(config), optax.adam(config.lr)
  evaluate = harness.evaluator(functools.partial(per_example, model), {"ids": x_eval, "label": y_eval},
                               batch_size=config.eval_batch_size, prefix=split)
  fingerprint = {"model": config.model, "loss": config.loss, "margin": config.margin, "dataset": config.dataset,
                 "batch_size": config.batch_size, "seed": config.seed, "num_words": config.setting("num_words"),
                 "maxlen": config.setting("maxlen")}
  return harness.train(
      config, steps=steps,
      init_fn=lambda: classifier.init(keys["init"], model, (1, config.setting("maxlen")), tx, x_dtype=jnp.int32),
      train_step=functools.partial(train_step, config=config, model=model, tx=tx), batches=batches,
      key=keys["step"], mesh=mesh, fingerprint=fingerprint,
      actions=[loop.Periodic(batches.steps_per_epoch, lambda step, s: evaluate(s), announce=True), *actions])


def main(argv=None) -> int:
  return cli.main(Config, run, argv=argv, prog="python -m train.sentiment")


if __name__ == "__main__":
  sys.exit(main())
