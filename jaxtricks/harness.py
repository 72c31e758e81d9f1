"""What every trainer shares, declared once: the common settings and their checks, the run prelude (mesh, keys,
data, device batches), the masked evaluator, and the call into the loop. A `train.*` program adds its config
fields, its state, its step and its evaluation:

    @dataclasses.dataclass(frozen=True)
    class Config(harness.BaseConfig):
      lr: float = 1e-3
      workdir: str = "runs/mine"               # a common field with this program's default

    def run(config, actions=()):
      mesh = harness.mesh(config, config.batch_size)          # before any data is read
      train, test = harness.load_images(config.dataset, config)
      keys = harness.keys(config.seed, "init", "data", "step")
      batches = harness.batches(train, config.batch_size, keys["data"], mesh, transform=...)
      return harness.train(config, steps=..., init_fn=..., train_step=step, batches=batches, key=keys["step"],
                           mesh=mesh, actions=[...], fingerprint=("seed", ...))
"""

import dataclasses
import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import flax.serialization
import jax
import jaxlib
import numpy as np
from jax.experimental import checkify

from jaxtricks import checkpoints, images, loop, metrics, parallel
from jaxtricks.data import kept, load, pipeline
from jaxtricks.errors import ConfigError, DataError, DivergenceError, WorkdirError, require
from jaxtricks.workdir import compare_fingerprints, read_config, write_json


@dataclasses.dataclass(frozen=True)
class BaseConfig:
  """The settings every trainer has. Subclasses redeclare a field to change its default."""
  seed: int = 0
  workdir: str = "runs/run"
  data_dir: str = dataclasses.field(default="", metadata={"help": "raw data folder (else $JAXTRICKS_DATA)"})
  checkpoint_every: int = 500
  devices: int | Literal["all"] = dataclasses.field(
      default="all", metadata={"help": "devices to split each batch over: all visible, or the first N",
                               "deprecated": {0: "all"}})
  cpu_devices: int | Literal["per_core"] = dataclasses.field(
      default=1, metadata={"help": "on a CPU: XLA devices to make of it, each batch split over them (per_core: one "
                                   "per core, fewer where the batch does not divide); JAX_NUM_CPU_DEVICES or "
                                   "XLA_FLAGS' device count, if set, win; unused on a GPU/TPU",
                           "deprecated": {0: "per_core"}})
  cpu_ynn_convolutions: bool = dataclasses.field(
      default=True, metadata={"help": "on a CPU: let XLA run the train step's convolutions with YNNPACK (its default "
                                      "in jaxlib 0.12); off: XLA's own kernels (faster for some nets, "
                                      "benchmarks/speed/README.md); unused on a GPU/TPU"})
  progress: bool = True
  tensorboard: bool = dataclasses.field(default=True, metadata={"help": "also write TensorBoard event files"})

  def __post_init__(self):
    require_finite(self)
    require(bool(self.workdir), "workdir", "must name a directory")
    require(self.checkpoint_every > 0, "checkpoint_every", f"must be positive, got {self.checkpoint_every}")
    require(self.devices == "all" or self.devices >= 1, "devices", f"must be all or >= 1, got {self.devices}")
    require(self.cpu_devices == "per_core" or self.cpu_devices >= 1, "cpu_devices",
            f"must be per_core or >= 1, got {self.cpu_devices}")

  def split_sizes(self) -> tuple[int, ...]:
    """The sizes split over the devices (each must divide by their count): the batch; a program adds its own."""
    return (self.batch_size,) if hasattr(self, "batch_size") else ()

  def cpu_device_count(self) -> int:
    """`cpu_devices` (per_core: one per core), lowered until every `split_sizes` divides by it."""
    count = parallel.cpu_cores() if self.cpu_devices == "per_core" else self.cpu_devices
    while count > 1 and any(size % count for size in self.split_sizes()):
      count -= 1
    return count


@dataclasses.dataclass(frozen=True)
class EvalOnlyConfig:
  """--eval-only: mixed into a program's config before BaseConfig; the program calls `evaluate_checkpoint`."""
  eval_only: bool = dataclasses.field(
      default=False, metadata={"help": "train nothing: evaluate the newest checkpoint in the workdir (or the "
                                       "pretrained model there, benchmarks/pretrained/), print it and write it to "
                                       "<workdir>/eval.json"})


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """The settings of a generator's sample export for the standard Inception FID/KID tools (pytorch-fid, clean-fid,
  torch-fidelity; docs/programs.md): mixed into a program's config before BaseConfig, checked by `check_export`."""
  export_samples: int | None = dataclasses.field(
      default=None, metadata={"help": "at the end, write N samples as 3-channel uint8 images for pytorch-fid, "
                                      "clean-fid and torch-fidelity (docs/programs.md); left out: none"})
  export_dir: str = dataclasses.field(
      default="", metadata={"help": "folder of the export: samples/ (PNG files) or samples.npz, and real/ or "
                                    "real.npz (empty: <workdir>/export)"})
  export_format: Literal["png", "npz"] = dataclasses.field(
      default="png", metadata={"help": "png: one file per image in a folder (what all three tools read); npz: one "
                                       "uint8 array [N, H, W, 3] under the key arr_0"})

  def export_folder(self) -> Path:
    return Path(self.export_dir or Path(self.workdir) / "export")

  def export_sets(self) -> tuple[str, ...]:
    """The sets this run writes: samples (with export_samples), real (with export_real, where the program has it)."""
    return (("samples",) if self.export_samples is not None else ()) + (("real",) if getattr(self, "export_real", False)
                                                                         else ())

  def check_export(self) -> None:
    """export_samples >= 1 where given, and a folder that can take the export (images.check_export), before any
    training."""
    if self.export_samples is not None:
      require(self.export_samples >= 1, "export_samples", f"must be >= 1 (or left out: no export), got "
              f"{self.export_samples}")
    if self.export_sets():
      images.check_export(self.export_folder(), self.export_sets(), self.export_format)


def export(config: ExportConfig, draw: Callable[[int], Any], reals=None) -> list[Path]:
  """Writes the export `config` asks for: `draw(n)` -> n samples in [0, 1] as `export_samples`, and `reals` (the
  data the program's FIDs compare with) as `real`; one line each. DivergenceError for non-finite samples."""
  written = []
  for name in config.export_sets():
    x = np.asarray(draw(config.export_samples) if name == "samples" else reals)
    if not np.issubdtype(x.dtype, np.integer) and not np.isfinite(x).all():
      raise DivergenceError(None, f"the samples hold non-finite values; nothing written to {config.export_folder()}")
    path = images.write_export(x, config.export_folder(), name, config.export_format)
    print(f"wrote {len(x)} {'samples' if name == 'samples' else 'real images'} ({x.shape[1]}x{x.shape[2]}, as 3-channel "
          f"uint8) to {path}")
    written.append(path)
  return written


def require_finite(config) -> None:
  """Every float field of `config` must be a finite number (inf and nan are refused whatever the field)."""
  for f in dataclasses.fields(config):
    value = getattr(config, f.name)
    if isinstance(value, float):
      require(math.isfinite(value), f.name, f"must be a finite number, got {value}")


def require_positive(config, *names: str) -> None:
  """Each named field of `config` must be > 0."""
  for name in names:
    require(getattr(config, name) > 0, name, f"must be positive, got {getattr(config, name)}")


def fingerprint(config, names: Sequence[str], *, since: Sequence[str] = ()) -> dict[str, Any]:
  """The settings that define a run's state; resuming with other values is refused (workdir.prepare). `since`:
  those of `names` the program added to its fingerprint after runs were made; they are left out when the
  workdir's config.json exists and does not record them (an older run: what they were is not known)."""
  values = dataclasses.asdict(config)
  saved = Path(values.get("workdir") or "") / "config.json"
  if since and values.get("workdir") and saved.is_file():
    try:
      recorded = json.loads(saved.read_text())
    except (OSError, ValueError):
      recorded = None   # unreadable: workdir.prepare names it
    if isinstance(recorded, dict):
      names = [k for k in names if k not in since or k in recorded]
  return {k: values[k] for k in names}


def mesh(config: BaseConfig, batch_size: int | None = None):
  """The 'data' mesh over `config.devices` devices; checks the (global) batch size divides by them."""
  return parallel.make_mesh(config.devices, batch_size=batch_size)


def keys(seed: int, *names: str) -> dict[str, jax.Array]:
  """{name: key}: jax.random.split(PRNGKey(seed), len(names)) in the order named."""
  return dict(zip(names, jax.random.split(jax.random.PRNGKey(seed), len(names))))


def load_images(dataset: str, config: BaseConfig) -> tuple[dict, dict]:
  """({"image", "label"} of the train split, the same of the test split), numpy arrays on the host."""
  data_dir = config.data_dir or None
  train_x, train_y = load(dataset, "train", data_dir=data_dir)
  test_x, test_y = load(dataset, "test", data_dir=data_dir)
  return {"image": train_x, "label": train_y}, {"image": test_x, "label": test_y}


def scores_against_test(dataset: str, config: BaseConfig, images_NHWC: np.ndarray,
                        fid: str) -> Callable[[Any], dict]:
  """metrics.scores_against(images_NHWC, the test split of `dataset`) with FID `fid`'s net, built at its first
  call (a bad setting found at the start does not wait for it). The test images' features are kept beside the
  prepared data set (data.kept), named by a digest of what they are computed by and from: the net (its module
  and weights), the images, and how they are computed: jax, jaxlib, the device kind, XLA_FLAGS and the matmul
  precision (floats differ between them in the last bits; a GPU's by more). A machine computes them once (~5 s
  on 2 cores for Fashion-MNIST's 10,000), not at every start and evaluation of a program."""
  net = metrics.load_feature_net(fid=fid)
  built = []

  def score(x):
    if not built:
      digest = hashlib.sha256(repr((net[0], images_NHWC.shape, str(images_NHWC.dtype), jax.__version__,
                                    jaxlib.__version__, jax.devices()[0].device_kind, os.environ.get("XLA_FLAGS"),
                                    jax.config.jax_default_matmul_precision)).encode())
      digest.update(flax.serialization.to_bytes(net[1]))
      digest.update(np.ascontiguousarray(images_NHWC).tobytes())
      features = kept(dataset, f"test.features-{fid}-{digest.hexdigest()[:16]}.npz",
                      lambda: metrics.feature_net_outputs(images_NHWC, net=net)[0], data_dir=config.data_dir or None,
                      shape=(len(images_NHWC), net[0].features))
      built.append(metrics.scores_against(images_NHWC, net=net, reference_features_ND=features))
    return built[0](x)
  return score


def batches(data: dict, batch_size: int, key: jax.Array, mesh, transform=None) -> pipeline.DeviceBatches:
  """The train split on the device(s), batch of step s gathered (and transformed) from (key, s)."""
  n = len(jax.tree.leaves(data)[0])
  require(batch_size <= n, "batch_size", f"{batch_size} exceeds the {n} training examples")
  return pipeline.DeviceBatches(data, batch_size=batch_size, key=key, transform=transform, mesh=mesh)


def evaluator(per_example: Callable[[Any, dict], dict], data: dict, *, batch_size: int,
              prefix: str = "test") -> Callable[[Any], dict[str, float]]:
  """state -> {f"{prefix}/{name}": mean over the split} of `per_example(state, batch) -> {name: [B] values}`.

  The split goes through in batches of `batch_size`; the last batch is padded and its padding masked out, so
  every example counts once whatever the split's size. `per_example` is jitted once."""
  per_example = jax.jit(per_example)
  data = jax.device_put(data)
  n = len(jax.tree.leaves(data)[0])

  @jax.jit
  def masked_sums(state, batch, mask_B):
    return jax.tree.map(lambda v: (v * mask_B).sum(), per_example(state, batch))

  def evaluate(state) -> dict[str, float]:
    sums = [masked_sums(state, b, m) for b, m in pipeline.eval_batches(data, batch_size=batch_size)]
    total = jax.device_get(jax.tree.map(lambda *v: sum(v), *sums))
    return {f"{prefix}/{k}": float(v) / n for k, v in total.items()}
  return evaluate


def checked_first_step(train_step, jitted_step):
  """`jitted_step`, whose first call is preceded by a checked run of the same step: `train_step` under
  jax.experimental.checkify (user checks: the library's debug_checks, e.g. labels in [0, C)), jitted to return the
  error alone, so XLA drops all but the checks (a small compile; the step's result is not used). The step that
  trains is `jitted_step` itself, unchanged: same program, same numbers. A failed check raises DataError."""
  checked = jax.jit(lambda *args: checkify.checkify(train_step, errors=checkify.user_checks)(*args)[0])
  first = [True]

  def step(state, batch, key):
    if first[0]:
      first[0] = False
      failed = checked(state, batch, key).get()
      if failed is not None:
        what = failed.removesuffix(" (`check` failed)").strip().splitlines()[0]
        raise DataError(None, f"the first training batch fails a check ({what}); fix the training data (the "
                        "{data_dir} folder)")
    return jitted_step(state, batch, key)
  return step


def train(config: BaseConfig, *, steps: int, init_fn: Callable[[], Any], train_step, batches, key: jax.Array,
          mesh, state_sharding=None, actions: Iterable[loop.Periodic] = (), fingerprint: dict | None = None,
          progress_keys: tuple[str, ...] = ("loss", "accuracy"),
          divergence_advice: str = "Resume from it with a lower {lr}", check_first_step: bool = True) -> Any:
  """jits `train_step(state, batch, key)` once for the mesh (state as `state_sharding`, default replicated; batch
  split along 'data'; state donated; on a CPU compiled as `config.cpu_ynn_convolutions` says) and runs the loop
  with the common settings of `config`. `progress_keys`: the metrics on the progress bar; `divergence_advice`: the
  sentence that ends a divergence's message ({name}: a setting, jaxtricks.errors; "Resume from it with" becomes
  "Run again with" when no checkpoint was saved). With `check_first_step` the first step's checks run first
  (`checked_first_step`). Running out of memory is a ConfigError. A new run that fails before its first step has
  succeeded leaves its workdir as it was (the loop writes nothing there before), free for other settings."""
  state_sharding = parallel.replicated(mesh) if state_sharding is None else state_sharding
  loop_config = loop.LoopConfig(steps=steps, workdir=config.workdir, checkpoint_every=config.checkpoint_every,
                                progress=config.progress, tensorboard=config.tensorboard)
  step = parallel.jit_step(train_step, mesh, state_sharding,
                           compiler_options=parallel.cpu_compiler_options(ynn_convolutions=config.cpu_ynn_convolutions))
  workdir = Path(config.workdir)
  before = set(workdir.iterdir()) if workdir.is_dir() else None   # what was there: a failed new run leaves only that
  try:
    return loop.run(loop_config, init_fn=init_fn, train_step=checked_first_step(train_step, step) if check_first_step
                    else step, batches=batches, key=key, actions=actions, fingerprint=fingerprint,
                    state_sharding=state_sharding, shown=progress_keys)
  except DivergenceError as e:
    if "last good checkpoint: none" in e.problem:   # nothing to resume from
      divergence_advice = divergence_advice.replace("Resume from it with", "Run again with")
    raise DivergenceError(None, f"{e.problem} {divergence_advice}") from None
  except jax.errors.JaxRuntimeError as e:
    what = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if ("out of memory" not in what.lower() and "RESOURCE_EXHAUSTED" not in what) or "No space left" in what:
      raise
    _settle_failed_computations()
    _unbind_if_untrained(workdir, before)
    raise ConfigError(None, f"the run does not fit in the device's memory ({what[-160:]}); make it smaller (a lower "
                      "{batch_size}, a smaller model) or use a device with more memory") from None


def _unbind_if_untrained(workdir: Path, before: set | None) -> None:
  """After running out of memory past step 1 (an evaluation, say) but before any checkpoint: removes what this run
  wrote into a workdir that held no run before (config.json, metrics.jsonl, events, an empty checkpoints/), so the
  advised smaller run may use it; a workdir with a checkpoint, or one that held a run before, is left alone."""
  if checkpoints.steps(workdir) or before is None and not workdir.is_dir() or jax.process_index() != 0:
    return
  if before is not None and any(p.name == "config.json" for p in before):
    return
  for path in set(workdir.iterdir()) - (before or set()):
    if path.is_dir():
      shutil.rmtree(path, ignore_errors=True)
    else:
      path.unlink(missing_ok=True)


def _settle_failed_computations() -> None:
  """Collects a failed computation's error, which JAX would otherwise raise again at exit (a traceback)."""
  try:
    jax.effects_barrier()
  except jax.errors.JaxRuntimeError:
    pass


def evaluate_checkpoint(workdir: str | Path, *, init_fn: Callable[[], Any], evaluate: Callable[[Any], dict],
                        fingerprint: dict | None = None, check: Callable[[Any], Any] | None = None,
                        then: Callable[[Any], Any] | None = None) -> dict:
  """No training: {"step": s, **evaluate(state)} of the newest intact checkpoint in `workdir` (or of the pretrained
  model there: checkpoints.save_weights), after checking the run's settings against `fingerprint` and the restored
  state with `check(state)` (what the state decides, such as how many samples an export can take: refused before
  the evaluation's time); printed and written to <workdir>/eval.json (a program's --eval-only; WorkdirError after
  the printing when eval.json cannot be written); then `then(state)` (a generator's sample export)."""
  workdir = Path(workdir)
  weights = not checkpoints.steps(workdir) and (workdir / checkpoints.WEIGHTS).is_file()   # a pretrained model
  if not (weights or checkpoints.steps(workdir)):   # looked for, never created
    raise WorkdirError("workdir", f"{workdir}: no checkpoint to evaluate; train a run there first, or name a "
                       "pretrained model's folder (benchmarks/pretrained/README.md lists them)")
  if fingerprint is not None and (workdir / "config.json").exists():
    compare_fingerprints(workdir, read_config(workdir / "config.json"), fingerprint)
  if weights:
    state, step = checkpoints.restore_weights(workdir, jax.eval_shape(init_fn))
  else:
    state, _, step = checkpoints.restore(workdir, jax.eval_shape(init_fn))
  if check is not None:
    check(state)
  values = {"step": step, **evaluate(state)}
  print(f"{workdir} step {step}: " + loop.scalar_line({k: v for k, v in values.items() if k != "step"}))
  try:   # printed first: a read-only workdir (a colleague's run, a shared disk) still gives its numbers
    write_json(workdir / "eval.json", values)   # whole or absent
  except OSError as e:
    raise WorkdirError("workdir", f"{workdir}: eval.json cannot be written there ({e.strerror or e}); the values "
                       "printed above are not saved: make the folder writable to keep them") from None
  if then is not None:
    then(state)
  return values
