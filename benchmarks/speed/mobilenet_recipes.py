"""Which MobileNet-family recipe fits a time budget on this machine (issue 3, experiment 1).

    python -m benchmarks.speed.mobilenet_recipes [--budget-min 150]

Times the train step of MobileNet v1 variants (width, input side, stem stride, batch) and prints how many
epochs of Fashion-MNIST each could run within the budget, next to the seed's recipe (56x56x3, width 1, batch 64).
"""

import sys

import jax
import jax.numpy as jnp

from benchmarks.common import ArgumentParser, classifier_step, machine, table, time_interleaved
from jaxtricks.models.mobilenet import MobileNetV1, blocks_downsampling_at, depthwise_conv_shifted

VARIANTS = [
    # (name, config overrides)
    ("seed: 56x56, stem 2, width 1.0, batch 64", dict(input_size=56, stem_stride=2, width=1.0, batch_size=64)),
    ("28x28, stem 1, width 1.0, batch 64", dict(input_size=28, stem_stride=1, width=1.0, batch_size=64)),
    ("28x28, stem 1, width 0.5, batch 64", dict(input_size=28, stem_stride=1, width=0.5, batch_size=64)),
    ("28x28, stem 1, width 0.5, batch 128", dict(input_size=28, stem_stride=1, width=0.5, batch_size=128)),
    ("28x28, stem 2, width 1.0, batch 128", dict(input_size=28, stem_stride=2, width=1.0, batch_size=128)),
    ("28x28, stem 2, width 0.5, batch 128", dict(input_size=28, stem_stride=2, width=0.5, batch_size=128)),
    # issue 15: keep 7x7 maps through the last ten blocks (stride 2 only in blocks 1 and 3)
    ("28x28, stem 1, 7x7 from block 3, width 0.5, batch 128",
     dict(input_size=28, stem_stride=1, width=0.5, batch_size=128, blocks=blocks_downsampling_at(1, 3))),
    ("28x28, stem 1, 7x7 from block 3, width 0.75, batch 128",
     dict(input_size=28, stem_stride=1, width=0.75, batch_size=128, blocks=blocks_downsampling_at(1, 3))),
    ("28x28, stem 1, 7x7 from block 3, width 1.0, batch 128",
     dict(input_size=28, stem_stride=1, width=1.0, batch_size=128, blocks=blocks_downsampling_at(1, 3))),
    ("28x28, stem 1, 14x14 to block 5, width 0.5, batch 128",
     dict(input_size=28, stem_stride=1, width=0.5, batch_size=128, blocks=blocks_downsampling_at(3, 5))),
]


def layer_table(repeats: int) -> None:
  """One depthwise 3x3 convolution, stride 1, forward + backward (gradients of input and kernel), batch 128:
  nn.Conv(feature_group_count=C) against the shifted-sum form MobileNetV1 uses."""
  rows = []
  for shape in [(128, 28, 28, 64), (128, 14, 14, 128), (128, 7, 7, 256), (128, 7, 7, 512)]:
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 1, shape[-1]))
    grouped = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", feature_group_count=x.shape[-1],
                                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    calls = {}
    for name, f in [("grouped conv", grouped), ("shifted", lambda x, k: depthwise_conv_shifted(x, k, 1))]:
      g = jax.jit(jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) ** 2), argnums=(0, 1)))
      calls[name] = lambda g=g: g(x, k)
    t = time_interleaved(calls, repeats=repeats, warmup=1)
    rows.append(["x".join(map(str, shape[1:])), t["grouped conv"] * 1e3, t["shifted"] * 1e3,
                 t["grouped conv"] / t["shifted"]])
  print(f"Depthwise 3x3, forward + backward, batch 128 — {machine()}, jax {jax.__version__}, median of {repeats}")
  print(table(["HxWxC", "grouped nn.Conv ms", "shifted ms", "speed-up"], rows))
  print()


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--budget-min", type=float, default=150)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--only", default="", help="substring: time only the variants whose name contains it")
  p.add_argument("--depthwise", default="shifted", choices=["shifted", "conv"],
                 help="MobileNet's depthwise convolution: the shifted-sum form (default) or nn.Conv with groups")
  p.add_argument("--layers", action="store_true",
                 help="first time one depthwise 3x3 layer, forward + backward, in both forms")
  args = p.parse_args(argv)
  if args.layers:
    layer_table(args.repeats)
  rows = []
  for name, overrides in [(n, o) for n, o in VARIANTS if args.only in n]:
    size, batch_size = overrides["input_size"], overrides["batch_size"]
    model = MobileNetV1(width=overrides["width"], stem_stride=overrides["stem_stride"], depthwise=args.depthwise,
                        **({"blocks": overrides["blocks"]} if "blocks" in overrides else {}))
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
  print(f"MobileNet v1 train step (Adam, cross-entropy, depthwise {args.depthwise}) — {machine()}, jax {jax.__version__}, median of {args.repeats}")
  print(table(["variant", "params", "step ms", "min per epoch", f"epochs in {args.budget_min:g} min"], rows))


if __name__ == "__main__":
  sys.exit(main())
