"""Langevin sampling throughput of the EBM's energy net: samples x steps per second, XLA FLOPs, and the gap to
PyTorch eager.

    python -m benchmarks.speed.langevin                       # the sweep and the comparison at 128 chains
    python -m benchmarks.speed.langevin --chains 16,64,256,1024 --steps 20,60 --channels 64

Table 1 (sweep): for each number of chains and chain length K, one jitted chain of K steps (the way the
trainer runs it on this backend: unrolled on CPU, a lax.scan elsewhere); its XLA FLOP count (cost analysis of
one Langevin step compiled for the CPU, times K: XLA:GPU's count leaves out cuDNN convolutions) and achieved
FLOP/s, as a fraction of the FLOP/s of a 4096x4096 float32 matmul measured in the same run.
Table 2 (at --compare-chains chains, K = --compare-steps): the ways to run the same chain — lax.scan, scan with
the body unrolled, a Python loop of one jitted step, a Python loop over chains (each chain on its own, vmapped
vs not), and the same net and chain in PyTorch eager (optional: skipped with a note when torch is missing), the net in NCHW layout and in bfloat16
(written with lax.conv_general_dilated; both checked against the flax net's energies).
The PyTorch net gets the JAX net's spectrally normalized weights and its energies are checked against JAX's
before timing. Median of --repeats after the first call (compile + one run, reported); ratios within this run.
"""

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import ArgumentParser, machine, table, time_call, time_interleaved, write_results, xla_flops
from benchmarks.speed.torch_peer import TorchPeer
from jaxtricks import ebm, langevin, parallel
from jaxtricks.models.energy import EnergyNet

SAMPLER = dict(step_size=20.0, noise_scale=0.005, grad_clip=0.01, data_range=(0.0, 1.0))


def energy_and_variables(channels: int):
  model = EnergyNet(stem=channels, stages=(channels, 2 * channels, 4 * channels))
  # jitted: one compile, where an eager init compiles each of its ~270 ops alone (11 s of a toy run)
  variables = jax.jit(lambda key, x: model.init(key, x, update_stats=True))(jax.random.PRNGKey(0),
                                                                             jnp.zeros((1, 28, 28, 1)))
  return model, variables, ebm.energy_fn(model, variables["params"], variables["batch_stats"])


def compile_timed(jitted, *args):
  """(compiled executable, compile seconds)."""
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - t0


def chain_flops(model, variables, x, key, num_steps: int) -> float:
  """XLA FLOPs of a K-step chain: one Langevin step's count (common.xla_flops: the CPU compile's) x K. (The cost
  analysis of a lax.scan counts its body once, whatever the trip count, so the chain's own count is only right
  unrolled.)"""
  def step(variables, x, k):   # the weights as an argument, so that nothing on another device is closed over
    energy = ebm.energy_fn(model, variables["params"], variables["batch_stats"])
    return langevin.langevin_step(energy, x, k, **SAMPLER)
  return xla_flops(step, variables, x, key) * num_steps


def matmul_flops_per_sec(n: int = 4096, repeats: int = 5) -> float:
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
  f = jax.jit(lambda a: a @ a)
  _, t = time_call(lambda: f(a), repeats=repeats, warmup=0)
  return 2 * n ** 3 / t


def chain_fn(energy, num_steps: int, unroll):
  return jax.jit(lambda x, k: langevin.langevin_chain(energy, x, k, num_steps=num_steps, unroll=unroll, **SAMPLER))


def sharded_chain_fn(energy, num_steps: int, unroll):
  """The chain with its chains split over all devices along 'data' (as train.ebm does on several devices)."""
  sharding = parallel.sharded(parallel.make_mesh())
  f = chain_fn(energy, num_steps, unroll)
  return lambda x, k: f(jax.device_put(x, sharding), k)


def sweep(model, variables, energy, chains_list, steps_list, repeats, peak) -> list:
  unroll = ebm.default_unroll()
  rows = []
  for k in steps_list:
    for n in chains_list:
      x = jax.random.uniform(jax.random.PRNGKey(1), (n, 28, 28, 1))
      key = jax.random.PRNGKey(2)
      f, compile_s = compile_timed(chain_fn(energy, k, unroll), x, key)
      flops = chain_flops(model, variables, x, key, k)
      _, t = time_call(lambda: f(x, key), repeats=repeats, warmup=0)
      chain = ("unrolled" if unroll is True or unroll >= max(k, 2) else "scan" if unroll == 1
               else f"scan of {unroll}-step blocks")
      rows.append([n, k, chain, compile_s, t / k * 1e3, n * k / t, flops / 1e9,
                   flops / t / 1e9, f"{flops / t / peak:.1%}"])
      print(" ", rows[-1], flush=True)
  return rows


def python_loop_of_steps(energy, num_steps):
  step = jax.jit(lambda x, k: langevin.langevin_step(energy, x, k, **SAMPLER))

  def run(x, key):
    for i in range(num_steps):
      x = step(x, jax.random.fold_in(key, i))
    return x
  return run


def loop_over_chains(energy, num_steps, unroll):
  """Each chain alone (batch of 1), one after the other: what 'not vmapped' means."""
  f = chain_fn(energy, num_steps, unroll)

  def run(x, key):
    return [f(x[i:i + 1], jax.random.fold_in(key, i)) for i in range(x.shape[0])]
  return run


def normalized_kernels(variables) -> dict:
  """{conv path: (kernel HWIO float32, bias)} as flax's SpectralNorm uses them at update_stats=False: one power
  iteration from the stored u, then W / sigma. Also {'dense': (kernel, bias)}."""
  params, stats = variables["params"], variables["batch_stats"]
  out = {"dense": (np.asarray(params["Dense_0"]["kernel"]), np.asarray(params["Dense_0"]["bias"]))}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    keys = tuple(k.key for k in path)
    if keys[-1] != "kernel" or keys[0] == "Dense_0":
      continue
    s = stats
    for name in keys[:-2]:
      s = s[name]
    w = np.asarray(leaf, np.float64)
    w2 = w.reshape(-1, w.shape[-1])
    u = np.asarray(s["SpectralNorm_0"]["Conv_0/kernel/u"], np.float64)
    v = u @ w2.T
    v /= np.linalg.norm(v) + 1e-12
    u = v @ w2
    u /= np.linalg.norm(u) + 1e-12
    bias = params
    for name in keys[:-1]:
      bias = bias[name]
    out[keys[:-2]] = ((w / (v @ w2 @ u.T)[0, 0]).astype(np.float32), np.asarray(bias["bias"]))
  return out


def _blocks(channels):
  for i, c in enumerate((channels, 2 * channels, 4 * channels)):
    yield f"_ResBlock_{i}", c


def functional_energy(kernels, channels: int, *, layout: str = "NHWC", dtype=jnp.float32, pool: str = "reshape"):
  """The energy net written with lax.conv_general_dilated, for layout and dtype experiments; x is NHWC
  [B, 28, 28, 1] float32 in every case (transposed/cast inside), energies float32."""
  spec = {"NHWC": ("NHWC", "HWIO", "NHWC"), "NCHW": ("NCHW", "OIHW", "NCHW")}[layout]
  k = {p: (jnp.asarray(w if layout == "NHWC" else w.transpose(3, 2, 0, 1), dtype), jnp.asarray(b, dtype))
       for p, (w, b) in kernels.items() if p != "dense"}
  c_axis = spec[0].index("C")
  hw = tuple(i for i, d in enumerate(spec[0]) if d in "HW")

  def conv(h, path):
    w, b = k[path]
    y = jax.lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=spec)
    return y + b.reshape([-1 if i == c_axis else 1 for i in range(4)])

  def pool_2x2(h):   # as models.energy.avg_pool_2x2, in either layout (or as nn.avg_pool: reduce_window)
    pad = [(0, h.shape[i] % 2) if i in hw else (0, 0) for i in range(4)]
    if pool == "reduce_window":
      window = [2 if i in hw else 1 for i in range(4)]
      return jax.lax.reduce_window(h, np.zeros((), h.dtype), jax.lax.add, window, window, pad) / 4
    h = jnp.pad(h, pad)
    shape = sum(([d // 2, 2] if i in hw else [d] for i, d in enumerate(h.shape)), [])
    return h.reshape(shape).mean(axis=tuple(hw[j] + j + 1 for j in range(2)))

  dense_w, dense_b = (jnp.asarray(a) for a in kernels["dense"])

  def energy(x_BHWC):
    h = x_BHWC.astype(dtype)
    if layout == "NCHW":
      h = jnp.transpose(h, (0, 3, 1, 2))
    h = jax.nn.silu(conv(h, ("_SNConv_0",)))
    for block, c in _blocks(channels):
      r = conv(jax.nn.silu(conv(h, (block, "_SNConv_0"))), (block, "_SNConv_1"))
      skip = h if h.shape[c_axis] == c else conv(h, (block, "_SNConv_2"))
      h = pool_2x2(jax.nn.silu(r + skip))
    return h.sum(axis=hw).astype(jnp.float32) @ dense_w[:, 0] + dense_b[0]
  return energy


def torch_rows(kernels, x, channels: int, k: int, repeats: int, e_ref, tol: float, python: str | None,
               only: list[str] | None = None):
  """{PyTorch variant: (first call s, median s)} and a note on versions, energy checks and what failed."""
  import tempfile
  peer, why = TorchPeer.start(python, gpu=jax.default_backend() == "gpu")
  if peer is None:
    return {}, why
  arrays = {"x": np.asarray(x)}
  for path, (w, b) in kernels.items():
    name = "dense" if path == "dense" else "/".join(path)
    arrays[f"{name}:w"], arrays[f"{name}:b"] = w, b
  try:
    with tempfile.TemporaryDirectory() as tmp:
      energies, failed, versions = peer.load(arrays, tmp, kind="langevin", channels=channels, num_steps=k,
                                             sampler={k: v for k, v in SAMPLER.items() if k != "data_range"},
                                             only=only or None)
    checks = peer.check(energies, {"": np.asarray(e_ref)}, tol)
    results = peer.timings(repeats)
  finally:
    peer.close()
  note = (f"{versions}; energies equal JAX's (max abs diff / max |U|: {', '.join(checks)})"
          + (f"; could not build: {failed}" if failed else ""))
  return results, note


def compare(model, energy, variables, channels, n, k, repeats, peak, only=None, torch_python=None,
            torch_only=None) -> list:
  x = jax.random.uniform(jax.random.PRNGKey(1), (n, 28, 28, 1))
  key = jax.random.PRNGKey(2)
  kernels = normalized_kernels(variables)
  e_ref = np.asarray(energy(x))
  nchw = functional_energy(kernels, channels, layout="NCHW")
  bf16 = functional_energy(kernels, channels, dtype=jnp.bfloat16)
  # float32 convolutions on a GPU may run in TF32 (10-bit mantissa) in both JAX and PyTorch: a looser check there
  tol = 1e-3 if jax.default_backend() == "cpu" else 2e-2
  for name, f, t in (("NHWC", functional_energy(kernels, channels), tol), ("NCHW", nchw, tol),
                     ("bfloat16", bf16, 5e-2)):
    np.testing.assert_allclose(np.asarray(f(x)), e_ref, rtol=t, atol=t * np.abs(e_ref).max(), err_msg=name)
  variants = {
      "lax.scan": chain_fn(energy, k, 1),
      "lax.scan, unroll=5": chain_fn(energy, k, 5),
      "unrolled (unroll=True)": chain_fn(energy, k, True),
      "Python loop of a jitted step": python_loop_of_steps(energy, k),
      "NCHW layout, lax.scan": chain_fn(nchw, k, 1),
      "NCHW layout, unrolled": chain_fn(nchw, k, True),
      "bfloat16 net, unrolled": chain_fn(bf16, k, True),
  }
  if jax.device_count() > 1 and n % jax.device_count() == 0:
    variants[f"unrolled, chains split over {jax.device_count()} devices"] = sharded_chain_fn(energy, k, True)
  flops = chain_flops(model, variables, x, key, k)
  results = {}
  for name, f in variants.items():
    if only and name not in only:
      continue
    first, t = time_call(lambda: f(x, key), repeats=repeats, warmup=0)
    results[name] = (first, t)   # first: compile + one run
    print(" ", name, first, t, flush=True)
  small = min(n, 16)
  per_chain_unrolled = loop_over_chains(energy, k, True)
  batched = chain_fn(energy, k, True)
  _, t_loop = time_call(lambda: per_chain_unrolled(x[:small], key), repeats=max(1, repeats // 2), warmup=0)
  _, t_vmap = time_call(lambda: batched(x[:small], key), repeats=repeats, warmup=0)
  results[f"{small} chains one by one (Python loop over chains)"] = (float("nan"), t_loop * n / small)
  results[f"{small} chains batched, for comparison"] = (float("nan"), t_vmap * n / small)
  peers, torch_note = torch_rows(kernels, x, channels, k, repeats, e_ref, tol, torch_python, torch_only)
  results.update(peers)
  ref = results.get("PyTorch eager", (None, None))[1]
  best = min((t for name, (_, t) in results.items() if name in peers and "bf16" not in name), default=None)
  rows = []
  for name, (first, t) in results.items():
    first = first if first == first else "–"   # nan: the first call is not timed for that row
    rows.append([name, first, t / k * 1e3, n * k / t, f"{flops / t / peak:.1%}",
                 f"{ref / t:.2f}x" if ref else "-", f"{best / t:.2f}x" if best else "-"])
  return rows, torch_note, flops


def unroll_value(word: str) -> int | str:
  """A --long-unrolls value: a block size, or "auto" (train.ebm's default) or "full" (the whole chain)."""
  return word if word in ("auto", "full") else int(word)


def pooling(args) -> int:
  """Compile time and speed of the unrolled chain: 2x2 average pooling as reduce_window vs pad+reshape+mean."""
  _, variables, _ = energy_and_variables(args.channels)
  kernels = normalized_kernels(variables)
  rows = []
  for n in args.pooling:
    x = jax.random.uniform(jax.random.PRNGKey(1), (n, 28, 28, 1))
    key = jax.random.PRNGKey(2)
    for kind in ("reduce_window", "reshape"):
      compiled, compile_s = compile_timed(
          chain_fn(functional_energy(kernels, args.channels, pool=kind), args.compare_steps, True), x, key)
      _, t = time_call(lambda: compiled(x, key), repeats=args.repeats, warmup=1)
      rows.append([n, args.compare_steps, kind, compile_s, t / args.compare_steps * 1e3])
  print(f"Pooling in the unrolled chain, c={args.channels} — {machine()}, jax {jax.__version__}")
  print(table(["chains", "K", "pooling", "compile s", "ms per step"], rows))
  return 0


SWEEP_HEADER = ["chains", "K", "chain", "compile s", "ms per step", "samples*steps/s", "XLA GFLOP per call", "GFLOP/s",
                "of matmul peak"]
COMPARE_HEADER = ["variant", "first call s", "ms per step", "samples*steps/s", "of matmul peak", "speed vs PyTorch",
                  "vs best PyTorch float32"]


def flops_table(args) -> int:
  """--flops-only: XLA's FLOP count of one step per chain count."""
  model, variables, _ = energy_and_variables(args.channels)
  rows = []
  for n in sorted({*args.chains, args.compare_chains}):
    x = jax.random.uniform(jax.random.PRNGKey(1), (n, 28, 28, 1))
    rows.append([n, chain_flops(model, variables, x, jax.random.PRNGKey(2), 1) / 1e9])
  print(f"XLA GFLOP of one Langevin step (CPU compile), c={args.channels}")
  print(table(["chains", "GFLOP per step"], rows))
  return 0


def sweep_table(args, model, variables, energy, peak: float) -> list:
  """Table 1: the chain as the trainer runs it, at each chain count x K within --max-sample-steps; printed."""
  chains = args.chains
  limit = args.max_sample_steps or None
  rows = []
  for k in args.steps:
    rows += sweep(model, variables, energy, [n for n in chains if limit is None or n * k <= limit], [k],
                  args.repeats, peak)
  print(table(SWEEP_HEADER, rows))
  return rows


def compare_table(args, model, variables, energy, peak: float) -> dict:
  """Table 2: every JAX variant of one chain size against the PyTorch peers; printed, and returned as
  {"title", "header", "rows"}."""
  rows, note, flops = compare(model, energy, variables, args.channels, args.compare_chains, args.compare_steps,
                              args.repeats, peak, only=[v.strip() for v in args.variants.split(";") if v.strip()],
                              torch_python=args.torch_python,
                              torch_only=[v.strip() for v in args.torch_variants.split(";") if v.strip()])
  title = f"{args.compare_chains} chains x K={args.compare_steps} ({flops / 1e9:.1f} XLA GFLOP); {note}"
  print(f"\n{title}")
  print(table(COMPARE_HEADER, rows))
  return {"title": title, "header": COMPARE_HEADER, "rows": rows}


def long_chains(steps: int, chains: int, unrolls: list, full_steps: int, repeats: int, block_loop: int = 0) -> list:
  """Rows [unroll, scan's unroll, K, compile s, ms per step] of one jitted K-step chain of the main job's net
  (`ebm.energy_net(16, "strided")`, train.ebm's sampler, its weights as arguments as in training) under each
  SamplerConfig.unroll: "auto" (train.ebm's default), ints, and "full" at `full_steps` steps (a fully unrolled
  500-step chain does not compile in minutes on a 2-core CPU). Compile: lower + compile; ms per step: median of
  `repeats` calls after one, interleaved over the variants. `block_loop` B > 0 adds a Python loop of one jitted
  B-step chain (no while loop: each block at the unrolled speed)."""
  import dataclasses
  model = ebm.energy_net(16, "strided")
  x = jax.random.uniform(jax.random.PRNGKey(1), (chains, 28, 28, 1))
  key = jax.random.PRNGKey(2)
  variables = jax.jit(lambda k: model.init(k, x[:1]))(jax.random.PRNGKey(0))
  base = ebm.SamplerConfig(num_steps=steps, step_size=10.0, noise_scale=0.005, grad_clip=0.03)   # train.ebm's

  def chain(sampler):
    return jax.jit(lambda v, x, k: ebm.run_chains(ebm.energy_fn(model, v["params"], v.get("batch_stats", {})), x, k,
                                                  sampler))

  rows, calls = [], {}
  for unroll in unrolls:
    k = full_steps if unroll == "full" else steps
    sampler = dataclasses.replace(base, num_steps=k, unroll=unroll)
    compiled, compile_s = compile_timed(chain(sampler), variables, x, key)
    name = f"{unroll} (K={k})"
    calls[name] = lambda compiled=compiled: compiled(variables, x, key)
    rows.append([unroll, str(ebm.scan_unroll(unroll)), k, compile_s])
    print(" ", rows[-1], flush=True)
  if block_loop:
    block, compile_s = compile_timed(chain(dataclasses.replace(base, num_steps=block_loop, unroll="full")),
                                     variables, x, key)

    def python_loop(x=x):
      for i in range(-(-steps // block_loop)):
        x = block(variables, x, jax.random.fold_in(key, i))
      return x
    calls["python loop"] = python_loop
    rows.append([f"Python loop of a jitted {block_loop}-step chain", "True", -(-steps // block_loop) * block_loop,
                 compile_s])
  times = time_interleaved(calls, repeats=repeats, warmup=1)
  for row, t in zip(rows, times.values()):
    row.append(t / row[2] * 1e3)
  return rows


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--channels", type=int, default=64, help="energy net width (64: the issue's default net)")
  p.add_argument("--chains", default="16,64,256,1024")
  p.add_argument("--steps", default="20,60", help="chain lengths K")
  p.add_argument("--max-sample-steps", type=int, default=25000,
                 help="skip sweep points with chains x K above this (CPU time); 0: no limit")
  p.add_argument("--compare-chains", type=int, default=128)
  p.add_argument("--compare-steps", type=int, default=20)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--skip-sweep", action="store_true")
  p.add_argument("--matmul-size", type=int, default=4096, help="side of the float32 matmul that sets 'of matmul peak'")
  p.add_argument("--skip-compare", action="store_true", help="only the sweep (table 1)")
  p.add_argument("--variants", default="", help="semicolon-separated names of table 2's JAX variants to run; default all")
  p.add_argument("--torch-python", default="",
                 help="the interpreter of the PyTorch rows (default: this one), e.g. a venv where torch installs")
  p.add_argument("--torch-variants", default="", help="semicolon-separated PyTorch forms to time (default all: "
                 "eager, eager bf16 autocast, torch.compile, its bf16, max-autotune; names as in the table)")
  p.add_argument("--flops-only", action="store_true", help="only print XLA's FLOP count of one step per chain count")
  p.add_argument("--json", default="", help="also write both tables here (e.g. benchmarks/results/langevin.json)")
  p.add_argument("--pooling", default="", help="only compare pooling forms: compile s and ms/step of the unrolled "
                 "chain with reduce_window (nn.avg_pool) vs reshape pooling, at these chain counts (e.g. 64,256)")
  p.add_argument("--long-chains", type=int, default=0, help="only time chains of this many steps (e.g. 500) of the "
                 "main job's net (strided, c=16) at --compare-chains chains under each --long-unrolls: compile s, "
                 "ms/step")
  p.add_argument("--long-unrolls", default="auto,1,10,60,full", help="--unroll values of --long-chains")
  p.add_argument("--long-full-steps", type=int, default=60, help="chain length of the 'full' row of --long-chains")
  p.add_argument("--long-block-loop", type=int, default=20, help="also a Python loop of a jitted chain of this many "
                 "steps (0: none)")
  args = p.parse_args(argv)
  args.chains, args.steps = p.comma_list("--chains", args.chains), p.comma_list("--steps", args.steps)
  args.pooling = p.comma_list("--pooling", args.pooling, example="64,256") if args.pooling else []
  args.long_unrolls = p.comma_list("--long-unrolls", args.long_unrolls, of=unroll_value,
                                   what="block sizes or auto or full", example="auto,10,full")
  # the CPU as train.ebm runs it by default: one XLA device per core (table 2c's split row), unless the user's
  # JAX_NUM_CPU_DEVICES / XLA_FLAGS say otherwise
  parallel.set_cpu_devices(parallel.cpu_cores())
  if args.pooling:
    return pooling(args)
  if args.long_chains:
    rows = long_chains(args.long_chains, args.compare_chains, args.long_unrolls, args.long_full_steps, args.repeats,
                       args.long_block_loop)
    print(f"{args.compare_chains} chains of the main job's net (strided, c=16), K = {args.long_chains} — "
          f"{machine()}, jax {jax.__version__}")
    print(table(["--unroll", "lax.scan unroll", "K", "compile s", "ms per step"], rows))
    return 0
  if args.flops_only:
    return flops_table(args)
  model, variables, energy = energy_and_variables(args.channels)
  peak = matmul_flops_per_sec(args.matmul_size)
  flags = os.environ.get("XLA_FLAGS", "")
  print(f"Langevin chains, energy net c={args.channels} ({args.channels}, {2 * args.channels}, "
        f"{4 * args.channels}) at 28x28x1 — {machine()}, jax {jax.__version__}"
        f"{', XLA_FLAGS=' + flags if flags else ''}; float32 {args.matmul_size}^2 matmul: {peak / 1e9:.1f} GFLOP/s")
  rows = [] if args.skip_sweep else sweep_table(args, model, variables, energy, peak)
  compared = None if args.skip_compare else compare_table(args, model, variables, energy, peak)
  if args.json:
    write_results(args.json, "benchmarks.speed.langevin", argv, SWEEP_HEADER, rows, matmul_gflops=peak / 1e9,
                  compare=compared)


if __name__ == "__main__":
  sys.exit(main())
