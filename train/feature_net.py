"""Trains the feature network of an FID (FID-FMNIST, FID-CIFAR10) and writes its weights to jaxtricks/assets/.

    python -m train.feature_net                        # FID-FMNIST's net: fixed recipe and seed, 15 epochs
    python -m train.feature_net --dataset cifar10      # FID-CIFAR10's net: the same net on 32x32x3, crops and flips

The recipe is `RECIPES[dataset]` below, run as the command line of `python -m train.classify --model featnet ...` (in
a child process: programs do not import each other); then this program reads the run's final checkpoint, measures
its test accuracy (must be >= --min-accuracy: 92% on Fashion-MNIST, 75% on CIFAR-10 by default) and writes the
weights, with the accuracy and the recipe next to them (feature_net_<fid>.json). Neither net is an Inception
network: their FIDs compare only with FIDs measured by the same committed weights.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import flax.serialization
import jax
import numpy as np

from jaxtricks import checkpoints, cli, metrics
from jaxtricks.data import load
from jaxtricks.errors import ConfigError, require
from jaxtricks.models.feature_net import FeatureNet

RECIPES = {
    "fashion_mnist": {"model": "featnet", "epochs": 15, "batch_size": 128, "lr": 2e-3, "schedule": "cosine",
                      "warmup_steps": 200, "augment": "flip", "seed": 0},
    # CIFAR-10 (the JPEG copy where that is the data: not pixel-exact) with 4-pixel crops and flips
    "cifar10": {"model": "featnet", "dataset": "cifar10", "epochs": 20, "batch_size": 128, "lr": 2e-3,
                "schedule": "cosine", "warmup_steps": 200, "augment": "crop_flip", "seed": 0},
}
MIN_ACCURACY = {"fashion_mnist": 0.92, "cifar10": 0.75}


@dataclasses.dataclass(frozen=True)
class Config:
  """Train an FID's feature network (fixed recipe) and export its weights."""
  dataset: Literal["fashion_mnist", "cifar10"] = "fashion_mnist"
  workdir: str = ""
  data_dir: str = ""
  output: str = dataclasses.field(default="", metadata={"help": "weights file; default: the FID's in "
                                                                 "jaxtricks/assets/"})
  min_accuracy: float = dataclasses.field(default=-1.0, metadata={"help": "test accuracy the net must reach before "
                                                                          "its weights are written; -1: the data "
                                                                          "set's (0.92, 0.75)"})
  epochs: float = dataclasses.field(default=0.0, metadata={"help": "0: the recipe's"})

  def __post_init__(self):   # checked before training, not when the weights are written after it
    output = self.paths()[0]
    require(not output.is_dir(), "output", f"{output}: is a directory; give a file name for the weights")
    require(output.parent.is_dir() and os.access(output.parent, os.W_OK), "output",
            f"{output}: {output.parent} is not a writable folder")
    require(self.min_accuracy <= 1, "min_accuracy",
            f"must be at most 1 (a negative value: the data set's), got {self.min_accuracy}")
    require(self.epochs >= 0, "epochs", f"must be >= 0 (0: the recipe's), got {self.epochs}")

  def paths(self) -> tuple[Path, str]:
    """(output weights file, workdir) with the defaults filled in."""
    output = Path(self.output) if self.output else metrics.FEATURE_NETS[metrics.FID_OF_DATASET[self.dataset]][0]
    return output, self.workdir or ("runs/feature_net" if self.dataset == "fashion_mnist"
                                    else f"runs/feature_net_{self.dataset}")


def recipe_argv(config: Config) -> list[str]:
  recipe = {**RECIPES[config.dataset], **({"epochs": config.epochs} if config.epochs else {})}
  argv = [a for k, v in recipe.items() for a in (cli.flag(k), str(v))]
  argv += ["--workdir", config.paths()[1]] + (["--data-dir", config.data_dir] if config.data_dir else [])
  return argv


def run(config: Config):
  child = subprocess.run([sys.executable, "-m", "train.classify", *recipe_argv(config)])
  if child.returncode:
    raise ConfigError(None, f"python -m train.classify {' '.join(recipe_argv(config))} failed "
                            f"(exit {child.returncode}); weights not written")
  output, workdir = config.paths()
  state, _, _ = checkpoints.restore(Path(workdir))
  params = jax.device_get(state["params"])
  images, labels = load(config.dataset, "test", data_dir=config.data_dir or None)
  _, probs = metrics.feature_net_outputs(images, net=(FeatureNet(), params))
  accuracy = float((probs.argmax(-1) == labels).mean())
  floor = MIN_ACCURACY[config.dataset] if config.min_accuracy < 0 else config.min_accuracy
  require(accuracy >= floor, "min_accuracy", f"{floor}: the feature net reached {accuracy:.4f}; weights not written")
  output.write_bytes(flax.serialization.to_bytes(params))
  info = {"test_accuracy": accuracy, "recipe": {"command": "python -m train.classify " + " ".join(recipe_argv(config)),
                                                **RECIPES[config.dataset]},
          "params": int(sum(np.size(a) for a in jax.tree.leaves(params)))}
  output.with_suffix(".json").write_text(json.dumps(info, indent=1))
  print(f"test accuracy {accuracy:.4f}; weights written to {output}")


def main(argv=None) -> int:
  return cli.main(Config, run, argv=argv, prog="python -m train.feature_net")


if __name__ == "__main__":
  sys.exit(main())
