"""SIGKILL at a random step, or while a checkpoint is being written, then resume: the classifier, the GAN and the
EBM end with the same state as an uninterrupted run, and no half-written checkpoint is ever taken for a step. The
same for the classifier stopped by SIGTERM (preemption), bit for bit."""

import random
import signal
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
from conftest import EBM_PLAIN, REPO, child_env, make_raw_folder

from jaxtricks import checkpoints

STEPS, EVERY = 12, 4
ARGS = {
    "classify": ["--model", "cnn", "--batch-size", "16"],
    "gan": ["--batch-size", "16", "--width", "8", "--z-dim", "8", "--fid-samples", "64", "--sample-every", "100",
            "--fid-every", "100"],
    # the chain as a lax.scan (--unroll 1), quicker to compile; the unrolled CPU default computes the same chain
    # (tests/test_langevin.py::test_trace_and_unroll), and the loop's checkpoints do not depend on how it compiles
    "ebm": ["--batch-size", "16", "--channels", "4", "--langevin-steps", "3", "--fresh-steps", "3", "--unroll", "1",
            "--buffer-size", "64", "--fid-samples", "32", "--sample-every", "100", "--fid-every", "100",
            *EBM_PLAIN],
}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
  root = tmp_path_factory.mktemp("faults")
  make_raw_folder(root / "raw")
  return root


def _run(module, raw, workdir, killer=None):
  env = child_env(TFDS_DATA_DIR=str(raw / "tfds"), JAXTRICKS_OFFLINE="1")
  env.pop("JAXTRICKS_DATA", None)
  cmd = [sys.executable] + (["tests/killed_run.py", module, killer] if killer else ["-m", f"train.{module}"])
  args = ["--data-dir", str(raw / "raw"), "--steps", str(STEPS), "--checkpoint-every", str(EVERY), "--workdir",
          str(workdir), "--no-progress", *ARGS[module]]
  return subprocess.run(cmd + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _state(workdir, step):   # on this process's device, whatever devices the run was split over
  state, key, _ = checkpoints.restore(workdir, step=step)
  return {"state": state, "key": key}


_STRAIGHT = {}


def _straight(module, raw):
  """One uninterrupted run per trainer, made on first use and shared by its kill tests."""
  if module not in _STRAIGHT:
    r = _run(module, raw, raw / f"straight-{module}")
    assert r.returncode == 0, r.stderr[-2000:]
    _STRAIGHT[module] = _state(raw / f"straight-{module}", STEPS)
  return _STRAIGHT[module]


# A kill inside a step for the classifier and the GAN (EMA, two optimizers); a kill inside a save (orbax's write and
# the loop's bookkeeping, the same code for every trainer) for the EBM, whose state is the largest (the replay
# buffer): its resumed run restarts from the checkpoint before the killed save, or from the start when that was the
# first (the EBM's resume from a mid-run checkpoint is also tests/multidevice's). The other kills (the classifier's
# and GAN's saves, the EBM's step) took 40 s of the suite for no other code: a kill lands in the loop, which is one
# for every trainer, and each trainer's own state is resumed here.
KILLS = [("classify", "step"), ("gan", "step"), ("ebm", "save")]


@pytest.mark.xdist_group("faults")   # one worker: the uninterrupted runs are made once
@pytest.mark.parametrize("module, when", KILLS)
def test_sigkill_then_resume_equals_uninterrupted(module, when, raw, tmp_path):
  rng = random.Random()
  k = rng.randrange(1, STEPS) if when == "step" else rng.choice(range(EVERY, STEPS, EVERY))
  killer = str(k) if when == "step" else f"save:{k}"
  killed = _run(module, raw, tmp_path / "w", killer)
  assert killed.returncode == -9, (killer, killed.stderr[-2000:])
  steps = checkpoints.steps(tmp_path / "w")
  assert all(s % EVERY == 0 and s <= k for s in steps), (killer, steps)
  for s in steps:   # every checkpoint that orbax lists as a step is whole: it restores
    _state(tmp_path / "w", s)
  resumed = _run(module, raw, tmp_path / "w")
  assert resumed.returncode == 0, (killer, resumed.stderr[-2000:])
  straight = _straight(module, raw)
  chex.assert_trees_all_close(straight, _state(tmp_path / "w", STEPS), rtol=1e-6, atol=1e-6,
                              custom_message=f"killed at {killer}")
  # and training moves the params: the comparison is not of two copies of one unchanging state
  before = jax.tree.leaves(_state(raw / f"straight-{module}", STEPS - EVERY)["state"]["params"])
  after = jax.tree.leaves(straight["state"]["params"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


@pytest.mark.xdist_group("faults")
@pytest.mark.parametrize("name", ["sigterm"])   # SIGHUP saves and exits by the same handler: test_reliability's
def test_preemption_then_resume_equals_uninterrupted(name, raw, tmp_path):  # preemption row checks it (10 s less)
  """SIGTERM (preemption) after a random step k: step k + 1 is saved, the program exits 128 + the signal, and the
  resumed run ends with the uninterrupted run's state, bit for bit."""
  k = random.Random().randrange(1, STEPS - 1)
  stopped = _run("classify", raw, tmp_path / "w", f"{name}:{k}")
  assert stopped.returncode == 128 + getattr(signal, name.upper()), (k, stopped.stderr[-2000:])
  assert checkpoints.steps(tmp_path / "w")[-1] == k + 1
  resumed = _run("classify", raw, tmp_path / "w")
  assert resumed.returncode == 0, (k, resumed.stderr[-2000:])
  chex.assert_trees_all_equal(_straight("classify", raw), _state(tmp_path / "w", STEPS),
                              custom_message=f"{name} after step {k}")
