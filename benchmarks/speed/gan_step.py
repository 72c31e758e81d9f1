"""One GAN training step: alternating updates vs the single loss, time, XLA FLOPs and peak memory.

    python -m benchmarks.speed.gan_step [--batches 64,256]

(a) alternating as two jitted calls (D step, then G step), (b) alternating fused into one jit,
(c) single loss, subtract form, (d) single loss, freeze form, (e) freeze form with one D forward on the fakes
(gan.fused_grads), and (e) computing in bfloat16 (float32 params: flax's mixed precision). DCGAN at 28x28x1
(G ~ 80 M multiply-adds per sample, the TF tutorial's sizes), Adam.
Ratios are to (a), measured in the same run with calls interleaved. FLOPs: XLA's count of the CPU compile on
every machine (common.xla_flops); peak memory: the default backend's compile.

With `--torch-python PY` (an interpreter with PyTorch; default none), the same nets with the same initial weights
in PyTorch (benchmarks/speed/torch_peer.py: eager float32, bf16 autocast, torch.compile default / bf16 / max-autotune,
CUDA graphs on a GPU), each checked first to compute JAX's G(z) and D(x), train one alternating step (D, then
G against the new D with D's params frozen) — the loop a PyTorch user writes; "speed vs PyTorch eager" is that
peer's time over each row's.
"""

import argparse
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.common import ArgumentParser, machine, table, time_interleaved, write_results, xla_flops
from benchmarks.speed.torch_peer import TorchPeer
from jaxtricks import gan, onednn, parallel
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


def torch_rows(state, g, d, x, z, width: int, repeats: int, python: str, only=None) -> tuple[dict, str]:
  """{PyTorch variant: median s of one alternating step} and a note (versions, the output checks, failures)."""
  import tempfile

  from flax import traverse_util
  peer, why = TorchPeer.start(python, gpu=jax.default_backend() == "gpu")
  if peer is None:
    return {}, why
  arrays = {"x": np.asarray(x), "z": np.asarray(z)}
  for player in ("G", "D"):
    for path, leaf in traverse_util.flatten_dict(state.params[player], sep="/").items():
      arrays[f"{player}/{path}"] = np.asarray(leaf)
  ref = {"/g": np.asarray(gan._run(g, state.params["G"], state.batch_stats["G"], z)[0]),
         "/d": np.asarray(gan._run(d, state.params["D"], state.batch_stats["D"], x)[0])}
  try:
    with tempfile.TemporaryDirectory() as tmp:
      outputs, failed, versions = peer.load(arrays, tmp, kind="gan", width=width, lr=LR, only=only or None)
    # float32 convs may run in TF32 on a GPU, in both frameworks: a looser check there
    checks = peer.check(outputs, ref, 1e-3 if jax.default_backend() == "cpu" else 2e-2)
    times = peer.timings(repeats)
  finally:
    peer.close()
  note = (f"{versions}; G(z) and D(x) equal JAX's (max abs diff / max |value|: {', '.join(checks)})"
          + (f"; could not build: {failed}" if failed else ""))
  return {name: t for name, (_, t) in times.items()}, note


LR = 2e-4


def _timed_call(name, fn, state, holders, x, z, *, mesh, jit, halves, half_steps):
  """(call, (XLA FLOPs, peak bytes)) of one variant: call() runs its step once on its own copy of `state` (kept in
  holders[name]); fn None: the two jitted halves, D's step then G's (alternating in 2 jits)."""
  holders[name] = jax.tree.map(jnp.copy, state)
  if mesh is not None:
    holders[name] = jax.device_put(holders[name], parallel.replicated(mesh))
  if fn is None:
    (d_half, g_half), (d_step, g_step) = halves, half_steps

    def call():
      holders[name], _ = d_step(holders[name], x, z)
      holders[name], m = g_step(holders[name], z)
      return m
    f1, p1 = _compiled_stats(d_half, state, x, z)
    f2, p2 = _compiled_stats(g_half, state, z)
    return call, (f1 + f2, max(p1 or 0, p2 or 0))
  jitted = jit(fn)

  def call():
    holders[name], m = jitted(holders[name], x, z)
    return m
  return call, _compiled_stats(fn, state, x, z)


def _rows(batch: int, seconds: dict, stats: dict, peers: dict) -> list[list]:
  """The table: each variant's step time, its ratio to (a) and to PyTorch eager (where measured), its FLOPs and peak
  memory; then the PyTorch rows."""
  eager = peers.get("PyTorch eager")
  base_t, base_f = seconds["(a) alternating, 2 jits"], stats["(a) alternating, 2 jits"][0]
  vs_eager = lambda s: f"{eager / s:.2f}x" if eager else "-"
  rows = []
  for name, (flops, peak) in stats.items():
    rows.append([batch, name, seconds[name] * 1e3, f"{seconds[name] / base_t:.2f}x", vs_eager(seconds[name]),
                 flops / 1e9, f"{flops / base_f:.2f}", (peak or 0) / 2**20])
  for name, s in peers.items():
    rows.append([batch, name, s * 1e3, f"{s / base_t:.2f}x", vs_eager(s), "-", "-", "-"])
  return rows


def measure(batch: int, repeats: int, width: int, flops_only: bool = False, devices: int | str = 1,
            conv_transpose: str = "subpixel", torch_python: str = "", torch_only=None,
            ynn_convolutions: bool = False, taps: bool = False, use_onednn: bool = False) -> tuple[list, str]:
  g, d = Generator(width=width, conv_transpose=conv_transpose), Discriminator(width=width)
  key = jax.random.PRNGKey(0)
  x = jax.random.uniform(key, (batch, 28, 28, 1), minval=-1, maxval=1)
  z = jax.random.normal(key, (batch, Z_DIM))
  mesh = parallel.make_mesh(devices, batch_size=batch) if devices != 1 else None
  if mesh is not None:   # data parallel as train.gan runs it: batch split along 'data', states replicated
    x, z = jax.device_put((x, z), parallel.sharded(mesh))
  tx = gan.two_timescale(optax.adam(LR), optax.adam(LR))
  kw = dict(generator=g, discriminator=d, tx=tx)
  alt = one = gan.init(key, g, d, (1, Z_DIM), (1, 28, 28, 1), tx)
  d_half = functools.partial(gan.discriminator_step, **kw)
  g_half = functools.partial(gan.generator_step, **kw)
  # compiled as train.gan compiles its step (its --cpu-ynn-convolutions; XLA's own convolution kernels on a CPU)
  options = parallel.cpu_compiler_options(ynn_convolutions=ynn_convolutions)
  jit = functools.partial(jax.jit, donate_argnums=0, compiler_options=options)
  d_step, g_step = jit(d_half), jit(g_half)
  fused = lambda s, x, z: gan.single_step(s, x, z, mode="single", **kw)
  variants = {
      "(a) alternating, 2 jits": (None, alt),
      "(b) alternating, 1 jit": (lambda s, x, z: gan.alternating_step(s, x, z, **kw), alt),
      "(c) single, subtract": (lambda s, x, z: gan.single_step(s, x, z, mode="single-subtract", **kw), one),
      "(d) single, freeze": (lambda s, x, z: gan.single_step(s, x, z, mode="single-freeze", **kw), one),
      "(e) single, freeze fused": (fused, one),
  }
  compile_with = {}   # rows compiled otherwise than `jit`
  if options:   # and (e) as XLA:CPU compiles it by default, for the ratio within this run
    variants["(e) with YNNPACK convolutions (XLA:CPU's default)"] = (fused, one)
    compile_with["(e) with YNNPACK convolutions (XLA:CPU's default)"] = functools.partial(jax.jit, donate_argnums=0)
  # (e) in mixed precision: the same params (float32), both nets computing in bfloat16 (JAX's bf16 beside PyTorch's)
  kw16 = dict(generator=Generator(width=width, conv_transpose=conv_transpose, dtype=jnp.bfloat16),
              discriminator=Discriminator(width=width, dtype=jnp.bfloat16), tx=tx)
  variants["(e) in bfloat16 (params float32)"] = (lambda s, x, z: gan.single_step(s, x, z, mode="single", **kw16), one)
  # (e) with every convolution as one matrix product (models.dcgan.conv_taps) or by oneDNN (jaxtricks.onednn): the
  # same parameters
  forms = [("taps", "convolutions as dots")] * taps + [("onednn", "convolutions by oneDNN")] * use_onednn
  for conv, what in forms:
    for dtype, label in ((jnp.float32, "float32"), (jnp.bfloat16, "bfloat16")):
      kwt = dict(generator=Generator(width=width, dtype=dtype, conv=conv),
                 discriminator=Discriminator(width=width, dtype=dtype, conv=conv), tx=tx)
      variants[f"(e) {what}, {label}"] = (
          lambda s, x, z, kwt=kwt: gan.single_step(s, x, z, mode="single", **kwt), one)
  holders, fns, stats = {}, {}, {}
  for name, (fn, state) in variants.items():
    fns[name], stats[name] = _timed_call(name, fn, state, holders, x, z, mesh=mesh, jit=compile_with.get(name, jit),
                                         halves=(d_half, g_half), half_steps=(d_step, g_step))
  if flops_only:
    base = stats["(a) alternating, 2 jits"][0]
    return [[batch, name, flops / 1e9, f"{flops / base:.2f}"] for name, (flops, _) in stats.items()], ""
  t = time_interleaved(fns, repeats=repeats, warmup=2)
  peers, note = torch_rows(alt, g, d, x, z, width, repeats, torch_python, torch_only) if torch_python else ({}, "")
  return _rows(batch, t, stats, peers), note


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batches", default="64,256")
  p.add_argument("--repeats", type=int, default=20)
  p.add_argument("--width", type=int, default=64)
  p.add_argument("--json", default="benchmarks/results/gan_step.json", help="where the table goes ('' : nowhere)")
  p.add_argument("--conv-transpose", choices=("subpixel", "flax"), default="subpixel",
                 help="the generator's transposed convolutions: sub-pixel form (default) or nn.ConvTranspose")
  p.add_argument("--devices", type=lambda s: s if s == "all" else int(s), default=1,
                 help="split each batch over this many devices, or all of them (all)")
  p.add_argument("--torch-variants", default="", help="semicolon-separated PyTorch forms to time (default all)")
  p.add_argument("--ynn-convolutions", action=argparse.BooleanOptionalAction, default=False,
                 help="on a CPU, compile the JAX steps with XLA's YNNPACK convolutions (its default) rather than "
                      "its own kernels (train.gan's default, --no-cpu-ynn-convolutions)")
  p.add_argument("--convs-as-dots", action="store_true",
                 help="also time the fused single-loss step with every convolution as one matrix product over its "
                      "taps (models.dcgan.conv_taps), in float32 and in bfloat16")
  p.add_argument("--onednn", action="store_true",
                 help="also time the fused single-loss step with every convolution by oneDNN (jaxtricks.onednn, "
                      "built by `make onednn`), in float32 and in bfloat16; on one device")
  p.add_argument("--flops-only", action="store_true", help="only print XLA's FLOP counts (no timing, no file)")
  p.add_argument("--torch-python", default="",
                 help="also time the PyTorch peers under this interpreter (one with torch; e.g. a venv's python)")
  args = p.parse_args(argv)
  if args.onednn and not onednn.available():
    p.error(f"--onednn: {onednn.NOT_BUILT}")
  if args.onednn and args.devices != 1:
    p.error("--onednn: on one device (--devices 1): the oneDNN call runs whole arrays, its threads on every core")
  batches = p.comma_list("--batches", args.batches)
  if args.flops_only:
    rows = sum((measure(b, 0, args.width, flops_only=True, conv_transpose=args.conv_transpose)[0]
                for b in batches), [])
    print(f"GAN step, DCGAN 28x28 width {args.width}: XLA FLOPs of the CPU compile")
    print(table(["batch", "variant", "XLA GFLOP", "FLOPs / (a)"], rows))
    return 0
  rows, notes = [], []
  for b in batches:
    more, note = measure(b, args.repeats, args.width, devices=args.devices, conv_transpose=args.conv_transpose,
                         torch_python=args.torch_python, ynn_convolutions=args.ynn_convolutions,
                         torch_only=[v.strip() for v in args.torch_variants.split(";") if v.strip()],
                         taps=args.convs_as_dots, use_onednn=args.onednn)
    rows += more
    notes += [f"batch {b}: {note}"] if note else []
  convs = "" if jax.default_backend() != "cpu" else (
      ", YNNPACK convolutions" if args.ynn_convolutions else ", XLA's own convolutions (as train.gan)")
  print(f"GAN step, DCGAN 28x28 width {args.width} ({args.conv_transpose} transposed convs{convs}), Adam, batch over "
        f"{jax.device_count() if args.devices == 'all' else args.devices} device(s) — {machine()}, jax {jax.__version__}, "
        f"median of {args.repeats} after warm-up, calls interleaved")
  if convs:
    notes.insert(0, f"JAX rows compiled with{convs[1:]}")
  header = ["batch", "variant", "step ms", "time / (a)", "speed vs PyTorch eager", "XLA GFLOP", "FLOPs / (a)",
            "peak MiB"]
  print(table(header, rows))
  for note in notes:
    print(note)
  if args.json:
    write_results(args.json, "benchmarks.speed.gan_step", argv, header, rows, **({"peers": notes} if notes else {}))


if __name__ == "__main__":
  sys.exit(main())
