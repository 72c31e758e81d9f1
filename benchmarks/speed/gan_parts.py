"""Where a DCGAN step's time goes on this machine: forward and backward of G and D alone, with the generator's
transposed convolutions as nn.ConvTranspose ('flax') and in the sub-pixel form ('subpixel', the default), and
the generator's 7->14 transposed convolution alone in both forms.

    python -m benchmarks.speed.gan_parts [--batch 64]

Each part jitted alone, calls interleaved, median after warm-up; FLOPs: XLA's count (CPU compile).
"""

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks.common import ArgumentParser, machine, table, time_interleaved, xla_flops
from jaxtricks.models.dcgan import ConvTranspose, Discriminator, Generator


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--width", type=int, default=64)
  p.add_argument("--repeats", type=int, default=10)
  args = p.parse_args(argv)
  key = jax.random.PRNGKey(0)
  z = jax.random.normal(key, (args.batch, 100))
  d = Discriminator(width=args.width)
  fake = jax.random.uniform(key, (args.batch, 28, 28, 1), minval=-1, maxval=1)
  dv = d.init(key, fake[:1])

  def run(model, v, inputs):
    def f(params, inputs):
      out, _ = model.apply({**v, "params": params}, inputs, mutable=["batch_stats"])
      return out
    return f

  parts, args_of = {}, {}
  for kind in ("flax", "subpixel"):
    g = Generator(width=args.width, conv_transpose=kind)
    gv = g.init(key, z[:1])
    gf = run(g, gv, z)
    parts[f"G forward ({kind})"] = jax.jit(lambda p, gf=gf: gf(p, z))
    parts[f"G forward + backward to params ({kind})"] = jax.jit(lambda p, gf=gf: jax.grad(lambda p: gf(p, z).sum())(p))
    args_of[f"G forward ({kind})"] = args_of[f"G forward + backward to params ({kind})"] = gv["params"]
  # the generator's 7->14 layer alone (2*width -> width channels, 5x5, stride 2): forward + backward to kernel and input
  h = jax.random.normal(key, (args.batch, 7, 7, 2 * args.width))
  for kind, layer in (("flax", nn.ConvTranspose(args.width, (5, 5), (2, 2), padding="SAME", use_bias=False)),
                      ("subpixel", ConvTranspose(args.width, (5, 5), (2, 2), use_bias=False))):
    name = f"7->14 transposed conv forward + backward ({kind})"
    parts[name] = jax.jit(lambda p, layer=layer: jax.grad(
        lambda p, h: jnp.sum(jnp.sin(layer.apply(p, h))), argnums=(0, 1))(p, h))
    args_of[name] = layer.init(key, h)
  df = run(d, dv, fake)
  parts["D forward"] = jax.jit(lambda p: df(p, fake))
  parts["D forward + backward to params"] = jax.jit(lambda p: jax.grad(lambda p: df(p, fake).sum())(p))
  parts["D forward + backward to input"] = jax.jit(lambda p: jax.grad(lambda x: df(p, x).sum())(fake))
  for name in ("D forward", "D forward + backward to params", "D forward + backward to input"):
    args_of[name] = dv["params"]
  t = time_interleaved({n: (lambda n=n: parts[n](args_of[n])) for n in parts}, repeats=args.repeats)
  rows = []
  for name, f in parts.items():
    flops = xla_flops(f, args_of[name])
    rows.append([name, t[name] * 1e3, flops / 1e9, flops / t[name] / 1e9])
  print(f"DCGAN parts, batch {args.batch}, width {args.width} — {machine()}, jax {jax.__version__}")
  print(table(["part", "ms", "XLA GFLOP", "GFLOP/s"], rows))


if __name__ == "__main__":
  sys.exit(main())
