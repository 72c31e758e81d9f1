"""The CPU layout a program picks for itself (issue 18): --cpu-devices N or per_core (one XLA device per core),
lowered until the batch divides; the user's JAX_NUM_CPU_DEVICES / XLA_FLAGS win; nothing changes once JAX has
started. The old spelling `--cpu-devices 0` still means per_core, with a deprecation line."""

import dataclasses
import os
import subprocess
import sys

import pytest
from conftest import child_env

from jaxtricks import harness, parallel
from jaxtricks.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class _Config(harness.BaseConfig):
  batch_size: int = 64


@pytest.mark.parametrize("cpu_devices, cores, batch, expected", [
    ("per_core", 4, 64, 4), ("per_core", 4, 30, 3), ("per_core", 2, 7, 1), (1, 4, 64, 1), (3, 4, 64, 2),
    (2, 2, 64, 2)])
def test_cpu_device_count_is_the_asked_count_lowered_until_the_batch_divides(monkeypatch, cpu_devices, cores, batch,
                                                                               expected):
  monkeypatch.setattr(parallel, "cpu_cores", lambda: cores)
  assert _Config(cpu_devices=cpu_devices, batch_size=batch).cpu_device_count() == expected


@pytest.mark.parametrize("bad", [-1, 0])
def test_cpu_devices_below_one_is_refused(bad):
  with pytest.raises(ConfigError, match="cpu_devices must be per_core or >= 1"):
    _Config(cpu_devices=bad)


_CHILD = """
import dataclasses, sys
from typing import Literal
import jax
from jaxtricks import cli, harness

@dataclasses.dataclass(frozen=True)
class Config(harness.BaseConfig):
  batch_size: int = 64
  cpu_devices: int | Literal["per_core"] = "per_core"   # this program's default: one device per core

sys.exit(cli.main(Config, lambda c: print("DEVICES", jax.device_count()), argv=sys.argv[1:]))
"""


def _devices(*argv, stderr: list | None = None, **env) -> int:
  base = child_env(**env)
  for name in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS"):
    if name not in env:
      base.pop(name, None)
  out = subprocess.run([sys.executable, "-c", _CHILD, *argv], env={**base, "JAX_PLATFORMS": "cpu"},
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  if stderr is not None:
    stderr.extend(out.stderr.splitlines())
  return int(out.stdout.split("DEVICES")[1])


def test_a_program_makes_the_cpu_its_default_layout_and_the_user_setting_wins():
  cores = len(os.sched_getaffinity(0))
  assert _devices() == cores                                     # the program's default: one per core
  assert _devices("--cpu-devices", "1") == 1                     # its flag
  err = []
  assert _devices("--cpu-devices", "0", stderr=err) == cores      # the old spelling of per_core
  assert [l for l in err if "deprecated" in l] == [
      "-c: warning: --cpu-devices 0 is deprecated: use --cpu-devices per_core (the old spelling goes in the next "
      "release)"], err
  assert _devices("--batch-size", "7") == (7 if cores >= 7 else 1)   # lowered until the batch divides
  assert _devices(JAX_NUM_CPU_DEVICES="3") == 3                  # the user's environment wins
  assert _devices(XLA_FLAGS="--xla_force_host_platform_device_count=3") == 3


def test_set_cpu_devices_leaves_a_started_jax_alone():
  import jax
  jax.devices()   # this process's JAX has started (conftest pinned it to one device)
  assert parallel.set_cpu_devices(4) == 0 and jax.device_count() == 1



def _conv(options):
  """(compiled HLO text, output) of a 3x3 convolution jitted with these XLA options."""
  import jax
  import jax.numpy as jnp
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  x, w = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 32)), jnp.ones((3, 3, 32, 32)) / 32   # YNNPACK-sized
  jitted = jax.jit(conv, compiler_options=options)
  return jitted.lower(x, w).compile().as_text(), jitted(x, w)


def test_cpu_compiler_options_take_convolutions_from_ynnpack_and_keep_the_result():
  import numpy as np
  assert parallel.cpu_compiler_options(ynn_convolutions=True) is None   # XLA's defaults
  options = parallel.cpu_compiler_options(ynn_convolutions=False)
  default_hlo, expected = _conv(None)
  if options is None:   # this jaxlib has no such option: then it has no YNNPACK convolutions to turn off either
    assert "ynn" not in default_hlo
    return
  assert "__ynn_fusion" in default_hlo   # jaxlib 0.12's default: the convolution goes to YNNPACK
  hlo, out = _conv(options)
  assert "__ynn_fusion" not in hlo and "convolution(" in hlo
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
