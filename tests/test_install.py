"""Installs that reproduce: requirements.lock against pyproject.toml's ranges, and the wheel a researcher adds to
their own project (the library alone, with its assets) installed into a fresh environment and used."""

import json
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _lock() -> dict[str, str]:
  pins = {}
  for n, line in enumerate((REPO / "requirements.lock").read_text().splitlines(), 1):
    if not line.strip() or line.startswith("#"):
      continue
    name, sep, version = line.partition("==")
    assert sep and version and " " not in line, f"requirements.lock:{n}: {line!r} is not an exact pin name==version"
    pins[canonicalize_name(name)] = version
  return pins


def test_lock_pins_every_dependency_inside_pyproject_ranges():
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  pins = _lock()
  wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
  assert len(wanted) >= 15
  for req in wanted:
    name = canonicalize_name(req.name)
    assert name in pins, f"{req.name} is a dependency but requirements.lock does not pin it (make upgrade)"
    assert req.specifier.contains(pins[name], prereleases=True), \
        f"requirements.lock pins {req.name}=={pins[name]}, outside pyproject.toml's {req.name}{req.specifier}"
  assert pins["jax"] == pins["jaxlib"], "jax and jaxlib are released together"


def test_the_installed_versions_are_the_locked_ones():
  """Where the Makefile installed with the lock (Python 3.12), what runs is what the lock says."""
  if sys.version_info[:2] != (3, 12):
    pytest.skip("the lock is for Python 3.12; the Makefile installs pyproject.toml's ranges here and says so")
  from importlib.metadata import version
  pins = _lock()
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "chex", "tensorstore"):
    assert version(name) == pins[canonicalize_name(name)], f"{name} {version(name)} installed, lock: {pins[name]}"


_USE = r"""
import importlib.util, json, sys
import jax, jax.numpy as jnp, numpy as np
from jaxtricks import langevin, losses, metrics
assert importlib.util.find_spec("train") is None and importlib.util.find_spec("benchmarks") is None
loss = losses.margin_softmax_cross_entropy(jnp.array([[3.0, 0.0], [0.0, 0.1]]), jnp.array([0, 0]), margin=0.9)
x = langevin.langevin_chain(lambda x: (x ** 2).sum(axis=-1), jnp.ones((4, 2)), jax.random.key(0), num_steps=5,
                            step_size=0.01, data_range=None)
rng = np.random.default_rng(0)
a, b = (rng.integers(0, 256, (300, 28, 28, 1), dtype=np.uint8) for _ in range(2))
fid = metrics.fid_against(b)(a)
print(json.dumps({"file": __import__("jaxtricks").__file__, "loss": np.asarray(loss).tolist(),
                  "chain_finite": bool(jnp.isfinite(x).all()), "fid": float(fid)}))
"""


@pytest.mark.slow
def test_wheel_installs_the_library_alone_and_works(tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  for f in ("pyproject.toml", "README.md"):
    shutil.copy(REPO / f, src / f)
  for d in ("jaxtricks", "train", "benchmarks"):   # the packages a clone has: only the library may go in the wheel
    shutil.copytree(REPO / d, src / d, ignore=shutil.ignore_patterns("__pycache__"))
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                  str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
  (wheel,) = (tmp_path / "dist").glob("jaxtricks-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  assert {n.split("/")[0] for n in names} == {"jaxtricks", wheel.name.split("-")[0] + "-" +
                                             wheel.name.split("-")[1] + ".dist-info"}, sorted(names)[:20]
  for asset in ("feature_net_fmnist.msgpack", "feature_net_cifar10.msgpack", "feature_net_fmnist.json"):
    assert f"jaxtricks/assets/{asset}" in names
  assert "jaxtricks/data/checksums.tsv" in names

  # a fresh environment whose only jaxtricks is the wheel; its dependencies come from this one's site-packages
  env = tmp_path / "env"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
  env_python = env / "bin" / "python"
  env_site = Path(subprocess.run([env_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip())
  (env_site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
  subprocess.run([sys.executable, "-m", "pip", "--python", str(env_python), "install", "-q", "--no-deps",
                  "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
  out = subprocess.run([env_python, "-c", _USE], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu", "HOME": str(tmp_path)})
  assert out.returncode == 0, out.stderr[-3000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  assert got["file"].startswith(str(env_site)), got["file"]
  assert got["loss"][0] == 0.0 and got["loss"][1] > 0     # the first example is past the margin
  assert got["chain_finite"] and 0 < got["fid"] < 1e4
