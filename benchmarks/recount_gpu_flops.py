"""One-off: the FLOP columns of benchmarks/results/{gan_step,langevin}_gpu.json (run on an H200 by
device_check.sh, whose XLA:GPU counts left out the cuDNN convolutions) replaced by the CPU compile's counts of the
same programs, copied from the two --flops-only commands named below. Times are untouched. Idempotent."""
import json
from pathlib import Path


def main():
  R = Path("benchmarks/results")
  # FLOP counts of the same programs compiled for the CPU (this VM, jax 0.10.2):
  gan_cmd = "python -m benchmarks.gan_step --flops-only --batches 64,256,1024 --conv-transpose flax"
  gan = {(64, "a"): 28.02, (64, "b"): 27.85, (64, "c"): 23.19, (64, "d"): 22.08, (64, "e"): 22.08,
         (256, "a"): 112.0, (256, "b"): 111.3, (256, "c"): 92.68, (256, "d"): 88.23, (256, "e"): 88.23,
         (1024, "a"): 447.8, (1024, "b"): 445.2, (1024, "c"): 370.6, (1024, "d"): 352.8, (1024, "e"): 352.8}
  g = json.loads((R / "gan_step_gpu.json").read_text())
  g.setdefault("xla_gpu_gflop_as_measured", [[r[0], r[1], r[4]] for r in g["rows"]])
  for r in g["rows"]:
    f = gan[(r[0], r[1][1])]
    r[4], r[5] = f, f"{f / gan[(r[0], 'a')]:.2f}"
  g["flops_note"] = (f"XLA GFLOP and FLOPs / (a): the CPU compile's count of the same programs (`{gan_cmd}`); "
                     "XLA:GPU's own count (kept in xla_gpu_gflop_as_measured) leaves out the cuDNN convolutions. "
                     "Measured with the generator's nn.ConvTranspose layers, before they moved to the sub-pixel form; "
                     "the FLOP counts are of that program.")
  (R / "gan_step_gpu.json").write_text(json.dumps(g, indent=1))

  lang_cmd = "python -m benchmarks.langevin --flops-only --chains 16,64,256,1024"
  per_step = {16: 8.603, 64: 34.39, 128: 68.78, 256: 137.5, 1024: 550.2}
  l = json.loads((R / "langevin_gpu.json").read_text())
  peak = l["matmul_gflops"]
  l.pop("flops_note", None)
  rows = []
  for n, k, chain, comp, ms, sps, *_ in l["rows"]:
    gflop = per_step[n] * k
    rate = per_step[n] / (ms / 1e3)
    rows.append([n, k, chain, comp, ms, sps, gflop, rate, f"{rate / peak:.1%}"])
  l["rows"] = rows
  c = l["compare"]
  for r in c["rows"]:
    r[4] = f"{per_step[128] / (r[2] / 1e3) / peak:.1%}"
  c["title"] = c["title"].replace("(8.0 XLA GFLOP)", f"({per_step[128] * 20:.0f} XLA GFLOP)")
  l["flops_note"] = (f"FLOPs: one step's count from the CPU compile of the same program (`{lang_cmd}`) x K; XLA:GPU's "
                     "own count leaves out the cuDNN convolutions. The matmul reference is XLA's float32 4096^2 matmul "
                     "on this GPU (TF32 tensor cores).")
  (R / "langevin_gpu.json").write_text(json.dumps(l, indent=1))
  for r in rows: print(r)
  for r in c["rows"]: print(r)
  print(c["title"])


if __name__ == "__main__":
  main()
