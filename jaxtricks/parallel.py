"""Data parallelism on JAX's own machinery: a `Mesh` with one 'data' axis over the devices.

    mesh = parallel.make_mesh(config.devices, batch_size=config.batch_size)   # "all" visible devices, or a count
    batches = pipeline.DeviceBatches(data, batch_size=..., key=..., mesh=mesh)  # each device gathers its rows
    step = parallel.jit_step(train_step, mesh)                                  # params replicated, batch sharded

Batches are sharded along 'data' (dimension 0); params, optimizer state and the PRNG key are replicated; XLA's
partitioner inserts the all-reduce of the gradients (and of BatchNorm's batch statistics), so a step on N devices
computes what it computes on one, with the same global batch. Random numbers do not depend on the sharding
(JAX's partitionable threefry is on by default), so a run on 4 devices equals the run on 1 up to float summation
order (tests/multidevice/).

Multi-host: `initialize_from_env()` (called by every `train.*` program before anything else) runs
`jax.distributed.initialize()` when JAX_COORDINATOR_ADDRESS is set (with JAX_NUM_PROCESSES and JAX_PROCESS_ID),
or with cluster auto-detection (SLURM, Open MPI, Cloud TPU) when JAXTRICKS_DISTRIBUTED=1. The mesh then spans
every process's devices; each process's devices gather only their own rows of each global batch.
"""

import os
from pathlib import Path
from typing import Literal

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtricks.errors import ConfigError

DATA = "data"


def initialize_from_env() -> bool:
  """jax.distributed.initialize() when the environment describes a multi-process job; True if it ran."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    kwargs = {k: int(os.environ[v]) for k, v in (("num_processes", "JAX_NUM_PROCESSES"),
                                                  ("process_id", "JAX_PROCESS_ID")) if os.environ.get(v)}
    jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], **kwargs)
    return True
  if os.environ.get("JAXTRICKS_DISTRIBUTED") == "1":
    jax.distributed.initialize()
    return True
  return False


def cpu_cores() -> int:
  """The cores this process may run on."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_bf16_units(cpuinfo: str | None = None) -> str | None:
  """The bfloat16 matrix units of this CPU that XLA:CPU's dots reach, from the x86 flags of /proc/cpuinfo (or of
  `cpuinfo`'s text): "amx" (amx_bf16: Intel Sapphire Rapids and later), "avx512_bf16" (e.g. AMD Zen 4/5), or None
  (none, or not readable: not Linux)."""
  if cpuinfo is None:
    try:
      cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
      return None
  flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
  return "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else None


def user_chose_cpu_devices() -> bool:
  """True if the environment already says how many XLA devices to make of the CPU (JAX_NUM_CPU_DEVICES, or
  XLA_FLAGS' --xla_force_host_platform_device_count): a program's own choice then stands aside."""
  return (jax.config.jax_num_cpu_devices != -1
          or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""))


def set_cpu_devices(count: int) -> int:
  """Makes the CPU `count` XLA devices (jax_num_cpu_devices) when JAX runs on it: the 'data' mesh then splits
  each batch over them, one share per core, which on small convolution nets beats XLA's threading of each op
  (benchmarks/speed/README.md, "One XLA device per core"). Leaves things as they are where the user chose
  (`user_chose_cpu_devices`) or JAX has already started its backends (a second program in one process).
  Returns the count set, or 0 when it left things alone. On a GPU or TPU the CPU devices go unused."""
  from jax._src import xla_bridge
  if count < 1 or user_chose_cpu_devices() or xla_bridge.backends_are_initialized():
    return 0
  jax.config.update("jax_num_cpu_devices", count)
  return count


def make_mesh(num_devices: int | Literal["all"] = "all", *, batch_size: int | None = None) -> Mesh:
  """A 1-D mesh ('data',) over the first `num_devices` devices ("all": every visible one); the batch must divide
  evenly. Errors name the settings `devices` and `batch_size` (jaxtricks.errors)."""
  devices = jax.devices()
  if num_devices != "all" and not 1 <= num_devices <= len(devices):
    raise ConfigError("devices", f"{num_devices}: {len(devices)} device(s) visible; use all, or 1 to {len(devices)}")
  if num_devices != "all" and jax.process_count() > 1 and num_devices != len(devices):
    raise ConfigError("devices", f"{num_devices}: a multi-process run uses all {len(devices)} devices; use all")
  devices = devices if num_devices == "all" else devices[:num_devices]
  if batch_size is not None and batch_size % len(devices):
    raise ConfigError("batch_size", f"{batch_size} does not divide by the {len(devices)} devices; "
                      f"use a multiple of {len(devices)} (or {{devices}})")
  return Mesh(np.asarray(devices), (DATA,))


def sharded(mesh: Mesh) -> NamedSharding:
  """Dimension 0 split along 'data' (batches, chains, the replay buffer)."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device (params, optimizer state, keys)."""
  return NamedSharding(mesh, P())


def jit_step(step_fn, mesh: Mesh, state_sharding=None, *, compiler_options: dict | None = None):
  """jit of `step_fn(state, batch, key) -> (state, metrics)`: state as `state_sharding` (default replicated;
  a pytree prefix of shardings), the batch sharded along 'data', key and metrics replicated; state donated;
  `compiler_options`: XLA options for its compile (e.g. `cpu_compiler_options`'s)."""
  state_sharding = replicated(mesh) if state_sharding is None else state_sharding
  options = {"compiler_options": compiler_options} if compiler_options else {}   # (not every jax >= 0.4.30 has the arg)
  return jax.jit(step_fn, in_shardings=(state_sharding, sharded(mesh), replicated(mesh)),
                 out_shardings=(state_sharding, replicated(mesh)), donate_argnums=0, **options)


# XLA:CPU (jaxlib >= 0.12) hands convolutions and dots to YNNPACK by default; this list keeps only the dots.
_YNN_FUSION_TYPE = "xla_cpu_experimental_ynn_fusion_type"
_YNN_DOTS_ONLY = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"


def cpu_compiler_options(*, ynn_convolutions: bool = True) -> dict | None:
  """XLA compile options for a step on the CPU: None (XLA's defaults) unless `ynn_convolutions` is False, then
  the option that leaves convolutions to XLA's own kernels instead of YNNPACK's (dots stay with YNNPACK) — 1.1-1.2x
  faster for the DCGAN step on an AVX-512 host (benchmarks/speed/README.md, "YNNPACK convolutions"). None as well on
  a GPU/TPU, and where this jaxlib has no such option (it is experimental: older and newer ones may not)."""
  if ynn_convolutions or jax.default_backend() != "cpu":
    return None
  options = {_YNN_FUSION_TYPE: _YNN_DOTS_ONLY}
  try:
    jax.jit(lambda x: x + 1).lower(np.zeros(1, np.float32)).compile(options)
  except Exception:   # an option unknown to this jaxlib: its compile refuses it
    return None
  return options

