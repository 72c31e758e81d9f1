"""The main job's EBM train step (train.ebm's default recipe, uva) in JAX and in PyTorch: ms per step.

    python -m benchmarks.speed.ebm_step                      # JAX rows only
    python -m benchmarks.speed.ebm_step --repeats 10 --torch-python PY --json benchmarks/results/ebm_step_peers.json

One step is `jaxtricks.ebm.train_step` as train.ebm compiles it: --batch-size chains started from the replay buffer
(8,192 uint8 images, full of uniform noise; fresh uniform noise with probability 0.05), --langevin-steps Langevin steps of the strided energy
net (`--net strided`, widths c, 2c, 4c, 4c; step 10, gradient clip 0.03, noise 0.005), the fakes pushed back, the
contrastive loss with reg 0.1 on the net's energies of the reals and fakes (one batch), its gradient and the Adam
update (lr 1e-3, beta1 0). Not in it: the input pipeline (train.ebm's --data-noise on the reals is applied there).
The reals are a fixed batch of garment-like images (`garment_like`: no data set needed).

Rows: JAX float32 on one device; on a CPU with several XLA devices, also float32 split over all of them (the chains,
batch and buffer along 'data': train.ebm's CPU default, one device per core); JAX bf16 compute: the net's
convolutions, Dense layers and activations in bfloat16 (StridedEnergyNet(dtype=bfloat16)), its parameters, the
Adam state, the Langevin iterates x, their update and the loss in float32 (flax's mixed precision: what PyTorch's
autocast does). With `--torch-python PY` (an interpreter with PyTorch; the same one may do, on a GPU machine) the
same step in PyTorch (benchmarks/speed/torch_peer.py: ebm_train_step) eager and under torch.compile, each in
float32 and under bf16 autocast, on the GPU when JAX runs on one.

Every row's outputs are checked against JAX float32 from the same weights and inputs (`check_params`: the step's
weights with the energies rescaled to O(1)): the energies of reals and fakes, the loss, each parameter's gradient
norm and dU/dx of the fakes (what a Langevin step uses), within a relative tolerance (`agree`: of the largest
|value| of each; for the loss, of the size of its terms): 1e-3 for float32 (2e-2 on a GPU, where float32
convolutions may run in TF32), 0.1 for bfloat16 (measured: 1-5e-2).

Timing: the first call (for JAX: jit's lower + compile, then the step; for torch.compile: its compiles in the
first step) is reported as "compile + first step s"; after one more warm-up call, the median of --repeats calls,
all rows interleaved call by call (JAX and PyTorch alike) so that machine noise hits all alike. Ratios are
"speed vs": the reference's time over the row's (> 1: faster than torch.compile).
"""

import functools
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from benchmarks.common import ArgumentParser, machine, table, write_results
from benchmarks.speed.torch_peer import TorchPeer
from jaxtricks import ebm, onednn, parallel

# train.ebm's RECIPES["uva"] (its defaults), the settings of one step (a test checks that they agree)
UVA = dict(net="strided", step_size=10.0, noise_scale=0.005, grad_clip=0.03, reinit_prob=0.05, reg=0.1, lr=1e-3,
           beta1=0.0, buffer_size=8192)
DEFAULTS = dict(batch_size=128, langevin_steps=20, channels=16)   # the recipe's sizes: the flags' defaults
IMAGE_SHAPE = (28, 28, 1)
BF16_TOL = 0.1   # bfloat16: an 8-bit mantissa through 4 convolutions and 2 Dense, forward and backward
PARTS = ("/e", "/loss", "/gnorm", "/gx")
HEADER = ["variant", "compile + first step s", "ms/step", "speed vs torch.compile", "speed vs torch.compile bf16"]
REF, REF_BF16 = "torch.compile", "torch.compile, bf16 autocast"


def float32_tol() -> float:
  """float32 convolutions may run in TF32 (10-bit mantissa) on a GPU, in JAX and PyTorch alike: looser there."""
  return 1e-3 if jax.default_backend() == "cpu" else 2e-2


def garment_like(rng, n: int) -> np.ndarray:
  """n images [n, 28, 28, 1] with Fashion-MNIST's look and none of its data: blocky bright shapes (a 7x7 uniform
  field upsampled 4x) on a black background (values under 0.5 set to 0). Unlike the uniform-noise fakes: the loss'
  two terms, and their gradients, then differ, as in training (reals and fakes alike would make the gradient a
  difference of near-equal terms that no precision computes well)."""
  field = np.kron(rng.uniform(size=(n, 7, 7)), np.ones((4, 4)))
  return np.where(field < 0.5, 0.0, field)[..., None]


def setup(batch_size: int, langevin_steps: int, channels: int, seed: int = 0) -> dict:
  """The main job's pieces at this size: the net (and its bf16-compute form), Adam, the sampler, a state whose
  replay buffer is full (uniform random uint8 images), the reals, and fixed fakes for the output checks."""
  model = ebm.energy_net(channels, UVA["net"])
  tx = optax.adam(UVA["lr"], b1=UVA["beta1"], b2=0.999)
  sampler = ebm.SamplerConfig(num_steps=langevin_steps, step_size=UVA["step_size"], noise_scale=UVA["noise_scale"],
                              grad_clip=UVA["grad_clip"], reinit_prob=UVA["reinit_prob"], unroll="auto")
  state = jax.jit(lambda k: ebm.init(k, model, IMAGE_SHAPE, tx, buffer_size=UVA["buffer_size"]))(
      jax.random.PRNGKey(seed))
  rng = np.random.default_rng(seed)
  n = UVA["buffer_size"]
  state = state.replace(buffer=state.buffer.replace(
      data=jnp.asarray(rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8)), count=jnp.asarray(n, jnp.int32),
      pointer=jnp.asarray(0, jnp.int32)))
  x = jnp.asarray(garment_like(rng, batch_size), jnp.float32)
  fake = jnp.asarray(rng.uniform(size=(batch_size, *IMAGE_SHAPE)), jnp.float32)
  return dict(model=model, model_bf16=model.clone(dtype=jnp.bfloat16), tx=tx, sampler=sampler, state=state, x=x,
              fake=fake, check_params=check_params(model, state.params, x, fake))


# the 2x2 convolutions as matrix products (models.energy.Conv2x2, issue 35): the same parameters, other programs
CONV_FORMS = {"taps": "2x2 convs as one dot over 4 taps", "shifted": "2x2 convs as 4 shifted dots",
              "onednn": "2x2 convs by oneDNN"}   # oneDNN: one device only (its call runs whole arrays)


def conv_models(s: dict, convs) -> dict:
  """{row name: model} of the net with its convolutions as `convs` (CONV_FORMS' keys), float32 and bf16 compute."""
  out = {}
  for conv in convs:
    model = s["model"].clone(conv=conv)
    out[f"JAX float32, {CONV_FORMS[conv]}"] = model
    out[f"JAX bf16 compute, {CONV_FORMS[conv]}"] = model.clone(dtype=jnp.bfloat16)
  return out


def check_params(model, params, x, fake):
  """The weights the outputs are checked on: `params` with the last Dense rescaled so that the energies of
  [x; fake] span about [-0.5, 1.5], as a trained net's are O(1) (at init they are ~1e-3, where the loss'
  reg * U^2 term is below any tolerance and a port without it would pass)."""
  e = model.apply({"params": params}, jnp.concatenate([x, fake]))
  last = params["Dense_1"]
  return {**params, "Dense_1": {"kernel": last["kernel"] / jnp.abs(e - last["bias"]).max(),
                                "bias": jnp.full_like(last["bias"], 0.5)}}


def outputs(model, params, x, fake, *, reg: float) -> dict:
  """What every row is checked on, from `params`: "/e" energies of [x; fake], "/loss" the contrastive loss,
  "/gnorm" each parameter's gradient norm of it (sorted flax path order), "/gx" dU/dx of the fakes. One compiled
  program (op by op, its ~200 operations took 9 s of compiles at the tests' XLA level)."""
  def loss_fn(params):
    e = model.apply({"params": params}, jnp.concatenate([x, fake]))
    e_real, e_fake = jnp.split(e, 2)
    return ebm.contrastive_loss(e_real, e_fake, reg=reg), e

  @jax.jit
  def compute(params):
    (loss, e), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    flat = traverse_util.flatten_dict(grads, sep="/")
    gx = jax.grad(lambda v: model.apply({"params": params}, v).sum())(fake)
    return e, loss, jnp.stack([jnp.linalg.norm(flat[k]) for k in sorted(flat)]), gx

  e, loss, gnorm, gx = compute(params)
  return {"/e": np.asarray(e), "/loss": np.asarray(loss).reshape(1), "/gnorm": np.asarray(gnorm), "/gx": np.asarray(gx)}


def loss_scale(ref: dict, reg: float) -> float:
  """The size of the loss' terms, |mean U_r| + |mean U_f| + reg (mean U_r^2 + mean U_f^2): the loss is their
  difference, near 0 for an untrained net, so its error is measured against them."""
  e_real, e_fake = np.split(ref["/e"].astype(np.float64), 2)
  return float(abs(e_real.mean()) + abs(e_fake.mean()) + reg * ((e_real ** 2).mean() + (e_fake ** 2).mean()))


def agree(got: dict, ref: dict, tol: float, *, reg: float, name: str = "") -> float:
  """The largest relative difference of `got`'s parts from `ref`'s (each part's max |diff| over its largest
  |value|, the loss' over `loss_scale`); AssertionError naming the row and part where one exceeds `tol`."""
  worst = 0.0
  for part in PARTS:
    want = ref[part].astype(np.float64)
    have = np.asarray(got[part], np.float64)
    if have.shape != want.shape:
      raise AssertionError(f"{name}{part}: shape {have.shape}, JAX float32's {want.shape}")
    scale = loss_scale(ref, reg) if part == "/loss" else float(np.abs(want).max())
    diff = float(np.abs(have - want).max()) / max(scale, 1e-30)
    if not diff <= tol:   # (nan fails too)
      raise AssertionError(f"{name}{part}: max |diff| / scale = {diff:.2e} > {tol:g} (scale {scale:.3g})")
    worst = max(worst, diff)
  return worst


def jax_rows(s: dict, convs=()) -> dict:
  """{row: (call, compile s)}: each row's jitted step, compiled (lower + compile timed), on its own copy of the
  state; call() runs one step and returns its metrics. The step's key is fold_in(key, step), as the loop's.
  `convs`: also the rows of the net with its convolutions in those forms (`conv_models`), and with several
  devices their bf16 forms split over them too."""
  key = jax.random.PRNGKey(1)
  batch = {"image": s["x"]}
  step = lambda model, **kw: (lambda state, batch, key: ebm.train_step(
      state, batch, jax.random.fold_in(key, state.step), model=model, tx=s["tx"], sampler=s["sampler"],
      reg=UVA["reg"], **kw))
  forms = {"JAX float32": (step(s["model"]), None),
           "JAX bf16 compute (params float32)": (step(s["model_bf16"]), None),
           **{name: (step(model), None) for name, model in conv_models(s, convs).items()}}
  if jax.device_count() > 1 and s["x"].shape[0] % jax.device_count() == 0 and \
     UVA["buffer_size"] % jax.device_count() == 0:
    mesh = parallel.make_mesh()
    split = {"JAX float32": s["model"],
             **{name: model for name, model in conv_models(s, convs).items() if "bf16" in name and CONV_FORMS["onednn"] not in name}}
    for name, model in split.items():   # train.ebm's CPU default (one device per core), and the bf16 conv forms
      forms[f"{name}, split over {jax.device_count()} devices"] = (
          step(model, chain_sharding=parallel.sharded(mesh)), mesh)
  rows = {}
  for name, (fn, mesh) in forms.items():
    holder = {"state": jax.tree.map(jnp.copy, s["state"]), "batch": batch}
    if mesh is None:
      jitted = jax.jit(fn, donate_argnums=0)
    else:   # as train.ebm: parallel.jit_step with ebm.shardings (the buffer split, the rest replicated)
      shardings = ebm.shardings(holder["state"], mesh)
      jitted = parallel.jit_step(fn, mesh, shardings)
      holder = {"state": jax.device_put(holder["state"], shardings),
                "batch": jax.device_put(batch, parallel.sharded(mesh))}
    t0 = time.perf_counter()
    compiled = jitted.lower(holder["state"], holder["batch"], key).compile()
    compile_s = time.perf_counter() - t0

    def call(compiled=compiled, holder=holder):
      holder["state"], metrics = compiled(holder["state"], holder["batch"], key)
      return metrics
    rows[name] = (call, compile_s)
  return rows


def timed(call) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(call())
  return time.perf_counter() - t0


def measure(batch_size: int, langevin_steps: int, channels: int, repeats: int, torch_python: str = "",
            torch_only=None, torch_threads: int = 0, convs=()) -> tuple[list, list]:
  """(table rows, notes): every row timed interleaved with the others, outputs checked against JAX float32."""
  s = setup(batch_size, langevin_steps, channels)
  params = s["check_params"]
  ref = outputs(s["model"], params, s["x"], s["fake"], reg=UVA["reg"])
  checks = {name: agree(outputs(model, params, s["x"], s["fake"], reg=UVA["reg"]), ref,
                        BF16_TOL if "bf16" in name else float32_tol(), reg=UVA["reg"], name=name)
            for name, model in {"JAX bf16 compute (params float32)": s["model_bf16"],
                                **conv_models(s, convs)}.items()}
  rows = jax_rows(s, convs)
  first = {name: compile_s + timed(call) for name, (call, compile_s) in rows.items()}
  calls = {name: functools.partial(timed, call) for name, (call, _) in rows.items()}
  peer, notes, tmp = None, [], tempfile.TemporaryDirectory()
  if torch_python:
    peer, why = TorchPeer.start(torch_python, gpu=jax.default_backend() == "gpu", threads=torch_threads)
    if peer is None:
      notes.append(why)
  try:
    if peer is not None:
      arrays = {"x": np.asarray(s["x"]), "fake": np.asarray(s["fake"]), "buffer": np.asarray(s["state"].buffer.data),
                "count": np.asarray(s["state"].buffer.count), "pointer": np.asarray(s["state"].buffer.pointer),
                **{k: np.asarray(v) for k, v in traverse_util.flatten_dict(s["state"].params, sep="/").items()},
                **{"check/" + k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}}
      sampler = {"num_steps": langevin_steps, **{k: UVA[k] for k in ("step_size", "noise_scale", "grad_clip",
                                                                     "reinit_prob")}}
      _, failed, versions = peer.load(arrays, tmp.name, kind="ebm_step", sampler=sampler, reg=UVA["reg"],
                                      lr=UVA["lr"], beta1=UVA["beta1"], only=torch_only or None)
      for name in peer.variants:   # compile (torch.compile) + one step
        first[name] = peer.time(name)
        print(f"  {name}: first call {first[name]:.1f} s", file=sys.stderr, flush=True)
        calls[name] = functools.partial(peer.time, name)
    for call in calls.values():   # one more warm-up call each
      call()
    times = {name: [] for name in calls}
    for _ in range(repeats):
      for name, call in calls.items():
        times[name].append(call())
    if peer is not None:
      got = peer.outputs(tmp.name)
      for name in peer.variants:
        tol = BF16_TOL if "bf16" in name else float32_tol()
        checks[name] = agree({p: got[name + p] for p in PARTS}, ref, tol, reg=UVA["reg"], name=name)
      notes.append(versions + (f"; could not build: {failed}" if failed else ""))
  finally:
    if peer is not None:
      peer.close()
    tmp.cleanup()
  median = {name: statistics.median(t) if t else float("nan") for name, t in times.items()}
  speed = lambda ref, t: f"{median[ref] / t:.2f}x" if ref in median else "-"
  table_rows = [[name, first[name], t * 1e3, speed(REF, t), speed(REF_BF16, t)] for name, t in median.items()]
  notes.insert(0, "outputs equal JAX float32's (energies, loss, gradient norms, dU/dx; max relative diff, tolerance "
                  f"{float32_tol():g} float32 / {BF16_TOL:g} bf16): "
               + ", ".join(f"{name} {d:.1e}" for name, d in checks.items()))
  return table_rows, notes


def main(argv=None):
  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"],
                 help="reals per step, and as many chains (train.ebm's)")
  p.add_argument("--langevin-steps", type=int, default=DEFAULTS["langevin_steps"],
                 help="steps of each chain (train.ebm's)")
  p.add_argument("--channels", type=int, default=DEFAULTS["channels"],
                 help="energy net width c: c, 2c, 4c, 4c (train.ebm's)")
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--torch-python", default="",
                 help="also time the PyTorch peers under this interpreter (one with torch; default none: JAX "
                      "rows only)")
  p.add_argument("--torch-variants", default="", help="semicolon-separated PyTorch forms to time (default all four)")
  p.add_argument("--torch-threads", type=int, default=0,
                 help="CPU threads of the PyTorch rows (default 0: one per core). On a CPU shared with other jobs, "
                      "PyTorch's OpenMP threads lose a time slice at each op's barrier: 1 can be several times faster")
  p.add_argument("--convs", default="", help=f"also time the net with its 2x2 convolutions as matrix products, in "
                 f"these forms (comma-separated: {' or '.join(CONV_FORMS)}; float32 and bf16 rows each; default none)")
  p.add_argument("--json", default="", help="append the run to this file of runs (e.g. "
                 "benchmarks/results/ebm_step_peers.json); default nowhere")
  args = p.parse_args(argv)
  convs = p.comma_list("--convs", args.convs, of=str, choices=list(CONV_FORMS), example="taps,onednn") if args.convs else []
  if "onednn" in convs and not onednn.available():
    p.error(f"--convs onednn: {onednn.NOT_BUILT}")
  if args.torch_threads < 0:
    p.error(f"--torch-threads must be >= 0, got {args.torch_threads}")
  for name in ("batch_size", "langevin_steps", "channels", "repeats"):
    if getattr(args, name) < 1:
      p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
  # the CPU as train.ebm runs it by default: one XLA device per core (the split row), unless the user's
  # JAX_NUM_CPU_DEVICES / XLA_FLAGS say otherwise
  parallel.set_cpu_devices(parallel.cpu_cores())
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  rows, notes = measure(args.batch_size, args.langevin_steps, args.channels, args.repeats, args.torch_python,
                        [v.strip() for v in args.torch_variants.split(";") if v.strip()], args.torch_threads, convs)
  title = (f"EBM train step, train.ebm's uva recipe: strided net c={args.channels}, batch {args.batch_size}, "
           f"{args.langevin_steps}-step chains, buffer {UVA['buffer_size']} — {machine()}, jax {jax.__version__}, "
           f"median of {args.repeats} after warm-up, rows interleaved")
  if hasattr(os, "getloadavg"):   # other jobs on the machine slow the rows unequally: say how busy it was
    notes.append(f"load average (1 min) {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, "
                 f"{os.cpu_count()} cores")
  print(title)
  print(table(HEADER, rows))
  for note in notes:
    print(note)
  if args.json:
    if not os.path.exists(args.json):   # a file of runs: each run (day, host) appended
      os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
      with open(args.json, "w") as f:
        f.write('{"runs": []}')
    write_results(args.json, "benchmarks.speed.ebm_step", argv, HEADER, rows, title=title, peers=notes)
  return 0


if __name__ == "__main__":
  sys.exit(main())
