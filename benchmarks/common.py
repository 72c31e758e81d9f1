"""What every benchmark shares: timing (warm-up excluded, block_until_ready, median of repeats), the machine,
XLA's FLOP count, the printed table and its results file (benchmarks.tools.report renders it)."""

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import jax


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


def env_prefix() -> list[str]:
  """The environment settings that change what XLA runs (XLA_FLAGS, JAX_NUM_CPU_DEVICES), as a command's prefix."""
  return [f"{k}={shlex.quote(os.environ[k])}" for k in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES") if os.environ.get(k)]


# flags whose value names a file of the machine that ran the command: recorded as a placeholder, so that a printed
# command names no local path and pastes into any shell
LOCAL_PATH_FLAGS = {"--torch-python": "PY"}


def portable_argv(argv: list[str]) -> list[str]:
  """argv with the value of each LOCAL_PATH_FLAGS flag replaced by its placeholder (`--torch-python PY`)."""
  out = list(argv)
  for i, arg in enumerate(out):
    name = arg.split("=", 1)[0]
    if name in LOCAL_PATH_FLAGS and "=" in arg:
      out[i] = f"{name}={LOCAL_PATH_FLAGS[name]}"
    elif i and out[i - 1] in LOCAL_PATH_FLAGS:
      out[i] = LOCAL_PATH_FLAGS[out[i - 1]]
  return out


def command(module: str, argv: list[str]) -> str:
  """The shell command that ran `python -m module *argv`, quoted (shlex) so that it pastes into bash, with the
  environment settings that change what XLA runs in front and no local path (portable_argv)."""
  return " ".join([*env_prefix(), shlex.join(["python", "-m", module, *portable_argv(argv)])])


def write_results(path, module: str, argv, header: list[str], rows: list[list], **extra) -> None:
  """Saves a printed table with its command, machine and date as JSON (benchmarks.tools.report renders it). A file
  of runs (`{"runs": [...]}`: a peer-timing kind measured again on other days and hosts) gets this run appended;
  any other file is replaced."""
  argv = portable_argv(sys.argv[1:] if argv is None else list(argv))
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  run = {"command": command(module, argv), "machine": machine(), "jax": jax.__version__,
         "date": time.strftime("%Y-%m-%d"), "argv": argv, "header": header, "rows": rows, **extra}
  previous = json.loads(path.read_text()) if path.exists() else {}
  if isinstance(previous.get("runs"), list):
    run = {**previous, "runs": [*previous["runs"], run]}
  path.write_text(json.dumps(run, indent=1))


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


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Each option's help ends with its default, unless the help already says what it defaults to."""

  def _get_help_string(self, action):
    text = action.help or ""
    return text if "default" in text.lower() else super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
  """argparse's parser as every benchmark's command line uses it: a usage error is one line, `PROG: error:
  MESSAGE`, and exit 2 (the project's rule for bad input; `--help` shows the usage); every option's help ends with
  its default; PROG is `python -m MODULE` when run that way (argparse's own would be the file's name)."""

  def __init__(self, *args, **kwargs):
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    if kwargs.get("prog") is None and main is not None and main.name.startswith("benchmarks."):
      kwargs["prog"] = f"python -m {main.name}"
    kwargs.setdefault("formatter_class", _DefaultsFormatter)
    super().__init__(*args, **kwargs)

  def add_argument(self, *args, **kwargs):
    if args and args[0].startswith("-") and not kwargs.get("help") and kwargs.get("action") not in (
        "store_true", "store_false", "help", "version"):
      kwargs["help"] = "(default: %(default)s)"
    return super().add_argument(*args, **kwargs)

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}\n")

  def comma_list(self, flag: str, text: str, *, of=int, choices=None, what: str | None = None,
                 example: str | None = None) -> list:
    """The values of a comma-separated option (`--seeds 0,1,2` -> [0, 1, 2]), each read by `of` (`what` it
    takes, for the error) and, given `choices`, one of them (a dict: its values for them, `--variants single` ->
    the label). An empty item (`0,,1`, `0,1,`), nothing at all or a bad value is this parser's one-line error
    naming the option, with an example (`example`, else two of the choices, else its default), exit 2: a caller
    whose option may be empty tests that before."""
    words = [w.strip() for w in text.split(",")]
    what = what or ("names" if of is str else "integers")
    example = example or (",".join(map(str, list(choices)[:2])) if choices else
                          self.get_default(flag.lstrip("-").replace("-", "_")) or "1,2")
    try:
      values = [of(w) for w in words if w]
    except ValueError:
      values = None
    unknown = [str(v) for v in values or [] if choices is not None and v not in choices]
    if values is None or "" in words or unknown:
      self.error(f"{flag}: " + (f"unknown {', '.join(unknown)}; choose from {', '.join(map(str, choices))}"
                                if unknown else f"comma-separated {what} without empty items") +
                 f", e.g. {flag} {example}; got {text!r}")
    return [choices[v] for v in values] if isinstance(choices, dict) else values
