"""One GAN training step: alternating updates vs the single loss, time, XLA FLOPs and peak memory.

    python -m benchmarks.gan_step [--batches 64,256]

(a) alternating as two jitted calls (D step, then G step), (b) alternating fused into one jit,
(c) single loss, subtract form, (d) single loss, freeze form, (e) freeze form with one D forward on the fakes
(gan.fused_grads). DCGAN at 28x28x1 (G ~ 80 M multiply-adds per sample, the TF tutorial's sizes), Adam.
Ratios are to (a), measured in the same run with calls interleaved. FLOPs: XLA's count of the CPU compile on
every machine (common.xla_flops); peak memory: the default backend's compile.
"""

import argparse
import functools
import sys

import jax
import jax.numpy as jnp
import optax

from benchmarks.common import machine, table, time_interleaved, write_results, xla_flops
from jaxtricks import gan, parallel
from jaxtricks.models.dcgan import Discriminator, Generator

Z_DIM = 100


def _compiled_stats(fn, *args):
  """(XLA FLOPs of the CPU compile, peak bytes of the compile for the default backend)."""
  compiled = jax.jit(fn).lower(*args).compile()
  mem = compiled.memory_analysis()
  peak = None
  if mem is not None:
    peak = (getattr(mem, "temp_size_in_bytes", 0) + getattr(mem, "argument_size_in_bytes", 0)
            + getattr(mem, "output_size_in_bytes", 0))
  return xla_flops(fn, *args, compiled=compiled), peak


def measure(batch: int, repeats: int, width: int, flops_only: bool = False, devices: int = 1,
            conv_transpose: str = "subpixel") -> list:
  g, d = Generator(width=width, conv_transpose=conv_transpose), Discriminator(width=width)
  key = jax.random.PRNGKey(0)
  x = jax.random.uniform(key, (batch, 28, 28, 1), minval=-1, maxval=1)
  z = jax.random.normal(key, (batch, Z_DIM))
  mesh = parallel.make_mesh(devices, batch_size=batch) if devices != 1 else None
  if mesh is not None:   # data parallel as train.gan runs it: batch split along 'data', states replicated
    x, z = jax.device_put((x, z), parallel.sharded(mesh))
  tx = gan.two_timescale(optax.adam(2e-4), optax.adam(2e-4))
  kw = dict(generator=g, discriminator=d, tx=tx)
  alt = one = gan.init(key, g, d, (1, Z_DIM), (1, 28, 28, 1), tx)
  d_half = functools.partial(gan.discriminator_step, **kw)
  g_half = functools.partial(gan.generator_step, **kw)
  d_step, g_step = jax.jit(d_half, donate_argnums=0), jax.jit(g_half, donate_argnums=0)
  variants = {
      "(a) alternating, 2 jits": (None, alt),
      "(b) alternating, 1 jit": (lambda s, x, z: gan.alternating_step(s, x, z, **kw), alt),
      "(c) single, subtract": (lambda s, x, z: gan.single_step(s, x, z, form="subtract", **kw), one),
      "(d) single, freeze": (lambda s, x, z: gan.single_step(s, x, z, form="freeze", **kw), one),
      "(e) single, freeze fused": (lambda s, x, z: gan.single_step(s, x, z, form="fused", **kw), one),
  }
  holders, fns, stats = {}, {}, {}
  for name, (fn, state) in variants.items():
    holders[name] = jax.tree.map(jnp.copy, state)
    if mesh is not None:
      holders[name] = jax.device_put(holders[name], parallel.replicated(mesh))
    if fn is None:
      def call(name=name):
        holders[name], _ = d_step(holders[name], x, z)
        holders[name], m = g_step(holders[name], z)
        return m
      f1, p1 = _compiled_stats(d_half, state, x, z)
      f2, p2 = _compiled_stats(g_half, state, z)
      stats[name] = (f1 + f2, max(p1 or 0, p2 or 0))
    else:
      jitted = jax.jit(fn, donate_argnums=0)
      def call(name=name, jitted=jitted):
        holders[name], m = jitted(holders[name], x, z)
        return m
      stats[name] = _compiled_stats(fn, state, x, z)
    fns[name] = call
  if flops_only:
    base = stats["(a) alternating, 2 jits"][0]
    return [[batch, name, flops / 1e9, f"{flops / base:.2f}"] for name, (flops, _) in stats.items()]
  t = time_interleaved(fns, repeats=repeats, warmup=2)
  base_t, base_f = t["(a) alternating, 2 jits"], stats["(a) alternating, 2 jits"][0]
  rows = []
  for name in variants:
    flops, peak = stats[name]
    rows.append([batch, name, t[name] * 1e3, f"{t[name] / base_t:.2f}x", flops / 1e9, f"{flops / base_f:.2f}",
                 (peak or 0) / 2**20])
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batches", default="64,256")
  p.add_argument("--repeats", type=int, default=20)
  p.add_argument("--width", type=int, default=64)
  p.add_argument("--json", default="benchmarks/results/gan_step.json", help="where the table goes ('' : nowhere)")
  p.add_argument("--conv-transpose", choices=("subpixel", "flax"), default="subpixel",
                 help="the generator's transposed convolutions: sub-pixel form (default) or nn.ConvTranspose")
  p.add_argument("--devices", type=int, default=1, help="split each batch over this many devices (0: all)")
  p.add_argument("--flops-only", action="store_true", help="only print XLA's FLOP counts (no timing, no file)")
  args = p.parse_args(argv)
  if args.flops_only:
    rows = sum((measure(int(b), 0, args.width, flops_only=True, conv_transpose=args.conv_transpose)
                for b in args.batches.split(",")), [])
    print(f"GAN step, DCGAN 28x28 width {args.width}: XLA FLOPs of the CPU compile")
    print(table(["batch", "variant", "XLA GFLOP", "FLOPs / (a)"], rows))
    return 0
  rows = []
  for b in (int(v) for v in args.batches.split(",")):
    rows += measure(b, args.repeats, args.width, devices=args.devices, conv_transpose=args.conv_transpose)
  print(f"GAN step, DCGAN 28x28 width {args.width} ({args.conv_transpose} transposed convs), Adam, batch over "
        f"{args.devices or jax.device_count()} device(s) — {machine()}, jax {jax.__version__}, "
        f"median of {args.repeats} after warm-up, calls interleaved")
  header = ["batch", "variant", "step ms", "time / (a)", "XLA GFLOP", "FLOPs / (a)", "peak MiB"]
  print(table(header, rows))
  if args.json:
    write_results(args.json, "benchmarks.gan_step", argv, header, rows)


if __name__ == "__main__":
  sys.exit(main())
