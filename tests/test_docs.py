"""The documents a reader follows, checked as a reader would use them.

- README stays a landing page (<= 250 lines) and each of its Python blocks runs as printed, with a check of what it
  computed.
- Every command any document shows (fenced shell blocks and inline `python -m ...` / `make ...`) is run: its
  program's own parser reads the whole command line (a misspelt flag or a bad value fails here), README's program
  commands also train for real at tiny sizes (OVERRIDES), `make` targets exist (`make -n`), shell scripts parse
  (`bash -n`); the few commands that cannot run here are listed by name in NOT_HERE, with the reason.
- `--help` of every program exits 0; every command pastes into bash; no document names a path of one machine.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_real_data

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md")),
        *sorted((REPO / "benchmarks").rglob("*.md"))]
HISTORY = {"CHANGELOG.md"}   # its commands are records of what ran at their date (old module paths included)
PYTHONS = {"python", "python3", ".venv/bin/python", "PY"}
# commands that cannot run on this machine or in a test, and why (matched as the start of the command)
NOT_HERE = {
    "tensorboard": "TensorBoard is not a dependency (pip install tensorboard)",
    "make test": "the test suite itself",
    "make PYTHON=python3.11 test": "the test suite itself, with another interpreter",
    "make upgrade": "needs the package registry, and moves the lock on purpose",
    "make train": "the 4-minute main job; README's copy of it runs at tiny size through OVERRIDES",
    "make bench": "minutes of timing; benchmarks' own tests run its module",
    "make setup": "pip installs; every test run has done it",
    "make lint": "ruff over the tree; .ci/run runs it",
    "pip install": "installs packages",
    ".venv/bin/pip": "installs packages",
    "python3 -m pip": "installs packages",
    "python -m pytest": "the test suite itself",
    "apt-get": "installs packages",
    "git": "a repository operation",
    "bash benchmarks/tools/device_bundle.sh": "packs wheels for the GPU machine",
    "python -m pytorch_fid": "third-party (pytorch-fid): not a dependency, needs Inception weights from the internet",
    "fidelity": "third-party (torch-fidelity): not a dependency, needs Inception weights from the internet",
}


def _doc_text(path: Path) -> str:
  return path.read_text(encoding="utf-8")


def _commands(text: str) -> list[str]:
  """Shell commands of a Markdown text: each line of a ```bash block (continuations joined, comments cut) and
  each inline code span that starts with a python or make invocation."""
  out = []
  for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, re.S):
    for line in block.replace("\\\n", " ").splitlines():
      line = re.split(r"\s+#", line)[0].strip()
      if line and not line.startswith("#"):
        out.append(line)
  prose = re.sub(r"```.*?```", "", text, flags=re.S)
  for span in re.findall(r"`([^`]+)`", prose):
    span = " ".join(span.split())
    words = span.split()
    i = next((j for j, w in enumerate(words) if "=" not in w), len(words))
    if words[i:i + 2] and (words[i] == "make" or (words[i] in PYTHONS and words[i + 1:i + 2] == ["-m"])):
      out.append(span)
  return out


def _all_commands() -> list[tuple[str, str]]:
  """(document, command) of every document a reader follows today (the changelog's records excluded)."""
  return [(str(p.relative_to(REPO)), c) for p in DOCS if p.exists() and p.name not in HISTORY
          for c in _commands(_doc_text(p))]


def _split(command: str) -> tuple[dict[str, str], list[str]]:
  """(environment assignments, words) of one documented command."""
  words = shlex.split(command)
  env = {}
  while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
    k, v = words.pop(0).split("=", 1)
    env[k] = v
  return env, words


def _python_module(words: list[str]) -> tuple[str, list[str]] | None:
  if len(words) >= 3 and words[0] in PYTHONS and words[1] == "-m":
    return words[2], words[3:]
  return None


def _not_here(command: str) -> str | None:
  _, words = _split(command)
  text = " ".join(words)
  return next((why for start, why in NOT_HERE.items() if text.startswith(start)), None)


def _programs() -> list[str]:
  """Every module a user runs with python -m: train/* with a main, and benchmarks with a __main__ guard."""
  mods = [f"train.{p.stem}" for p in sorted((REPO / "train").glob("*.py")) if "def main" in p.read_text()]
  for p in sorted((REPO / "benchmarks").rglob("*.py")):
    if '__name__ == "__main__"' in p.read_text():
      mods.append(".".join(p.relative_to(REPO).with_suffix("").parts))
  return mods


def test_readme_is_a_landing_page():
  lines = _doc_text(REPO / "README.md").splitlines()
  assert len(lines) <= 250, f"README.md has {len(lines)} lines; move details into docs/"
  for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", "\n".join(lines)):
    if "://" not in link:
      assert (REPO / link).exists(), f"README links to {link}, which does not exist"


# What each README block must have computed (by the order of the techniques); a block that runs but computes
# nonsense fails here.
def _check_margin(ns):
  import jax
  first = ns["loss_fn"](ns["model"].init(jax.random.key(1), ns["x_BD"]))
  assert float(ns["loss_fn"](ns["params"])) < 0.5 * float(first), "100 Adam steps should halve the loss"


def _check_gan(ns):
  import jax
  assert set(ns["params"]) == {"G", "D"} and all(bool(jax.numpy.isfinite(v).all())
                                                 for v in jax.tree.leaves(ns["params"]))
  assert set(ns["metrics"]) >= {"d_loss", "g_loss"}


def _check_ebm(ns):
  assert int(ns["buffer"].count) == 3 * 32, "three steps push 3 x 32 chains into the buffer"


def _check_mobilenet(ns):
  import numpy as np
  assert ns["logits_BK"].shape == (8, 10) and ns["log_p_BK"].shape == (8, 10)
  np.testing.assert_allclose(np.exp(ns["log_p_BK"]).sum(-1), 1.0, rtol=1e-5)


def _check_exact(ns):
  import numpy as np
  assert ns["loss_B"].shape == (16,) and np.all((-1 <= ns["loss_B"]) & (ns["loss_B"] <= 0))
  assert ns["grads_BC"].shape == (16, 10) and np.isfinite(ns["grads_BC"]).all()


README_CHECKS = [_check_margin, _check_gan, _check_ebm, _check_mobilenet, _check_exact]


def _readme_blocks() -> list[str]:
  return re.findall(r"```python\n(.*?)```", _doc_text(REPO / "README.md"), re.S)


def test_readme_has_one_block_per_technique():
  assert len(_readme_blocks()) == len(README_CHECKS)


@pytest.mark.parametrize("index", range(len(README_CHECKS)))
def test_readme_python_block_runs(index):
  namespace = {"__name__": f"readme_block_{index}"}
  exec(compile(_readme_blocks()[index], f"README.md python block {index}", "exec"), namespace)
  README_CHECKS[index](namespace)


def test_every_command_pastes_into_bash():
  for doc, command in _all_commands():
    try:
      lex = shlex.shlex(command, posix=True, punctuation_chars=True)
      tokens = list(lex)
    except ValueError as e:
      pytest.fail(f"{doc}: `{command}` does not parse as a shell command ({e})")
    bad = [t for t in tokens if t in {";", "(", ")", "<", ">", "|"}]
    assert not bad, f"{doc}: `{command}` has unquoted {bad}: quote it (shlex.join) so it pastes into bash"


LOCAL_PATH = re.compile(r"(?<![\w.])(/work/|/root/|/home/|/tmp/|/opt/|/mnt/|/data/|\.\./shared|\.pyenv/|/site-packages)")


def test_no_document_names_a_path_of_one_machine():
  for path in DOCS:
    if not path.exists():
      continue
    for n, line in enumerate(_doc_text(path).splitlines(), 1):
      m = LOCAL_PATH.search(line)
      assert not m, f"{path.relative_to(REPO)}:{n} names {m.group(1)!r}, a path of one machine: {line.strip()[:120]}"


_CHILD = r"""
import argparse, contextlib, importlib, inspect, io, json, sys
from jaxtricks import cli

class Parsed(Exception):
  pass

real_parse_args = argparse.ArgumentParser.parse_args
def parse_then_stop(self, args=None, namespace=None):
  real_parse_args(self, args, namespace)
  raise Parsed()

def parse_only(config_cls, run, argv=None, prog=None, flags=None, recipes=None):
  cli.parse(config_cls, argv, prog, recipes)   # the flags, then the config's own checks; nothing runs
  raise Parsed()

def call_main(m, argv):
  if inspect.signature(m.main).parameters:
    return m.main(argv)
  sys.argv = [m.__name__, *argv]
  return m.main()

def outcome(fn):
  err = io.StringIO()
  try:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
      fn()
  except Parsed:
    return "ok"
  except SystemExit as e:
    return "ok" if e.code in (0, None) else f"exit {e.code}: {err.getvalue().strip()[-300:]}"
  except Exception as e:
    return f"{type(e).__name__}: {cli.message(e) if isinstance(e, cli.JaxtricksError) else e}"
  return "ok"

report = {"help": {}, "parse": []}
jobs = json.load(sys.stdin)
for mod in jobs["help"]:
  report["help"][mod] = outcome(lambda: call_main(importlib.import_module(mod), ["--help"]))
cli.main = parse_only                                    # train.*: the whole config, its own checks included
argparse.ArgumentParser.parse_args = parse_then_stop     # benchmarks: their argparse parser
for mod, argv in jobs["parse"]:
  try:
    m = importlib.import_module(mod)
  except ImportError as e:
    report["parse"].append(f"no such program: {e}")
    continue
  report["parse"].append(outcome(lambda: call_main(m, argv)))
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def parsed():
  """One child process reads every documented python -m command with its program's parser, and asks every
  program for --help."""
  jobs = []
  for doc, command in _all_commands():
    if _not_here(command) or "..." in command:
      continue
    _, words = _split(command)
    target = _python_module(words)
    if target and target[0] == target[0].lower():   # not a placeholder such as train.NAME
      jobs.append((doc, command, target))
  payload = {"help": _programs(), "parse": [list(t) for _, _, t in jobs]}
  p = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(payload), cwd=REPO, capture_output=True,
                     text=True, timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert p.returncode == 0, p.stderr[-3000:]
  report = json.loads(p.stdout.strip().splitlines()[-1])
  return report, jobs


def test_every_program_help_exits_0(parsed):
  report, _ = parsed
  assert len(report["help"]) >= 20
  bad = {m: r for m, r in report["help"].items() if r != "ok"}
  assert not bad, f"--help fails: {bad}"


def test_every_documented_command_parses(parsed):
  report, jobs = parsed
  assert len(jobs) >= 30, "the documents show more commands than were found: is the extraction broken?"
  bad = [f"{doc}: `{command}` -> {r}" for (doc, command, _), r in zip(jobs, report["parse"]) if r != "ok"]
  assert not bad, "documented commands that their program refuses:\n" + "\n".join(bad)


def test_every_other_documented_command_is_known():
  """What is not a python -m command: a make target that exists, a script that bash parses, or NOT_HERE."""
  for doc, command in _all_commands():
    if _not_here(command) or "..." in command:
      continue
    env, words = _split(command)
    if _python_module(words):
      continue
    if words[0] == "make":
      targets = [w for w in words[1:] if "=" not in w] or ["train"]
      r = subprocess.run(["make", "-n", *targets], cwd=REPO, capture_output=True, text=True, timeout=60)
      assert r.returncode == 0, f"{doc}: `{command}`: {r.stderr.strip()}"
    elif words[0] == "bash" and words[1].endswith(".sh"):
      assert (REPO / words[1]).exists(), f"{doc}: `{command}`: no {words[1]}"
      r = subprocess.run(["bash", "-n", words[1]], cwd=REPO, capture_output=True, text=True, timeout=60)
      assert r.returncode == 0, f"{doc}: `{command}`: {r.stderr.strip()}"
    else:
      pytest.fail(f"{doc}: `{command}` is neither run by this test nor listed in NOT_HERE")


# README's program commands, run for real at tiny sizes: the words each gets appended ({raw}: a tiny fake
# Fashion-MNIST folder) and its workdir moved into the test's folder. `make train` runs the Makefile's train line.
SHRINK = {   # train.ebm, make train's program, runs at tiny size in tests/test_train_ebm.py (its TINY flags)
    "train.classify": ["--data-dir", "{raw}", "--steps", "2", "--batch-size", "16", "--width", "0.25",
                       "--no-progress", "--depthwise", "conv"],   # (MobileNet's other form of the same network:
                                                                  # half the CPU compile; tests/test_mobilenet.py)
    "train.gan": ["--data-dir", "{raw}", "--fid-samples", "64", "--no-progress"],   # a pretrained model's eval
}


def _readme_program_commands() -> list[list[str]]:
  out = []
  for command in _commands(_doc_text(REPO / "README.md")):
    _, words = _split(command)
    if words[:2] == ["make", "train"]:
      dry = subprocess.run(["make", "-n", "train"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
      (line,) = [l for l in dry.splitlines() if " -m train." in l]
      words = ["python", *shlex.split(line)[1:]]
    target = _python_module(words)
    if target and target[0].startswith("train.") and words not in out:
      out.append(words)
  return out


@pytest.mark.slow
def test_readme_program_commands_run_at_tiny_size(tmp_path):
  from tests.conftest import child_env, make_raw_folder, run_modules
  make_raw_folder(tmp_path / "raw")
  env = child_env(TFDS_DATA_DIR=str(tmp_path / "tfds"), JAXTRICKS_OFFLINE="1")
  env.pop("JAXTRICKS_DATA", None)
  commands = _readme_program_commands()
  assert {c[2] for c in commands} == set(SHRINK) | {"train.ebm"}, "a README program command without a SHRINK entry"
  shrunk = []
  for words in (c for c in commands if c[2] in SHRINK):
    module, argv = words[2], words[3:]
    argv = [str(tmp_path / a) if prev == "--workdir" else a for prev, a in zip([None, *argv], argv)]
    for prev, a in zip([None, *words[3:]], words[3:]):   # a pretrained model's folder: a copy of it (eval.json)
      if prev == "--workdir" and a.startswith("benchmarks/pretrained/") and not (tmp_path / a).exists():
        shutil.copytree(REPO / a, tmp_path / a)
    shrunk.append([module, *argv, *(w.format(raw=tmp_path / "raw") for w in SHRINK[module])])
  codes, stderr = run_modules(shrunk, env, timeout=600)   # in turn, in one Python, as `python -m` runs each
  assert codes == [0] * len(shrunk), f"README's commands at tiny size, exit statuses {codes}: {stderr[-2000:]}"
  for module, *argv in shrunk:
    workdir = Path(argv[argv.index("--workdir") + 1])
    if "--eval-only" in argv and module == "train.gan":
      assert json.loads((workdir / "eval.json").read_text())["fid_fmnist_ema_samples"] == 64
    elif "--eval-only" in argv:
      assert {"test/accuracy", "test/accuracy_flips"} <= set(json.loads((workdir / "eval.json").read_text()))
    else:
      assert (workdir / "metrics.jsonl").exists() and (workdir / "checkpoints").is_dir()


WALKTHROUGH_SIZES = "STEPS, BATCH, SAMPLES = 1000, 128, 500"


@pytest.mark.realdata
def test_ebm_walkthrough_runs(tmp_path):
  """docs/ebm_walkthrough.md's blocks, one after another as one script, at the size its text says the test uses:
  the loop trains (finite loss, the buffer holds every step's chains), the fresh chains moved from their noise and
  stay in the data range, the grids are written. The script runs as a reader's session would, in its own Python
  (at XLA level 1, RUN_XLA_FLAGS: its 256-step chains run 2.6x slower at the suite's level 0)."""
  import numpy as np
  from conftest import RUN_XLA_FLAGS, child_env
  require_real_data("fashion_mnist")   # the walkthrough reads the real data set, as a reader's session would
  text = _doc_text(REPO / "docs" / "ebm_walkthrough.md")
  assert WALKTHROUGH_SIZES in text and "STEPS, BATCH, SAMPLES = 3, 16, 16" in text
  code = "\n".join(re.findall(r"```python\n(.*?)```", text, re.S)).replace(WALKTHROUGH_SIZES,
                                                                          "STEPS, BATCH, SAMPLES = 3, 16, 16")
  check = ("\nimport numpy\nnumpy.savez('checked.npz', count=int(buffer.count), loss=float(loss), fresh=numpy.asarray("
           "from_noise), noise=numpy.asarray(replay.uniform_noise(jax.random.key(3), (16, 28, 28, 1))))\n")
  (tmp_path / "ebm_walkthrough.py").write_text(code + check)
  p = subprocess.run([sys.executable, "ebm_walkthrough.py"], cwd=tmp_path, env=child_env(XLA_FLAGS=RUN_XLA_FLAGS),
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  ns = np.load(tmp_path / "checked.npz")
  assert int(ns["count"]) == 3 * 16 and np.isfinite(float(ns["loss"]))
  fresh, noise = ns["fresh"], ns["noise"]
  assert fresh.shape == (16, 28, 28, 1) and 0 <= fresh.min() and fresh.max() <= 1
  assert np.abs(fresh - noise).mean() > 1e-3            # 256 Langevin steps moved the chains
  assert (tmp_path / "walkthrough_buffer.png").stat().st_size > 0 and (tmp_path / "walkthrough_fresh.png").exists()
