"""jaxtricks.images' export for the standard FID/KID tools: the conversion's known answers (floats in [0, 1] ->
round(255 x), grey -> three equal channels), the PNG folder and the .npz read back with PIL and numpy, and the
refusals (a file where the folder goes, an old export in the way, values outside the convention)."""

import numpy as np
import pytest
from PIL import Image

from jaxtricks import images
from jaxtricks.errors import ConfigError


def test_floats_become_round_255x_and_grey_becomes_three_equal_channels():
  x = np.array([0.0, 0.2, 0.5, 1.0, 1 / 255, 0.998], np.float32).reshape(1, 1, 6, 1)
  out = images.to_uint8_rgb(x)
  assert out.dtype == np.uint8 and out.shape == (1, 1, 6, 3)
  # 255 * 0.2 = 51; 127.5 rounds (half to even) to 128; 254.49 to 254
  np.testing.assert_array_equal(out[0, 0], [[0] * 3, [51] * 3, [128] * 3, [255] * 3, [1] * 3, [254] * 3])


def test_colour_keeps_its_channels_and_uint8_passes_unchanged():
  rgb = np.array([[[[0.0, 0.5, 1.0]]]], np.float32)
  np.testing.assert_array_equal(images.to_uint8_rgb(rgb)[0, 0, 0], [0, 128, 255])
  u = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
  np.testing.assert_array_equal(images.to_uint8_rgb(u), np.repeat(u, 3, -1))
  # metrics.net_input reads u / 255: the export of those floats gives back every byte exactly
  np.testing.assert_array_equal(images.to_uint8_rgb(u.astype(np.float32) / 255), np.repeat(u, 3, -1))


@pytest.mark.parametrize("bad, words", [
    (np.full((1, 2, 2, 1), 1.5, np.float32), "must be in [0, 1]"),
    (np.full((1, 2, 2, 1), -1.0, np.float32), "map [-1, 1] by (x + 1) / 2"),
    (np.full((1, 2, 2, 1), np.nan, np.float32), "NaN or infinite"),
    (np.zeros((1, 2, 2, 1), np.int32), "dtype int32"),
    (np.zeros((2, 2, 1), np.float32), "[N, H, W, 1 or 3]"),
    (np.zeros((1, 2, 2, 4), np.float32), "[N, H, W, 1 or 3]"),
])
def test_values_outside_the_convention_are_refused(bad, words):
  with pytest.raises(ValueError) as e:
    images.to_uint8_rgb(bad)
  assert words in str(e.value)


def _batch(n=5, h=4, w=6):
  return np.random.default_rng(0).random((n, h, w, 1), dtype=np.float32)


def test_png_folder_reads_back_as_n_rgb_uint8_files(tmp_path):
  x = _batch()
  path = images.write_export(x, tmp_path / "export", "samples", "png")
  assert path == tmp_path / "export" / "samples"
  files = sorted(p.name for p in path.iterdir())
  assert files == [f"{i:06d}.png" for i in range(5)]
  want = images.to_uint8_rgb(x)
  for i, name in enumerate(files):
    with Image.open(path / name) as img:
      assert img.mode == "RGB" and img.size == (6, 4)
      got = np.asarray(img)
    assert got.dtype == np.uint8 and got.shape == (4, 6, 3)
    np.testing.assert_array_equal(got, want[i])
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()


def test_npz_holds_one_uint8_array_under_arr_0(tmp_path):
  x = _batch()
  path = images.write_export(x, tmp_path / "export", "real", "npz")
  assert path == tmp_path / "export" / "real.npz" and not list((tmp_path / "export").glob("*.partial"))
  with np.load(path) as f:
    assert f.files == ["arr_0"]
    arr = f["arr_0"]
  assert arr.dtype == np.uint8 and arr.shape == (5, 4, 6, 3)
  np.testing.assert_array_equal(arr, images.to_uint8_rgb(x))


@pytest.mark.parametrize("fmt", ["png", "npz"])
def test_a_file_where_the_folder_goes_and_an_old_export_are_refused(tmp_path, fmt):
  (tmp_path / "afile").write_text("")
  with pytest.raises(ConfigError) as e:
    images.write_export(_batch(), tmp_path / "afile", "samples", fmt)
  assert e.value.setting == "export_dir" and "is a file, not a folder" in str(e.value)
  images.write_export(_batch(), tmp_path / "out", "samples", fmt)
  with pytest.raises(ConfigError) as e:
    images.write_export(_batch(2), tmp_path / "out", "samples", fmt)
  assert "is there already" in str(e.value)
  images.check_export(tmp_path / "out", ("real",), fmt)   # another set beside it is fine
  (tmp_path / "empty" / "samples").mkdir(parents=True)
  images.check_export(tmp_path / "empty", ("samples",), fmt)   # an empty folder takes an export
