"""The PyTorch peers of three benchmarks, in every form a researcher would compare against: eager float32, eager
under bfloat16 autocast, torch.compile (default, mode="max-autotune", and on CUDA mode="reduce-overhead", i.e.
CUDA graphs) — the EBM's energy net and Langevin chain (benchmarks.speed.langevin), the DCGAN's alternating
training step (benchmarks.speed.gan_step), and the main job's EBM train step (benchmarks.speed.ebm_step: eager and
torch.compile, each in float32 and under bf16 autocast). The worker runs in a child process driven over stdin/stdout (one JSON object a line),
so that it can run under another interpreter than JAX's (PyTorch has no wheel for every Python JAX supports:
`--torch-python`); as a worker it imports torch and numpy only. `TorchPeer` is the benchmarks' side of it.

Commands: {"cmd": "load", "kind": "langevin", "npz": path, "channels": c, "num_steps": K, "sampler": {...},
"out": path} builds the chain variants from the weights in the npz (conv kernels HWIO and biases, keys
"<block>/<conv>:w|b", "dense:w|b", and "x" [B, 28, 28, 1]) and writes each variant's energies of x to `out`.
{"cmd": "load", "kind": "gan", "npz": path, "width": w, "lr": lr, "out": path} builds, per variant, G and D from
the flax params in the npz ("G/<module>/<param>", "D/...", and "x" [B, 28, 28, 1], "z" [B, Z]) with their own
Adam optimizers, and writes "<variant>/g" (G(z)) and "<variant>/d" (D(x)), training-mode BatchNorm, to `out`.
{"cmd": "load", "kind": "ebm_step", "npz": path, "sampler": {...}, "reg": r, "lr": lr, "beta1": b1, "out": path}
builds, per variant, the strided energy net (jaxtricks.models.energy.StridedEnergyNet) from the flax params in the
npz ("<module>/<param>"), its Adam and its replay buffer ("buffer" uint8 [N, 28, 28, 1], "count", "pointer"), with
"x" the reals [B, 28, 28, 1] and "fake" fixed fakes; it writes nothing at load (a check compiles: it would hide the
compile time in the load), and {"cmd": "outputs", "out": path} writes, from the npz's "check/<module>/<param>"
weights (loaded into each variant's net), each variant's
"<variant>/e" (energies of reals then fakes), "/loss", "/gnorm" (each parameter's gradient norm, in sorted flax
path order) and "/gx" (dU/dx of the fakes, NHWC). All loads take "only": [names] (default: every variant) and
answer {"variants": [...], "failed": {...}, "versions": ...}. {"cmd": "time", "variant": name} runs that
variant once (a whole chain; one alternating step, D then G; one EBM train step) and answers {"seconds": s} (a
variant's first call includes its compilation). {"cmd": "quit"}.
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


def torch_strided_energy(npz: dict, device: str):
  """The flax StridedEnergyNet (jaxtricks.models.energy) as a torch module with the npz's weights ("Conv_<i>/kernel"
  HWIO, "Dense_<i>/kernel" [in, out], biases), NCHW: each stride-2 step is space-to-depth (F.pixel_unshuffle,
  the kernel's input channels reordered from flax's (dy, dx, c) to torch's (c, dy, dx)) then a 2x2 convolution
  'SAME' (flax pads 0 before, 1 after). U(x) float32 [B]."""
  import torch
  import torch.nn.functional as F
  from torch import nn

  t = lambda a: torch.tensor(np.ascontiguousarray(a), device=device)
  n_convs = len({k.split("/")[0] for k in npz if k.startswith("Conv_")})

  class StridedEnergy(nn.Module):
    def __init__(self):
      super().__init__()
      self.convs = nn.ModuleList()
      for i in range(n_convs):
        w = npz[f"Conv_{i}/kernel"]   # [2, 2, 4 C, F], input channel (dy * 2 + dx) * C + c
        c4, f = w.shape[2], w.shape[3]
        w = w.reshape(2, 2, 4, c4 // 4, f).transpose(0, 1, 3, 2, 4).reshape(2, 2, c4, f)   # -> c * 4 + dy * 2 + dx
        conv = nn.Conv2d(c4, f, 2)
        conv.weight.data, conv.bias.data = t(w.transpose(3, 2, 0, 1)), t(npz[f"Conv_{i}/bias"])
        self.convs.append(conv)
      self.dense = nn.ModuleList()
      for i in range(2):
        w = npz[f"Dense_{i}/kernel"]
        lin = nn.Linear(*w.shape)
        lin.weight.data, lin.bias.data = t(w.T), t(npz[f"Dense_{i}/bias"])
        self.dense.append(lin)

    def forward(self, x):   # [B, C, H, W] -> [B]
      h = x
      for conv in self.convs:
        h = F.pixel_unshuffle(F.pad(h, (0, h.shape[-1] % 2, 0, h.shape[-2] % 2)), 2)
        h = F.silu(conv(F.pad(h, (0, 1, 0, 1))))
      h = F.silu(self.dense[0](h.permute(0, 2, 3, 1).flatten(1)))   # flax's NHWC flatten
      return self.dense[1](h)[:, 0].float()

    def flax_named(self) -> dict:
      """{flax path: parameter}."""
      out = {}
      for i, conv in enumerate(self.convs):
        out[f"Conv_{i}/kernel"], out[f"Conv_{i}/bias"] = conv.weight, conv.bias
      for i, lin in enumerate(self.dense):
        out[f"Dense_{i}/kernel"], out[f"Dense_{i}/bias"] = lin.weight, lin.bias
      return out

  return StridedEnergy


def ebm_train_step(net, npz: dict, sampler: dict, reg: float, lr: float, beta1: float, device: str, compiled: bool,
                   autocast: bool):
  """(net, net to run, autocast, step): step(x) is jaxtricks.ebm.train_step as a PyTorch user writes it —
  chains started from a uint8 replay buffer (uniform over the items held) or uniform noise with probability
  reinit_prob, `num_steps` Langevin steps (x - step_size/2 clip(dU/dx) + noise N(0, I), clamped to [0, 1]; the
  net's parameters frozen meanwhile, as the UvA tutorial's sampler does), the fakes pushed back, then the
  contrastive loss with reg on U of reals and fakes in one batch, backward, Adam(betas=(beta1, 0.999)). The net
  runs under torch.compile when `compiled`, every forward under bf16 autocast when `autocast`."""
  import torch

  run = torch.compile(net) if compiled else net
  opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(beta1, 0.999), eps=1e-8)
  cast = lambda: torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast)
  buf = {"data": torch.tensor(npz["buffer"].transpose(0, 3, 1, 2), device=device).contiguous(),
         "count": int(npz["count"]), "pointer": int(npz["pointer"])}
  capacity = buf["data"].shape[0]
  k, step_size, noise, clip = (sampler["num_steps"], sampler["step_size"], sampler["noise_scale"],
                               sampler["grad_clip"])

  def chain(x):
    net.requires_grad_(False)
    for _ in range(k):
      x = x.detach().requires_grad_(True)
      with cast():
        e = run(x).sum()
      g, = torch.autograd.grad(e, x)
      x = (x - step_size / 2 * g.clamp(-clip, clip) + noise * torch.randn_like(x)).clamp(0.0, 1.0)
    net.requires_grad_(True)
    return x.detach()

  def step(x_real):
    b = x_real.shape[0]
    idx = torch.randint(0, max(buf["count"], 1), (b,), device=device)
    stored = buf["data"][idx].float() / 255
    fresh = (torch.rand(b, device=device) < sampler["reinit_prob"]) | (buf["count"] == 0)
    x_fake = chain(torch.where(fresh[:, None, None, None], torch.rand_like(stored), stored))
    slots = (buf["pointer"] + torch.arange(b, device=device)) % capacity
    buf["data"][slots] = torch.round(x_fake.clamp(0.0, 1.0) * 255).to(torch.uint8)
    buf["count"], buf["pointer"] = min(buf["count"] + b, capacity), (buf["pointer"] + b) % capacity
    with cast():
      e_real, e_fake = run(torch.cat([x_real, x_fake])).float().chunk(2)
    loss = e_real.mean() - e_fake.mean() + reg * ((e_real ** 2).mean() + (e_fake ** 2).mean())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()
  return net, run, autocast, step


def build_ebm_step(npz: dict, sampler: dict, reg: float, lr: float, beta1: float, device: str):
  """{variant: (net, net to run, autocast, step)}: the main job's EBM train step (ebm_train_step), each variant with
  its own copy of the weights, optimizer and buffer."""
  energy = torch_strided_energy(npz, device)
  forms = {"PyTorch eager": (False, False), "PyTorch eager, bf16 autocast": (False, True),
           "torch.compile": (True, False), "torch.compile, bf16 autocast": (True, True)}
  return {name: ebm_train_step(energy().to(device), npz, sampler, reg, lr, beta1, device, *form)
          for name, form in forms.items()}


def ebm_outputs(net, run, autocast: bool, x, fake, reg: float, device: str) -> dict:
  """What the JAX side checks, from the net's current weights: energies of [x; fake], the contrastive loss, each
  parameter's gradient norm (sorted flax path order) and dU/dx of the fakes (NHWC)."""
  import torch
  cast = lambda: torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast)
  named = net.flax_named()
  with torch.enable_grad():
    with cast():
      e = run(torch.cat([x, fake])).float()
    e_real, e_fake = e.chunk(2)
    loss = e_real.mean() - e_fake.mean() + reg * ((e_real ** 2).mean() + (e_fake ** 2).mean())
    grads = torch.autograd.grad(loss, [named[k] for k in sorted(named)])
    net.requires_grad_(False)
    xg = fake.clone().requires_grad_(True)
    with cast():
      u = run(xg).sum()
    gx, = torch.autograd.grad(u, xg)
    net.requires_grad_(True)
  return {"/e": e.detach(), "/loss": loss.detach().reshape(1),
          "/gnorm": torch.stack([g.float().norm() for g in grads]), "/gx": gx.permute(0, 2, 3, 1)}


def main() -> int:
  if {"-h", "--help"} & set(sys.argv[1:]):   # a worker, started by TorchPeer under --torch-python; it takes no flags
    print(__doc__)
    return 0
  import torch
  import torch._dynamo
  torch.set_num_threads(int(os.environ.get("TORCH_PEER_THREADS") or os.cpu_count()))   # default: one per core
  # every torch.compile'd variant wraps the same code, and Dynamo's limit of compiled versions is per code
  # object: 5 variants x (no_grad check, grad) x autocast would hit the default 8 and fall back to eager
  for name in ("cache_size_limit", "recompile_limit"):
    if hasattr(torch._dynamo.config, name):
      setattr(torch._dynamo.config, name, 64)
  device = os.environ.get("TORCH_PEER_DEVICE", "cpu")
  variants, inputs, built, ebm = {}, (), {}, {}
  for line in sys.stdin:
    msg = json.loads(line)
    if msg["cmd"] == "quit":
      break
    if msg["cmd"] == "load":
      npz = dict(np.load(msg["npz"]))
      x = torch.tensor(npz["x"].transpose(0, 3, 1, 2), device=device).contiguous()
      outputs, failed = {}, {}
      if msg.get("kind") == "ebm_step":   # checked later ("outputs"), so that the first timed call compiles
        inputs = (x,)
        built = build_ebm_step(npz, msg["sampler"], msg["reg"], msg["lr"], msg["beta1"], device)
        check = None
        variants = {name: step for name, (_, _, _, step) in built.items()}
        ebm = {"fake": torch.tensor(npz["fake"].transpose(0, 3, 1, 2), device=device).contiguous(), "reg": msg["reg"],
               "initial": torch_strided_energy({k[len("check/"):]: v for k, v in npz.items()
                                                if k.startswith("check/")}, device)().state_dict()}
      elif msg.get("kind", "langevin") == "langevin":
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
        if check is None:
          continue
        try:
          with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=parts[-2]):
            outputs.update({name + k: v.cpu().numpy() for k, v in check(*parts).items()})
        except Exception as e:   # a torch.compile mode this machine cannot build: reported, not timed
          failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
          del variants[name]
      np.savez(msg["out"], **outputs)
      where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
      reply = {"variants": list(variants), "failed": failed, "versions": f"PyTorch {torch.__version__} on {where}"}
    elif msg["cmd"] == "outputs":   # kind ebm_step: each variant's outputs from its initial weights
      outputs = {}
      for name in variants:
        net, run, autocast, _ = built[name]
        net.load_state_dict(ebm["initial"])   # in place: the compiled forms keep their graphs
        got = ebm_outputs(net, run, autocast, inputs[0], ebm["fake"], ebm["reg"], device)
        outputs.update({name + k: v.float().cpu().numpy() for k, v in got.items()})
      np.savez(msg["out"], **outputs)
      reply = {"variants": list(variants)}
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
  runs on one, with `threads` CPU threads (0: one per core). `TorchPeer.start` returns (None, why) where that python
  has no torch."""

  def __init__(self, proc):
    self.proc = proc

  @classmethod
  def start(cls, python: str | None, gpu: bool = False, threads: int = 0):
    python = python or sys.executable
    probe = subprocess.run([python, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True,
                           text=True)
    if probe.returncode:
      return None, f"no PyTorch in {python} (pip install torch, or --torch-python PATH): no PyTorch rows"
    device = "cuda" if gpu and probe.stdout.strip() == "True" else "cpu"
    proc = subprocess.Popen([python, os.path.abspath(__file__)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "TORCH_PEER_DEVICE": device,
                                            **({"TORCH_PEER_THREADS": str(threads)} if threads else {})})
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

  def outputs(self, tmpdir: str) -> dict:
    """{"<variant><part>": array}: the "outputs" command's (kind ebm_step), written after the timings."""
    self.ask(cmd="outputs", out=os.path.join(tmpdir, "outputs.npz"))
    return dict(np.load(os.path.join(tmpdir, "outputs.npz")))

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
