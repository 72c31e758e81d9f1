"""The PyTorch peers of two benchmarks, in every form a researcher would compare against: eager float32, eager
under bfloat16 autocast, torch.compile (default, mode="max-autotune", and on CUDA mode="reduce-overhead", i.e.
CUDA graphs) — the EBM's energy net and Langevin chain (benchmarks.speed.langevin) and the DCGAN's alternating
training step (benchmarks.speed.gan_step). The worker runs in a child process driven over stdin/stdout (one JSON object a line),
so that it can run under another interpreter than JAX's (PyTorch has no wheel for every Python JAX supports:
`--torch-python`); as a worker it imports torch and numpy only. `TorchPeer` is the benchmarks' side of it.

Commands: {"cmd": "load", "kind": "langevin", "npz": path, "channels": c, "num_steps": K, "sampler": {...},
"out": path} builds the chain variants from the weights in the npz (conv kernels HWIO and biases, keys
"<block>/<conv>:w|b", "dense:w|b", and "x" [B, 28, 28, 1]) and writes each variant's energies of x to `out`.
{"cmd": "load", "kind": "gan", "npz": path, "width": w, "lr": lr, "out": path} builds, per variant, G and D from
the flax params in the npz ("G/<module>/<param>", "D/...", and "x" [B, 28, 28, 1], "z" [B, Z]) with their own
Adam optimizers, and writes "<variant>/g" (G(z)) and "<variant>/d" (D(x)), training-mode BatchNorm, to `out`.
Both take "only": [names] (default: every variant) and answer {"variants": [...], "failed": {...},
"versions": ...}. {"cmd": "time", "variant": name} runs that
variant once (a whole chain; one alternating step, D then G) and answers {"seconds": s} (a variant's first call
includes its compilation). {"cmd": "quit"}.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np


def build_langevin(npz: dict, channels: int, num_steps: int, sampler: dict, device: str):
  import torch
  import torch.nn.functional as F
  w = {}
  for key in npz:
    if key.endswith(":w") and not key.startswith("dense"):
      path = key[:-2]
      w[path] = (torch.tensor(npz[key].transpose(3, 2, 0, 1), device=device),
                 torch.tensor(npz[path + ":b"], device=device))
  dense_w, dense_b = torch.tensor(npz["dense:w"], device=device), torch.tensor(npz["dense:b"], device=device)
  blocks = [(f"_ResBlock_{i}", c) for i, c in enumerate((channels, 2 * channels, 4 * channels))]

  def conv(x, path):
    kernel, bias = w[path]
    return F.conv2d(x, kernel, bias, padding=kernel.shape[-1] // 2)

  def energy(x):   # x [B, 1, 28, 28] -> [B]; the flax EnergyNet with its spectrally normalized weights
    h = F.silu(conv(x, "_SNConv_0"))
    for block, c in blocks:
      r = conv(F.silu(conv(h, f"{block}/_SNConv_0")), f"{block}/_SNConv_1")
      skip = h if h.shape[1] == c else conv(h, f"{block}/_SNConv_2")
      h = F.silu(r + skip)
      if h.shape[-1] % 2:   # flax avg_pool 'SAME': pad at the end, padded zeros counted
        h = F.pad(h, (0, 1, 0, 1))
      h = F.avg_pool2d(h, 2, 2)
    return (h.sum(dim=(2, 3)) @ dense_w[:, 0] + dense_b[0]).float()

  def chain(energy_fn, autocast: bool):
    def run(x):
      for _ in range(num_steps):
        x = x.detach().requires_grad_(True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
          e = energy_fn(x).sum()
        g, = torch.autograd.grad(e, x)
        x = (x - sampler["step_size"] / 2 * g.clamp(-sampler["grad_clip"], sampler["grad_clip"])
             + sampler["noise_scale"] * torch.randn_like(x)).clamp(0.0, 1.0)
      return x.detach()
    return run

  forms = {"PyTorch eager": (energy, False), "PyTorch eager, bf16 autocast": (energy, True),
           "torch.compile": (torch.compile(energy), False),
           "torch.compile, bf16 autocast": (torch.compile(energy), True),
           "torch.compile max-autotune": (torch.compile(energy, mode="max-autotune"), False)}
  if device == "cuda":
    forms["torch.compile reduce-overhead (CUDA graphs)"] = (torch.compile(energy, mode="reduce-overhead"), False)
  return {name: (fn, autocast, chain(fn, autocast)) for name, (fn, autocast) in forms.items()}


def torch_dcgan(npz: dict, width: int, device: str):
  """(Generator, Discriminator): torch module classes of the flax DCGAN (jaxtricks.models.dcgan) whose instances
  start from the npz's weights ("G/<module>/<param>", "D/...")."""
  import torch
  import torch.nn.functional as F
  from torch import nn

  t = lambda a: torch.tensor(np.ascontiguousarray(a), device=device)
  z_dim = npz["z"].shape[1]
  side = npz["x"].shape[1] // 4   # 7 at 28x28

  def bn(cls, prefix, n):   # flax BatchNorm(momentum=0.9, epsilon=1e-5) = torch momentum 0.1, eps 1e-5
    m = cls(n, momentum=0.1, eps=1e-5)
    m.weight.data, m.bias.data = t(npz[f"{prefix}/scale"]), t(npz[f"{prefix}/bias"])
    return m

  def conv_t(prefix, c_in, c_out, stride, bias):
    # lax.conv_transpose 'SAME' without kernel flip (flax's) = torch's transposed conv with the kernel flipped;
    # its padding (3 low, 2 high at stride 2) is torch's padding=1 with the last row and column dropped
    m = nn.ConvTranspose2d(c_in, c_out, 5, stride=stride, padding=2 if stride == 1 else 1, bias=bias)
    m.weight.data = t(npz[f"{prefix}/kernel"][::-1, ::-1].transpose(2, 3, 0, 1))
    if bias:
      m.bias.data = t(npz[f"{prefix}/bias"])
    return m

  class Generator(nn.Module):
    def __init__(self):
      super().__init__()
      self.dense = nn.Linear(z_dim, side * side * 4 * width, bias=False)
      self.dense.weight.data = t(npz["G/Dense_0/kernel"].T)
      self.bn0 = bn(nn.BatchNorm1d, "G/BatchNorm_0", side * side * 4 * width)
      self.ct0 = conv_t("G/ConvTranspose_0", 4 * width, 2 * width, 1, False)
      self.bn1 = bn(nn.BatchNorm2d, "G/BatchNorm_1", 2 * width)
      self.ct1 = conv_t("G/ConvTranspose_1", 2 * width, width, 2, False)
      self.bn2 = bn(nn.BatchNorm2d, "G/BatchNorm_2", width)
      self.ct2 = conv_t("G/ConvTranspose_2", width, 1, 2, True)

    def forward(self, z):
      h = F.leaky_relu(self.bn0(self.dense(z)), 0.2).reshape(-1, side, side, 4 * width).permute(0, 3, 1, 2)
      h = F.leaky_relu(self.bn1(self.ct0(h)), 0.2)
      h = F.leaky_relu(self.bn2(self.ct1(h)[..., :2 * side, :2 * side]), 0.2)
      return torch.tanh(self.ct2(h)[..., :4 * side, :4 * side])

  class Discriminator(nn.Module):
    def __init__(self):
      super().__init__()
      self.c0 = nn.Conv2d(1, width, 5, stride=2)
      self.c0.weight.data, self.c0.bias.data = t(npz["D/Conv_0/kernel"].transpose(3, 2, 0, 1)), t(npz["D/Conv_0/bias"])
      self.c1 = nn.Conv2d(width, 2 * width, 5, stride=2, bias=False)
      self.c1.weight.data = t(npz["D/Conv_1/kernel"].transpose(3, 2, 0, 1))
      self.bn = bn(nn.BatchNorm2d, "D/BatchNorm_0", 2 * width)
      self.dense = nn.Linear(side * side * 2 * width, 1)
      self.dense.weight.data, self.dense.bias.data = t(npz["D/Dense_0/kernel"].T), t(npz["D/Dense_0/bias"])

    def forward(self, x):   # 'SAME' at stride 2 on 28 and 14: one row/column of padding low, two high
      h = F.leaky_relu(self.c0(F.pad(x, (1, 2, 1, 2))), 0.2)
      h = F.leaky_relu(self.bn(self.c1(F.pad(h, (1, 2, 1, 2)))), 0.2)
      return self.dense(h.permute(0, 2, 3, 1).reshape(h.shape[0], -1))[:, 0].float()   # flax's NHWC flatten

  return Generator, Discriminator


def alternating_step(g, d, lr: float, device: str, compile_mode, autocast: bool):
  """(G to run, D to run, autocast, step): step(x, z) is one alternating step of fresh Adam optimizers on g and d
  (D on the hinge loss against G(z).detach(), then G on E[D(G(z))] with D's params frozen), the modules compiled
  with torch.compile(mode=compile_mode) unless it is None."""
  import torch
  import torch.nn.functional as F

  opt_g, opt_d = torch.optim.Adam(g.parameters(), lr=lr), torch.optim.Adam(d.parameters(), lr=lr)
  if compile_mode is not None:
    g_run, d_run = (torch.compile(m) if compile_mode == "default" else torch.compile(m, mode=compile_mode)
                    for m in (g, d))
  else:
    g_run, d_run = g, d
  cast = lambda: torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast)

  def step(x, z):
    with cast():
      fake = g_run(z).detach()
      d_loss = F.relu(1 + d_run(x)).mean() + F.relu(1 - d_run(fake)).mean()
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    d.requires_grad_(False)
    with cast():
      g_loss = d_run(g_run(z)).mean()
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    d.requires_grad_(True)
    return d_loss.detach(), g_loss.detach()
  return g_run, d_run, autocast, step


def build_gan(npz: dict, width: int, lr: float, device: str):
  """{variant: (G, D, autocast, step)}: the flax DCGAN as torch modules with the npz's weights (torch_dcgan), each
  variant with its own copy and Adam optimizers; step(x, z) is one alternating step (alternating_step) — what
  benchmarks.speed.gan_step's (a) does."""
  generator, discriminator = torch_dcgan(npz, width, device)
  forms = {"PyTorch eager": (None, False), "PyTorch eager, bf16 autocast": (None, True),
           "torch.compile": ("default", False), "torch.compile, bf16 autocast": ("default", True),
           "torch.compile max-autotune": ("max-autotune", False)}
  if device == "cuda":
    forms["torch.compile reduce-overhead (CUDA graphs)"] = ("reduce-overhead", False)
  return {name: alternating_step(generator().to(device), discriminator().to(device), lr, device, *form)
          for name, form in forms.items()}


def main() -> int:
  if {"-h", "--help"} & set(sys.argv[1:]):   # a worker, started by TorchPeer under --torch-python; it takes no flags
    print(__doc__)
    return 0
  import torch
  import torch._dynamo
  torch.set_num_threads(os.cpu_count())
  # every torch.compile'd variant wraps the same code, and Dynamo's limit of compiled versions is per code
  # object: 5 variants x (no_grad check, grad) x autocast would hit the default 8 and fall back to eager
  for name in ("cache_size_limit", "recompile_limit"):
    if hasattr(torch._dynamo.config, name):
      setattr(torch._dynamo.config, name, 64)
  device = os.environ.get("TORCH_PEER_DEVICE", "cpu")
  variants, inputs = {}, ()
  for line in sys.stdin:
    msg = json.loads(line)
    if msg["cmd"] == "quit":
      break
    if msg["cmd"] == "load":
      npz = dict(np.load(msg["npz"]))
      x = torch.tensor(npz["x"].transpose(0, 3, 1, 2), device=device).contiguous()
      outputs, failed = {}, {}
      if msg.get("kind", "langevin") == "langevin":
        inputs = (x,)
        built = build_langevin(npz, msg["channels"], msg["num_steps"], msg["sampler"], device)
        check = lambda fn, autocast, _: {"": fn(x).float()}
        variants = {name: chain for name, (_, _, chain) in built.items()}
      else:
        z = torch.tensor(npz["z"], device=device)
        inputs = (x, z)
        built = build_gan(npz, msg["width"], msg["lr"], device)
        check = lambda g, d, autocast, _: {"/g": g(z).float().permute(0, 2, 3, 1), "/d": d(x).float()}
        variants = {name: step for name, (_, _, _, step) in built.items()}
      only = msg.get("only")
      for name in [n for n in built if only and n not in only]:
        del built[name], variants[name]
      for name, parts in built.items():
        try:
          with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=parts[-2]):
            outputs.update({name + k: v.cpu().numpy() for k, v in check(*parts).items()})
        except Exception as e:   # a torch.compile mode this machine cannot build: reported, not timed
          failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
          del variants[name]
      np.savez(msg["out"], **outputs)
      where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
      reply = {"variants": list(variants), "failed": failed, "versions": f"PyTorch {torch.__version__} on {where}"}
    elif msg["cmd"] == "time":
      sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
      sync()
      t0 = time.perf_counter()
      variants[msg["variant"]](*inputs)
      sync()
      reply = {"seconds": time.perf_counter() - t0}
    print(json.dumps(reply), flush=True)
  return 0


class TorchPeer:
  """This file as a worker in a child process under `python` (default: this interpreter), on the GPU when JAX
  runs on one. `TorchPeer.start` returns (None, why) where that python has no torch."""

  def __init__(self, proc):
    self.proc = proc

  @classmethod
  def start(cls, python: str | None, gpu: bool = False):
    python = python or sys.executable
    probe = subprocess.run([python, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True,
                           text=True)
    if probe.returncode:
      return None, f"no PyTorch in {python} (pip install torch, or --torch-python PATH): no PyTorch rows"
    device = "cuda" if gpu and probe.stdout.strip() == "True" else "cpu"
    proc = subprocess.Popen([python, os.path.abspath(__file__)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "TORCH_PEER_DEVICE": device})
    return cls(proc), None

  def ask(self, **msg) -> dict:
    self.proc.stdin.write(json.dumps(msg) + "\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"benchmarks/speed/torch_peer.py exited with {self.proc.wait()}")
    return json.loads(line)

  def load(self, arrays: dict, tmpdir: str, **msg) -> tuple[dict, dict, str]:
    """Saves `arrays` for the worker and loads its variants (msg: kind and its settings, as the commands above);
    ({output name: array}, {variant: why it could not be built}, versions)."""
    np.savez(os.path.join(tmpdir, "weights.npz"), **arrays)
    reply = self.ask(cmd="load", npz=os.path.join(tmpdir, "weights.npz"), out=os.path.join(tmpdir, "out.npz"), **msg)
    outputs = dict(np.load(os.path.join(tmpdir, "out.npz")))
    self.variants = reply["variants"]
    return outputs, reply["failed"], reply["versions"]

  def check(self, outputs: dict, refs: dict, tol: float) -> list[str]:
    """Asserts each variant's outputs (`outputs["<variant><part>"]`) equal JAX's (`refs[part]`) within `tol` of
    the largest |value| (5e-2 for bfloat16 forms: an 8-bit mantissa); returns "<variant> <max relative diff>"."""
    checks = []
    for name in self.variants:
      t = 5e-2 if "bf16" in name else tol
      worst = 0.0
      for part, ref in refs.items():
        scale = np.abs(ref).max()
        np.testing.assert_allclose(outputs[name + part], ref, rtol=t, atol=t * scale, err_msg=name)
        worst = max(worst, np.abs(outputs[name + part] - ref).max() / scale)
      checks.append(f"{name} {worst:.1e}")
    return checks

  def time(self, variant: str) -> float:
    return self.ask(cmd="time", variant=variant)["seconds"]

  def timings(self, repeats: int) -> dict[str, tuple[float, float]]:
    """{variant: (first call s, median s of `repeats` later calls)}; calls interleaved across the variants so
    that machine noise hits all alike."""
    first = {}
    for name in self.variants:   # compile (torch.compile) + one run
      first[name] = self.time(name)
      print(f"  {name}: first call {first[name]:.1f} s", file=sys.stderr, flush=True)
    times = {name: [] for name in self.variants}
    for _ in range(repeats):
      for name in self.variants:
        times[name].append(self.time(name))
    print("  " + ", ".join(f"{name} {np.median(t):.3g} s" for name, t in times.items()), file=sys.stderr, flush=True)
    return {name: (first[name], float(np.median(times[name]))) for name in self.variants}

  def close(self):
    try:
      self.ask(cmd="quit")
    except (RuntimeError, BrokenPipeError, ValueError):
      pass
    self.proc.wait()


if __name__ == "__main__":
  sys.exit(main())
