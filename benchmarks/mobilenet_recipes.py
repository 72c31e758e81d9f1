"""Which MobileNet-family recipe fits a time budget on this machine (issue 3, experiment 1).

    python -m benchmarks.mobilenet_recipes [--budget-min 150]

Times the train step of MobileNet v1 variants (width, input side, stem stride, batch) and prints how many
epochs of Fashion-MNIST each could run within the budget, next to the seed's recipe (56x56x3, width 1, batch 64).
"""

import argparse
import sys

import jax
import jax.numpy as jnp

from benchmarks.common import classifier_step, machine, table, time_interleaved
from jaxtricks.models.mobilenet import MobileNetV1

VARIANTS = [
    # (name, config overrides)
    ("seed: 56x56, stem 2, width 1.0, batch 64", dict(input_size=56, stem_stride=2, width=1.0, batch_size=64)),
    ("28x28, stem 1, width 1.0, batch 64", dict(input_size=28, stem_stride=1, width=1.0, batch_size=64)),
    ("28x28, stem 1, width 0.5, batch 64", dict(input_size=28, stem_stride=1, width=0.5, batch_size=64)),
    ("28x28, stem 1, width 0.5, batch 128", dict(input_size=28, stem_stride=1, width=0.5, batch_size=128)),
    ("28x28, stem 2, width 1.0, batch 128", dict(input_size=28, stem_stride=2, width=1.0, batch_size=128)),
    ("28x28, stem 2, width 0.5, batch 128", dict(input_size=28, stem_stride=2, width=0.5, batch_size=128)),
]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--budget-min", type=float, default=150)
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args(argv)
  rows = []
  for name, overrides in VARIANTS:
    size, batch_size = overrides["input_size"], overrides["batch_size"]
    model = MobileNetV1(width=overrides["width"], stem_stride=overrides["stem_stride"])
    state, step = classifier_step(model, (size, size, 3))
    x = jnp.zeros((batch_size, size, size, 3))
    batch = {"image": x, "label": jnp.zeros((batch_size,), jnp.int32)}
    holder = {"state": state}

    def call():
      holder["state"], m = step(holder["state"], batch, jax.random.PRNGKey(0))
      return m

    t = time_interleaved({"step": call}, repeats=args.repeats, warmup=1)["step"]
    steps_per_epoch = 60000 // batch_size
    epochs = args.budget_min * 60 / (t * steps_per_epoch)
    params = sum(a.size for a in jax.tree.leaves(state.params))
    rows.append([name, f"{params / 1e6:.2f}M", t * 1e3, t * steps_per_epoch / 60, epochs])
  print(f"MobileNet v1 train step (Adam, cross-entropy) — {machine()}, jax {jax.__version__}, median of {args.repeats}")
  print(table(["variant", "params", "step ms", "min per epoch", f"epochs in {args.budget_min:g} min"], rows))


if __name__ == "__main__":
  sys.exit(main())
