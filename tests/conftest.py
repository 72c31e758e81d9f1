import os
import re
from pathlib import Path

# float32 convolutions and matmuls at full precision on every backend (GPUs may otherwise run them in TF32, whose
# 10-bit mantissa is far outside the known-answer tolerances here); the env var reaches the trainers' subprocesses
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

# Every program the tests compile, here and in the trainers they start (children inherit the environment), at LLVM
# optimization level 0 instead of XLA's default 3: the same HLO programs, whose floats may differ in the last bits
# (an init's weights do: jaxtricks.checkpoints.init_once), compiled in a fraction of the time. The suite is bound by
# compiling tiny programs: level 1 took 10:02 of pytest on a clean clone, level 0 9:05 (2-core AMD EPYC, 2026-12-04).
# The few tests that run hundreds of steps (a real-data accuracy bar, a walkthrough's chains) start their program as
# a child at level 1 (RUN_XLA_FLAGS), where it runs ~2x faster. No test compares against a level-3 result except in
# a child started with the production flags (test_loop's bitwise test, PRODUCTION_XLA_FLAGS).
TEST_XLA_LEVEL = "--xla_backend_optimization_level=0"
PRODUCTION_XLA_FLAGS = os.environ.get("XLA_FLAGS", "").replace(TEST_XLA_LEVEL, "").strip()   # (xdist workers inherit it)
if "xla_backend_optimization_level" not in PRODUCTION_XLA_FLAGS:
  os.environ["XLA_FLAGS"] = f"{PRODUCTION_XLA_FLAGS} {TEST_XLA_LEVEL}".strip()
# On a GPU, reductions with atomics and autotuned convolution algorithms make two runs of one program differ in the
# last bits: the kill-and-resume tests compare runs at 1e-6 (a lent H200 failed one at 1.4e-4, 2026-12-04). XLA's
# flag makes GPU programs deterministic; a CPU ignores it.
if "xla_gpu_deterministic_ops" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_gpu_deterministic_ops=true"
RUN_XLA_FLAGS = os.environ["XLA_FLAGS"].replace(TEST_XLA_LEVEL, "--xla_backend_optimization_level=1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxtricks.data import builders, text, write_idx_gz  # noqa: E402

os.environ.setdefault("JAXTRICKS_OFFLINE", "1")   # tests never wait on the network

# The tiny EBM runs that do not test train.ebm's default path train in float32 with XLA's convolutions and without
# augmented chain starts: 7 s less per run to start and compile on an AVX-512 BF16 host. The default path (bf16
# taps, augmented starts) is run by the tests that name it and by the benchmarks' ebm_long test.
EBM_PLAIN_FLAGS = dict(compute_dtype="float32", conv="xla", chain_augment=0)
EBM_PLAIN = [w for name, value in EBM_PLAIN_FLAGS.items() for w in ("--" + name.replace("_", "-"), str(value))]
_JAX_CACHE = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
  """One persistent XLA compilation cache per test session, shared by the xdist workers and every trainer the
  tests start as a child process (they inherit the environment): the straight, killed and resumed runs of one
  trainer compile the same programs, so only the first one pays for it. It changes nothing a test asserts (a
  cache hit loads the very executable a compile would make); it starts empty in each session, so the suite's
  time is a clean machine's. Eviction on (a max size) makes jax take a file lock around each read and write,
  so concurrent processes never see half-written entries."""
  import shutil
  import tempfile
  if not hasattr(config, "workerinput") and _JAX_CACHE not in os.environ:
    os.environ[_JAX_CACHE] = tempfile.mkdtemp(prefix="jaxtricks-tests-xla-cache-")
    config._jaxtricks_cache = os.environ[_JAX_CACHE]
    config.add_cleanup(lambda: shutil.rmtree(config._jaxtricks_cache, ignore_errors=True))
  # The trainers the tests start cache every program, however quick to compile: the children of one test compile
  # the same small programs (a trainer's init, step, evaluation), most in under a second at level 0 (-21% off the
  # fault tests, 2026-12-04). The test processes themselves cache only programs of 0.5 s or more: their eager
  # operations compile one tiny program each, and caching those doubled test_losses' and test_metrics' time.
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))
  jax.config.update("jax_compilation_cache_dir", os.environ[_JAX_CACHE])
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    max(0.5, float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])))
  jax.config.update("jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]))
jax.config.update("jax_numpy_rank_promotion", "raise")   # implicit broadcasting of different ranks is a bug here
# in-process trainers share this process's JAX: pin the CPU to one device, so that the first program run here does
# not make it one device per core (its --cpu-devices default) for every test after it; child processes are not
# pinned and get each program's own default (tests/test_cpu_devices.py)
# (a child pytest started with its own device count, tests/multidevice/, keeps that count)
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", "") and jax.config.jax_num_cpu_devices == -1:
  jax.config.update("jax_num_cpu_devices", 1)
REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
  """The longest tests first (marked slow, or pinned to one worker as an xdist_group): xdist hands out tests in
  this order, so none of them starts last and runs alone while the other worker idles (a stable sort: the rest
  keep their order). A test marked slow(first=True), the single longest, goes before the other slow ones, so that it
  starts at once on the worker that the faults group (a unit of 8 tests, handed out first by --dist loadgroup as
  the largest) does not take."""
  def order(item):
    slow = item.get_closest_marker("slow")
    return (not (slow or item.get_closest_marker("xdist_group")), not (slow and slow.kwargs.get("first")))
  items.sort(key=order)


# a line of XLA's own C++ logging (absl), e.g. "W1126 02:21:32.900814   18529 cuda_timer.cc:88] ..." from GPU autotuning
_XLA_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\] ")


def error_lines(stderr: str) -> list[str]:
  """A child's stderr as lines, without XLA's C++ log lines (which the programs do not control)."""
  return [l for l in stderr.strip().splitlines() if not _XLA_LOG_LINE.match(l)]


def without_progress_bars(err: str) -> list[str]:
  """stderr's lines without TFDS's data-preparation progress bars (drawn above a program's own lines)."""
  return [l for l in err.replace("\r", "\n").splitlines() if l.strip() and "\x1b[A" not in l and "it/s]" not in l
          and "s/ splits]" not in l and "examples/s]" not in l and "splits/s]" not in l]


def child_env(**overrides) -> dict:
  """The environment for a child Python: the repo first on PYTHONPATH (what was there kept), plus overrides."""
  path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
  return {**os.environ, "PYTHONPATH": path, **overrides}


# `python -m MODULE ARGS` for each command in turn, in one Python: each module runs as `python -m` runs it (runpy, as
# __main__, with its argv), its exit status collected; one interpreter start and JAX import for all (~3 s each)
_RUN_EACH = """
import json, runpy, sys
codes = []
for module, *argv in json.loads(sys.argv[1]):
  sys.argv = [module, *argv]
  try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    codes.append(0)
  except SystemExit as e:
    codes.append(e.code)
print("EXIT CODES", json.dumps(codes))
"""


def run_modules(commands: list[list[str]], env: dict, timeout: int = 900) -> tuple[list, str]:
  """(exit statuses, stderr) of the commands [module, *argv], run in turn by one child Python in the repo root."""
  import json
  import subprocess
  import sys
  p = subprocess.run([sys.executable, "-c", _RUN_EACH, json.dumps(commands)], cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=timeout)
  line = [l for l in p.stdout.splitlines() if l.startswith("EXIT CODES ")]
  codes = json.loads(line[-1].removeprefix("EXIT CODES ")) if p.returncode == 0 and line else [p.returncode]
  return codes, p.stderr


@pytest.fixture
def programs_in_process(monkeypatch):
  """A study's trainings and samplings (benchmarks.studies.common.run_program: `python -m train.NAME ARGV`, a
  process of its own) run in this process instead, through the program's main with the same argv (what `python -m`
  calls), its exit status raised as run_program raises it. For the studies' tests, which check a study's plumbing:
  no interpreter start and JAX import per run (~3 s each on 2 cores), and a program's compiled steps are reused by
  the next run of the same shapes. (run_program itself, a process per run, is tested on its own.)"""
  import importlib

  from benchmarks.studies import common

  def run_program(program: str, argv: list[str]) -> list[str]:
    try:
      rc = importlib.import_module(f"train.{program}").main(list(argv))
    except SystemExit as e:   # argparse's refusals
      rc = e.code
    if rc:
      raise common.ProgramFailed(f"python -m train.{program} {' '.join(argv)} exited with {rc}", rc)
    return argv
  monkeypatch.setattr(common, "run_program", run_program)


def make_raw_folder(root: Path, name: str = "fashion_mnist", n_train: int = 256, n_test: int = 64,
                    image_shape=(28, 28), seed: int = 0) -> dict[str, np.ndarray]:
  """Writes four tiny IDX .gz files into root/name/ and returns their arrays."""
  rng = np.random.default_rng(seed)
  folder = root / name
  folder.mkdir(parents=True, exist_ok=True)
  arrays = {}
  for split, n in (("train", n_train), ("test", n_test)):
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    # class-dependent images, so that a classifier can learn them
    images = rng.integers(0, 60, (n, *image_shape), dtype=np.uint8)
    rows = labels.astype(int) * 2 + 3
    images[np.arange(n), rows % image_shape[0], :] = 255
    arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    prefix = "train" if split == "train" else "t10k"
    write_idx_gz(folder / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
  return arrays


def make_cifar_folder(root: Path, fmt: str = "binary", n_train: int = 50, n_test: int = 20,
                      seed: int = 0) -> dict[str, np.ndarray]:
  """Writes a tiny CIFAR-10 archive into root/cifar10/ and returns its arrays: `fmt` "binary" is the official
  cifar-10-binary.tar.gz layout (5 train batches + test batch of 3,073-byte records), "jpeg" the JPEG copy's
  {train,test}/<class>/<n>.jpg. Images are smooth (JPEG keeps them close) and class-dependent."""
  import io
  import tarfile

  from PIL import Image

  rng = np.random.default_rng(seed)
  folder = root / "cifar10"
  folder.mkdir(parents=True, exist_ok=True)
  arrays = {}
  for split, n in (("train", n_train), ("test", n_test)):
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:32, 0:32]
    base = np.stack([yy * 4, xx * 4, (yy + xx) * 2], -1)
    images = ((base[None] + labels[:, None, None, None] * 20 + rng.integers(0, 8, (n, 1, 1, 3))) % 256).astype(np.uint8)
    arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels

  def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))

  if fmt == "binary":
    with tarfile.open(folder / "cifar-10-binary.tar.gz", "w:gz") as tar:
      records = lambda x, y: np.concatenate([y[:, None], x.transpose(0, 3, 1, 2).reshape(len(y), -1)], 1).tobytes()
      chunks = np.array_split(np.arange(n_train), 5)
      for i, idx in enumerate(chunks, 1):
        add(tar, f"cifar-10-batches-bin/data_batch_{i}.bin", records(arrays["train_images"][idx],
                                                                     arrays["train_labels"][idx]))
      add(tar, "cifar-10-batches-bin/test_batch.bin", records(arrays["test_images"], arrays["test_labels"]))
  else:
    from jaxtricks.data import CIFAR10_CLASSES
    with tarfile.open(folder / "cifar10_yoongikim_jpg.tar.gz", "w:gz") as tar:
      for split in ("train", "test"):
        order = np.argsort(arrays[f"{split}_labels"], kind="stable")   # the JPEG copy's order: class by class
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = arrays[f"{split}_images"][order], arrays[f"{split}_labels"][order]
        for n, (image, label) in enumerate(zip(arrays[f"{split}_images"], arrays[f"{split}_labels"])):
          buf = io.BytesIO()
          Image.fromarray(image).save(buf, format="JPEG", quality=95)
          add(tar, f"{split}/{CIFAR10_CLASSES[label]}/{n:04d}.jpg", buf.getvalue())
  return arrays


@pytest.fixture
def fake_data(tmp_path):
  """(raw data dir, TFDS cache dir, arrays) of a tiny fake Fashion-MNIST."""
  arrays = make_raw_folder(tmp_path / "raw")
  return tmp_path / "raw", tmp_path / "tfds", arrays


def local_source_missing(name: str) -> str | None:
  """None if data set `name` is on this machine (JAXTRICKS_DATA or a system folder), else why not."""
  source = {**builders.BUILDERS, **text.TEXT_BUILDERS}[name].SOURCE
  roots = [Path(os.environ["JAXTRICKS_DATA"]) / s for s in source.subdirs] if os.environ.get("JAXTRICKS_DATA") else []
  for folder in roots + [Path(d) for d in source.system_dirs]:
    if any(all((folder / f).is_file() for f in files.values()) for files in (source.files, *source.alternatives)):
      return None
  return (f"no local copy of {name} (set JAXTRICKS_DATA to a folder holding it"
          + (", apt-get install -y dataset-fashion-mnist" if name == "fashion_mnist" else "") + ")")


def require_real_data(name: str):
  reason = local_source_missing(name)
  if reason:
    pytest.skip(reason)
