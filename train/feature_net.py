"""Trains the feature network of FID-FMNIST and writes its weights to jaxtricks/assets/.

    python -m train.feature_net            # fixed recipe and seed; ~15 epochs of Fashion-MNIST

The recipe is the config below (train.classify with --model featnet); the run's test accuracy is written
next to the weights (feature_net_fmnist.json) and must be >= 92%.
"""

import dataclasses
import json
import sys

import flax.serialization
import jax
import numpy as np

from jaxtricks import cli
from jaxtricks.data import load
from jaxtricks.metrics import FEATURE_NET_WEIGHTS
from train import classify

RECIPE = classify.Config(model="featnet", epochs=15, batch_size=128, lr=2e-3, schedule="cosine", warmup_steps=200,
                         augment="flip", seed=0, workdir="runs/feature_net", eval_every=0)


@dataclasses.dataclass(frozen=True)
class Config:
  """Train the FID-FMNIST feature network (fixed recipe) and export its weights."""
  workdir: str = RECIPE.workdir
  data_dir: str = ""
  output: str = str(FEATURE_NET_WEIGHTS)
  min_accuracy: float = 0.92


def run(config: Config):
  recipe = dataclasses.replace(RECIPE, workdir=config.workdir, data_dir=config.data_dir)
  state = classify.run(recipe)
  images, labels = load("fashion_mnist", "test", data_dir=config.data_dir or None)
  accuracy = float(classify.make_eval_fn(recipe, {"image": images, "label": labels})(state)["test/accuracy"])
  cli.require(accuracy >= config.min_accuracy,
              f"feature net reached {accuracy:.4f} < --min-accuracy {config.min_accuracy}; weights not written")
  with open(config.output, "wb") as f:
    f.write(flax.serialization.to_bytes(state.params))
  info = {"test_accuracy": accuracy, "recipe": dataclasses.asdict(recipe),
          "params": int(sum(np.size(a) for a in jax.tree.leaves(state.params)))}
  with open(config.output.replace(".msgpack", ".json"), "w") as f:
    json.dump(info, f, indent=1)
  print(f"test accuracy {accuracy:.4f}; weights written to {config.output}")


if __name__ == "__main__":
  sys.exit(cli.main(Config, run, prog="python -m train.feature_net"))
