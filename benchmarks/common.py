"""Timing helpers: warm-up excluded, block_until_ready, median of repeats."""

import importlib
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import jax

from jaxtricks import loop


def cpu_model() -> str:
  """The CPU's model name and its vector / matrix units, from /proc/cpuinfo (e.g. "AMD EPYC, AVX2" or
  "Intel(R) Xeon(R) Platinum 8481C, AVX2, AVX-512, AVX-512 BF16, AMX"): the same VM image runs on different hosts
  from day to day, and which one decides what is fast (XLA:CPU uses AVX-512 where there is one; PyTorch's bfloat16
  runs on AVX-512 BF16 or AMX, and is far slower than its float32 without them)."""
  try:
    info = Path("/proc/cpuinfo").read_text()
  except OSError:
    return platform.processor() or platform.machine()
  name = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), platform.machine())
  flags = set(next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), []))
  units = [label for label, flag in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX-512 BF16", "avx512_bf16"),
                                      ("AMX", "amx_bf16")) if flag in flags]
  return ", ".join([name, *units])


def machine() -> str:
  dev = jax.devices()[0]
  if dev.platform == "cpu":
    return f"{cpu_model()} CPU, {os.cpu_count()} cores ({jax.device_count()} JAX device)"
  return f"{dev.device_kind} ({jax.device_count()} device(s))"


def xla_flops(fn, *args, compiled=None) -> float:
  """XLA's FLOP count of fn(*args) as compiled for the CPU, whatever the default backend: XLA:GPU's cost analysis
  leaves out the convolutions it hands to cuDNN as custom calls (for a conv net it reports ~1% of the FLOPs), so
  FLOPs are counted on the CPU compile of the same program on every machine. `compiled`, fn's compile for the
  default backend, is that compile when the backend is the CPU and every arg sits on one device: no second one."""
  leaves = jax.tree.leaves(args)
  if compiled is None or jax.default_backend() != "cpu" or any(
      len(a.sharding.device_set) > 1 for a in leaves if isinstance(a, jax.Array)):
    compiled = jax.jit(fn).lower(*jax.device_put(args, jax.devices("cpu")[0])).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def time_call(fn, *, repeats: int = 20, warmup: int = 2) -> tuple[float, float]:
  """(seconds of the first call, median seconds of `repeats` later calls); fn() must return arrays."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return first, (statistics.median(times) if times else float("nan"))


def time_interleaved(fns: dict, *, repeats: int = 20, warmup: int = 2) -> dict[str, float]:
  """Median seconds of each fn, calls interleaved round-robin so that machine noise hits all alike."""
  for fn in fns.values():
    for _ in range(warmup):
      jax.block_until_ready(fn())
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - t0)
  return {name: statistics.median(t) for name, t in times.items()}


def table(header: list[str], rows: list[list]) -> str:
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def loop_minutes(workdir) -> float:
  """A run's training-loop wall time (evaluations included) from its metrics.jsonl steps/s; holds across resumes."""
  rows = loop.metric(loop.read_metrics(workdir), "steps_per_sec")
  return sum((s - s0) / v for (s0, _), (s, v) in zip([(0, 1.0)] + rows, rows)) / 60


def flag_argv(flags: dict) -> list[str]:
  """--flag value for each keyword (True/False: --flag / --no-flag), as the programs' parsers read them."""
  argv = []
  for name, value in flags.items():
    flag = "--" + name.replace("_", "-")
    argv += [flag] if value is True else [f"--no-{flag[2:]}"] if value is False else [flag, str(value)]
  return argv


def train(program: str, **flags) -> list[str]:
  """Runs `python -m train.<program>` in this process through its public main, with --flag value for each
  keyword (True/False: --flag / --no-flag); raises SystemExit on failure. Returns the argv it ran with.
  A finished run returns at once (runs resume)."""
  return run_program(program, flag_argv(flags))


def run_program(program: str, argv: list[str]) -> list[str]:
  """`python -m train.<program> *argv` in this process (its public main); SystemExit on failure; returns argv."""
  rc = importlib.import_module(f"train.{program}").main(argv)
  if rc:
    raise SystemExit(f"python -m train.{program} {' '.join(argv)} exited with {rc}")
  return argv


def pending_runs(names: list[str], seeds: list[int], recorded: dict, argv_of, max_runs: int = 0,
                 seed_major: bool = True) -> list:
  """The (name, seed) runs a resumable multi-run benchmark (a multi-seed table) still has to train: those whose
  key "name/seed" is not in `recorded` (its committed results file) with the argv `argv_of(name, seed)` they
  would run with now. Seed-major by default, every name's first seed before any name's second, so a study cut
  short by a session has one run of each; `seed_major=False`: all seeds of a name before the next name. At most
  `max_runs` (0: all)."""
  pairs = ([(name, seed) for seed in seeds for name in names] if seed_major else
           [(name, seed) for name in names for seed in seeds])
  todo = [(name, seed) for name, seed in pairs if recorded.get(f"{name}/{seed}", {}).get("argv") != argv_of(name, seed)]
  return todo[:max_runs] if max_runs else todo


def run_machines(runs: dict) -> str:
  """The machines a multi-run table's recorded runs came from, with how many runs and their dates each (the VM's
  host changes between sessions, so one table may hold runs of several)."""
  by = {}
  for run in runs.values():
    by.setdefault(run.get("machine", "machine not recorded"), []).append(run.get("date", "")[:10])
  return "; ".join(f"{m}: {len(d)} run{'s' * (len(d) > 1)} ({', '.join(sorted(set(d)))})" for m, d in by.items())


def results_machines(data: dict) -> str:
  """Where a results file's table was measured: the machines of its runs where every run records one, else the
  machine that wrote the file."""
  runs = data.get("runs") or {}
  if runs and all(isinstance(r, dict) and "machine" in r for r in runs.values()):
    return f"runs on {run_machines(runs)}"
  return data["machine"]


def update_results_md(results, marker: str, md=Path(__file__).parent / "RESULTS.md") -> int:
  """Rewrites the text between RESULTS.md's markers `<!-- marker:begin -->` ... `<!-- marker:end -->` with the
  table of results file `results`, its command and the machines of its runs. 2 when the markers are missing."""
  data = json.loads(Path(results).read_text())
  begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
  md = Path(md)
  text = md.read_text()
  if begin not in text or end not in text:
    print(f"{md} lacks the markers {begin} ... {end}", file=sys.stderr)
    return 2
  block = (f"`{data['command']}`, jax {data['jax']} — {results_machines(data)}.\n\n"
           f"{table(data['header'], data['rows'])}\n")
  head, rest = text.split(begin, 1)
  md.write_text(f"{head}{begin}\n{block}{end}{rest.split(end, 1)[1]}")
  print(f"rewrote the {marker} table in {md}")
  return 0


def env_prefix() -> list[str]:
  """The environment settings that change what XLA runs (XLA_FLAGS, JAX_NUM_CPU_DEVICES), as a command's prefix."""
  return [f"{k}={shlex.quote(os.environ[k])}" for k in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES") if os.environ.get(k)]


def write_results(path, module: str, argv, header: list[str], rows: list[list], **extra) -> None:
  """Saves a printed table with its command, machine and date as JSON (benchmarks.report renders it)."""
  argv = sys.argv[1:] if argv is None else list(argv)
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({
      "command": " ".join([*env_prefix(), "python -m", module, *map(shlex.quote, argv)]), "machine": machine(),
      "jax": jax.__version__,
      "date": time.strftime("%Y-%m-%d"), "argv": argv, "header": header, "rows": rows, **extra}, indent=1))


def classifier_step(model, input_shape: tuple[int, ...], lr: float = 1e-3, *, jit: bool = True):
  """(state, jitted step) of a classifier trained with cross-entropy and Adam, as train.classify's default
  (`--loss ce`) trains it: the compiled core the timing benchmarks measure."""
  import functools

  import optax

  from jaxtricks import classifier

  tx = optax.adam(lr)
  ce = lambda outputs, batch, step: optax.softmax_cross_entropy_with_integer_labels(outputs, batch["label"]).mean()
  state = classifier.init(jax.random.PRNGKey(0), model, (1, *input_shape), tx)
  step = functools.partial(classifier.train_step, model=model, tx=tx, objective=ce)
  return state, (jax.jit(step, donate_argnums=0) if jit else step)
