"""The EBM's energy net and Langevin chain in PyTorch, in every form a researcher would compare against: eager
float32, eager under bfloat16 autocast, torch.compile (default, mode="max-autotune", and on CUDA
mode="reduce-overhead", i.e. CUDA graphs). A worker process driven by benchmarks.langevin over stdin/stdout (one
JSON object a line), so that it can run under another interpreter than JAX's (PyTorch has no wheel for every
Python JAX supports: `--torch-python`). Imports torch and numpy only.

Commands: {"cmd": "load", "npz": path, "channels": c, "num_steps": K, "sampler": {...}, "out": path} builds the
variants from the weights in the npz (conv kernels HWIO and biases, keys "<block>/<conv>:w|b", "dense:w|b", and
"x" [B, 28, 28, 1]) and writes each variant's energies of x to `out`; answers {"variants": [...], "versions": ...}.
{"cmd": "time", "variant": name} runs that variant's chain once on x and answers {"seconds": s} (the first call
of a variant includes its compilation). {"cmd": "quit"}.
"""

import json
import os
import sys
import time

import numpy as np


def build(npz: dict, channels: int, num_steps: int, sampler: dict, device: str):
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


def main() -> int:
  import torch
  import torch._dynamo
  torch.set_num_threads(os.cpu_count())
  # every torch.compile'd variant wraps the same `energy` code, and Dynamo's limit of compiled versions is per code
  # object: 5 variants x (no_grad check, grad chain) x autocast would hit the default 8 and fall back to eager
  for name in ("cache_size_limit", "recompile_limit"):
    if hasattr(torch._dynamo.config, name):
      setattr(torch._dynamo.config, name, 64)
  device = os.environ.get("TORCH_PEER_DEVICE", "cpu")
  variants, x = {}, None
  for line in sys.stdin:
    msg = json.loads(line)
    if msg["cmd"] == "quit":
      break
    if msg["cmd"] == "load":
      npz = dict(np.load(msg["npz"]))
      x = torch.tensor(npz["x"].transpose(0, 3, 1, 2), device=device).contiguous()
      variants = build(npz, msg["channels"], msg["num_steps"], msg["sampler"], device)
      energies, failed = {}, {}
      for name, (fn, autocast, _) in list(variants.items()):
        try:
          with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
            energies[name] = fn(x).float().cpu().numpy()
        except Exception as e:   # a torch.compile mode this machine cannot build: reported, not timed
          failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
          del variants[name]
      np.savez(msg["out"], **energies)
      where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
      reply = {"variants": list(variants), "failed": failed, "versions": f"PyTorch {torch.__version__} on {where}"}
    elif msg["cmd"] == "time":
      run = variants[msg["variant"]][2]
      sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
      sync()
      t0 = time.perf_counter()
      run(x)
      sync()
      reply = {"seconds": time.perf_counter() - t0}
    print(json.dumps(reply), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
