"""Trains the feature network of FID-FMNIST and writes its weights to jaxtricks/assets/.

    python -m train.feature_net            # fixed recipe and seed; ~15 epochs of Fashion-MNIST

The recipe is `RECIPE` below, run as the command line of `python -m train.classify --model featnet ...` (in a
child process: programs do not import each other); then this program reads the run's final checkpoint, measures
its test accuracy (must be >= --min-accuracy, 92% by default) and writes the weights, with the accuracy next to
them (feature_net_fmnist.json).
"""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import flax.serialization
import jax
import numpy as np

from jaxtricks import cli, loop, metrics
from jaxtricks.data import load
from jaxtricks.errors import ConfigError, require
from jaxtricks.models.feature_net import FeatureNet

RECIPE = {"model": "featnet", "epochs": 15, "batch_size": 128, "lr": 2e-3, "schedule": "cosine",
          "warmup_steps": 200, "augment": "flip", "seed": 0}


@dataclasses.dataclass(frozen=True)
class Config:
  """Train the FID-FMNIST feature network (fixed recipe) and export its weights."""
  workdir: str = "runs/feature_net"
  data_dir: str = ""
  output: str = str(metrics.FEATURE_NET_WEIGHTS)
  min_accuracy: float = 0.92


def recipe_argv(config: Config) -> list[str]:
  argv = [a for k, v in RECIPE.items() for a in (cli.flag(k), str(v))]
  argv += ["--workdir", config.workdir] + (["--data-dir", config.data_dir] if config.data_dir else [])
  return argv


def run(config: Config):
  child = subprocess.run([sys.executable, "-m", "train.classify", *recipe_argv(config)])
  if child.returncode:
    raise ConfigError(None, f"python -m train.classify {' '.join(recipe_argv(config))} failed "
                            f"(exit {child.returncode}); weights not written")
  state, _, _ = loop.restore(Path(config.workdir))
  params = jax.device_get(state["params"])
  images, labels = load("fashion_mnist", "test", data_dir=config.data_dir or None)
  _, probs = metrics.feature_net_outputs(images, net=(FeatureNet(), params))
  accuracy = float((probs.argmax(-1) == labels).mean())
  require(accuracy >= config.min_accuracy, "min_accuracy",
          f"{config.min_accuracy}: the feature net reached {accuracy:.4f}; weights not written")
  with open(config.output, "wb") as f:
    f.write(flax.serialization.to_bytes(params))
  info = {"test_accuracy": accuracy, "recipe": {"command": "python -m train.classify " + " ".join(recipe_argv(config)),
                                                **RECIPE},
          "params": int(sum(np.size(a) for a in jax.tree.leaves(params)))}
  with open(config.output.replace(".msgpack", ".json"), "w") as f:
    json.dump(info, f, indent=1)
  print(f"test accuracy {accuracy:.4f}; weights written to {config.output}")


def main(argv=None) -> int:
  return cli.main(Config, run, argv=argv, prog="python -m train.feature_net")


if __name__ == "__main__":
  sys.exit(main())
