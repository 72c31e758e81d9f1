"""The pretrained models (benchmarks/pretrained/): the slim form evaluates to what the run's own checkpoint gives,
each committed model's command prints its table's number, and all of them stay within the size bound."""

import json
import shutil

import jax
import numpy as np
import pytest
from conftest import (
  EBM_PLAIN,
  PRODUCTION_XLA_FLAGS,
  child_env,
  local_source_missing,
  make_raw_folder,
  require_real_data,
  run_modules,
)

from benchmarks.tools import pretrained
from jaxtricks import checkpoints, cli
from train import classify, ebm, gan

TINY = {   # program, the catalog entry whose export it goes through (check=False: not the catalog's run), its flags
    "gan": (gan, "gan_single_s0", ["--batch-size", "16", "--width", "8", "--z-dim", "8", "--fid-samples", "32",
                                   "--ema-decay", "0.9", "--sample-every", "100"]),
    "ebm": (ebm, "ebm_s0", ["--batch-size", "16", "--channels", "4", "--langevin-steps", "3", "--fresh-steps", "3",
                            "--unroll", "1", "--buffer-size", "64", "--fid-samples", "32", "--sample-every", "100",
                            *EBM_PLAIN]),
    "classify": (classify, "exact_mnist_s0", ["--model", "cnn", "--batch-size", "16", "--loss", "exact",
                                              "--exact-sigma", "scheduled", "--logit-batchnorm"]),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """program -> (the main of its tiny flags, the workdir of its 3-step run): each trained once, on first use."""
  root = tmp_path_factory.mktemp("pretrained")
  make_raw_folder(root / "raw")
  made = {}

  def get(program):
    module, _, flags = TINY[program]
    main = lambda *argv: cli.main(module.Config, module.run, ["--data-dir", str(root / "raw"), "--no-progress",
                                                              *flags, *argv], recipes=getattr(module, "RECIPES", None))
    if program not in made:
      with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TFDS_DATA_DIR", str(root / "tfds"))
        assert main("--steps", "3", "--workdir", str(root / program)) == 0
      made[program] = root / program
    return main, made[program]
  get.tfds = root / "tfds"
  return get


@pytest.mark.parametrize("program", TINY)
def test_the_slim_form_evaluates_as_the_checkpoint(program, trained, tmp_path, monkeypatch):
  """A 3-step run's --eval-only on its workdir and on its export (weights.msgpack: no optimizer state, of the EBM's
  buffer only the latest items) print the same values; the export is smaller than the checkpoint; the export
  records the code version that made it."""
  main, workdir = trained(program)
  monkeypatch.setenv("TFDS_DATA_DIR", str(trained.tfds))
  assert main("--eval-only", "--workdir", str(workdir)) == 0
  folder = pretrained.export(TINY[program][1], workdir, out=tmp_path / "pretrained", check=False, half=False)
  assert main("--eval-only", "--workdir", str(folder)) == 0
  full, slim = (json.loads((p / "eval.json").read_text()) for p in (workdir, folder))
  assert slim == pytest.approx(full, rel=1e-6) and len(full) > 1   # (KID's float sums: the last bits may differ)
  checkpoint = sum(p.stat().st_size for p in (workdir / "checkpoints").rglob("*") if p.is_file())
  assert (folder / checkpoints.WEIGHTS).stat().st_size < checkpoint
  if program == "ebm":   # train.ebm_sample draws from a pretrained EBM as from a workdir
    from train import ebm_sample
    x = ebm_sample.run(ebm_sample.Config(workdirs=str(folder), num=8, rounds=1, langevin_steps=3, start="noise",
                                         out=str(tmp_path / "noise.png")))
    assert x.shape[0] == 8 and (tmp_path / "noise.png").stat().st_size > 0
  # float16 storage: half the bytes, float32 back, each array rounded to float16
  full_state, _ = checkpoints.restore_weights(folder)
  halved = pretrained.export(TINY[program][1], workdir, out=tmp_path / "half", check=False, half=True)
  half_state, _ = checkpoints.restore_weights(halved)
  f32 = sum(a.nbytes for a in jax.tree.leaves(full_state) if a.dtype == np.float32)
  saved = (folder / checkpoints.WEIGHTS).stat().st_size - (halved / checkpoints.WEIGHTS).stat().st_size
  assert saved > 0.45 * f32, (saved, f32)   # float32 arrays at half their bytes (the EBM's uint8 buffer as it was)
  for a, b in zip(jax.tree.leaves(full_state), jax.tree.leaves(half_state)):
    assert b.dtype == a.dtype and np.array_equal(b, a.astype(np.float16).astype(a.dtype) if a.dtype == np.float32 else a)
  meta = json.loads((folder / "pretrained.json").read_text())
  assert meta["step"] == 3 and meta["code"] and meta["evaluate"].startswith("python -m train.")


def test_other_settings_than_the_models_are_refused(trained, tmp_path, monkeypatch, capsys):
  """--eval-only on a pretrained model with another architecture's flags: one line naming the setting, exit 2."""
  main, workdir = trained("gan")
  monkeypatch.setenv("TFDS_DATA_DIR", str(trained.tfds))
  folder = pretrained.export("gan_single_s0", workdir, out=tmp_path / "pretrained", check=False)
  capsys.readouterr()
  assert main("--width", "16", "--eval-only", "--workdir", str(folder)) == cli.EXIT_USAGE
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "width" in err[0], err
  # EXACT's loss settings are the run's too: its nll would be another without the logit batch-norm it trained with
  main, workdir = trained("classify")
  folder = pretrained.export("exact_mnist_s0", workdir, out=tmp_path / "pretrained", check=False)
  capsys.readouterr()
  assert main("--no-logit-batchnorm", "--eval-only", "--workdir", str(folder)) == cli.EXIT_USAGE
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "logit_batchnorm: True there, False now" in err[0], err


@pytest.mark.parametrize("program", ["gan", "classify"])
def test_eval_only_takes_the_runs_settings_from_its_config(program, trained, tmp_path, monkeypatch):
  """--eval-only with none of the model's flags (only where it is, and the sample count): the run's settings come
  from its config.json, and the values are those of the command with every flag typed."""
  main, workdir = trained(program)
  monkeypatch.setenv("TFDS_DATA_DIR", str(trained.tfds))
  folder = pretrained.export(TINY[program][1], workdir, out=tmp_path / "pretrained", check=False)
  assert main("--eval-only", "--workdir", str(folder)) == 0   # (main types the tiny flags)
  typed = json.loads((folder / "eval.json").read_text())
  (folder / "eval.json").unlink()
  module = TINY[program][0]
  bare = ["--eval-only", "--workdir", str(folder), "--data-dir", str(trained.tfds.parent / "raw"), "--no-progress"]
  assert cli.main(module.Config, module.run, [*bare, *(["--fid-samples", "32"] if program == "gan" else [])]) == 0
  assert json.loads((folder / "eval.json").read_text()) == pytest.approx(typed, rel=1e-6) and len(typed) > 1


def test_a_config_json_value_the_program_does_not_take_is_one_line(trained, tmp_path, monkeypatch, capsys):
  """--eval-only reads config.json's values as their flags would be read: one that is not a value of its flag (a
  damaged or hand-edited file) is one line naming the file and the setting, exit 2, nothing written."""
  main, workdir = trained("classify")
  monkeypatch.setenv("TFDS_DATA_DIR", str(trained.tfds))
  folder = pretrained.export("exact_mnist_s0", workdir, out=tmp_path / "pretrained", check=False)
  saved = json.loads((folder / "config.json").read_text())
  for key, value in (("loss", "exact_v0"), ("batch_size", 16.5), ("logit_batchnorm", "yes")):
    (folder / "config.json").write_text(json.dumps({**saved, key: value}))
    capsys.readouterr()
    assert main("--eval-only", "--workdir", str(folder)) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"config.json: {key} {value!r} is not a value of this program's" in err[0], err
    assert not (folder / "eval.json").exists()


def test_an_export_larger_than_the_ebms_buffer_is_refused_before_the_evaluation(trained, tmp_path, monkeypatch, capsys):
  """--eval-only --export-samples N on an EBM whose buffer holds fewer than N (a pretrained model keeps 500; this
  3-step run holds 48 of its 64): refused in one line naming what it holds, before any evaluation is written."""
  main, workdir = trained("ebm")
  monkeypatch.setenv("TFDS_DATA_DIR", str(trained.tfds))
  folder = pretrained.export("ebm_s0", workdir, out=tmp_path / "pretrained", check=False)
  for n in ("49", "100"):   # above what it holds; above what its settings could hold (--buffer-size 64)
    capsys.readouterr()
    assert main("--eval-only", "--workdir", str(folder), "--export-samples", n) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{n} exceeds the 48 samples this buffer holds" in err[0], err
    assert not (folder / "eval.json").exists() and not (folder / "export").exists()
  assert main("--eval-only", "--workdir", str(folder), "--export-samples", "48") == 0
  assert len(list((folder / "export" / "samples").glob("*.png"))) == 48


def test_weights_of_another_model_are_refused_naming_what_differs(trained, tmp_path):
  """restore_weights into a state of other shapes or fields: WorkdirError naming the array, never a traceback."""

  from jaxtricks.errors import WorkdirError
  _, workdir = trained("gan")
  folder = pretrained.export("gan_single_s0", workdir, out=tmp_path, check=False)
  state, step = checkpoints.restore_weights(folder)
  abstract = lambda f: {**jax.tree.map(lambda a: jax.ShapeDtypeStruct(f(np.shape(a)), np.asarray(a).dtype), state),
                        "opt_state": {}}
  restored, step = checkpoints.restore_weights(folder, abstract(lambda shape: shape))
  assert step == 3 and np.array_equal(restored["ema_g"]["Dense_0"]["kernel"], state["ema_g"]["Dense_0"]["kernel"])
  with pytest.raises(WorkdirError, match=r"\] is \(\d+[,\d ]*\), this program's \(\d+"):
    checkpoints.restore_weights(folder, abstract(lambda shape: (*shape[:-1], 2 * shape[-1]) if shape else shape))
  with pytest.raises(WorkdirError, match="this program's state"):
    checkpoints.restore_weights(folder, {**abstract(lambda shape: shape), "buffer": {}})


def test_export_refuses_a_run_that_is_not_the_catalogs_and_training_into_a_model(trained, tmp_path, monkeypatch,
                                                                               capsys):
  """The export checks the run's settings against its catalog entry (a tiny GAN is not the width-16 model), and a
  program refuses to train into a pretrained model's folder (it would shadow the weights), in one line, exit 2."""
  from jaxtricks.errors import ConfigError
  main, workdir = trained("gan")
  with pytest.raises(ConfigError, match=r"not the run of gan_single_s0 .*width 8, not 16"):
    pretrained.export("gan_single_s0", workdir, out=tmp_path)
  with pytest.raises(SystemExit) as stop:   # the tool's command line: one line, exit 2
    pretrained.main(["export", "ebm_s0", "--workdir", str(workdir)])
  assert stop.value.code == 2 and "not the run of ebm_s0" in capsys.readouterr().err
  folder = pretrained.export("gan_single_s0", workdir, out=tmp_path, check=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(trained.tfds))
  capsys.readouterr()
  assert main("--steps", "3", "--workdir", str(folder)) == cli.EXIT_USAGE
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "pretrained model" in err[0] and "--eval-only" in err[0], err
  assert sorted(p.name for p in folder.iterdir()) == ["config.json", "pretrained.json", "weights.msgpack"]


def test_all_models_stay_within_the_size_bound():
  assert pretrained.total_bytes() <= pretrained.MAX_BYTES, f"{pretrained.total_bytes() / 2 ** 20:.1f} MB"


MADE = [name for name in pretrained.CATALOG if (pretrained.FOLDER / name / checkpoints.WEIGHTS).is_file()]


def test_each_made_model_is_complete():
  for name in MADE:
    meta = json.loads((pretrained.FOLDER / name / "pretrained.json").read_text())
    assert meta["evaluate"] == " ".join(pretrained.eval_argv(name)) and meta["printed"] == pretrained.CATALOG[name]["printed"]
    assert (pretrained.FOLDER / name / "config.json").is_file()
    assert " ".join(pretrained.eval_argv(name)) in (pretrained.FOLDER / "README.md").read_text(), name


@pytest.mark.realdata
@pytest.mark.slow
def test_each_eval_command_prints_its_tables_number(tmp_path):
  """Each committed model's command (benchmarks/pretrained/README.md), run as written but on a copy of its folder
  (its eval.json stays out of the clone), with the production compile: the value it prints is its table's."""
  data = {n: pretrained.CATALOG[n]["expect"].get("dataset", "fashion_mnist") for n in MADE}
  names = [n for n in MADE if not local_source_missing(data[n])]
  missing = [f"{n} ({local_source_missing(data[n])})" for n in MADE if n not in names]
  if not names:
    pytest.skip("; ".join(missing))
  groups = {}   # one Python per CPU layout: a program sets its device count before JAX starts (train.ebm one per
  for name in names:   # core, the others one), and a second program in the same Python would run on the first's
    shutil.copytree(pretrained.FOLDER / name, tmp_path / name)
    argv = pretrained.eval_argv(name, tmp_path / name)
    assert argv[:2] == ["python", "-m"], argv
    groups.setdefault(argv[2] == "train.ebm", []).append(argv[2:])
  for commands in groups.values():
    codes, stderr = run_modules(commands, child_env(XLA_FLAGS=PRODUCTION_XLA_FLAGS))   # in turn, in one Python
    assert codes == [0] * len(commands), (codes, stderr[-3000:])
  for name in names:
    entry = pretrained.CATALOG[name]
    value = json.loads((tmp_path / name / "eval.json").read_text())[entry["printed"]]
    table = pretrained.table_number(name)
    assert abs(value - table) <= entry["rel"] * abs(table) + 5e-5, (name, value, table)
  if missing:   # the others passed above
    pytest.skip(f"not run: {'; '.join(missing)}")


@pytest.mark.realdata
def test_gan_rescore_reads_pretrained_gans_and_states_the_real_data_floor(trained, tmp_path):
  """benchmarks.studies.gan.gan_rescore at tiny size on a 3-step GAN exported as a pretrained model: the real-data
  floor falls with the sample count (FID's bias) and its FID∞ lies below it; the 3-step G is far above the floor;
  KID, precision and recall are there."""
  from benchmarks.studies.gan import gan_rescore
  require_real_data("fashion_mnist")
  _, workdir = trained("gan")
  pretrained.export("gan_single_s0", workdir, out=tmp_path / "pretrained", check=False)
  name = "gan_single_s0"
  scores = gan_rescore.rescore([name], 256, [32, 64, 128, 256], folder=tmp_path / "pretrained")
  floor, model = scores["real"], scores[name]
  assert floor["fid"] == sorted(floor["fid"], reverse=True) and floor["fid_infinity"] < floor["fid"][-1]
  assert all(m > 3 * f for m, f in zip(model["fid"], floor["fid"]))
  assert 0 <= model["precision"] <= 1 and 0 <= model["recall"] <= 1 and np.isfinite(model["kid"])
  assert len(gan_rescore.rows_of(scores)) == 1
