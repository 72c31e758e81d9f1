import numpy as np
import pytest

from conftest import REPO, require_real_data
from jaxtricks import metrics


def test_frechet_distance_of_known_gaussians():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(5, 5))
  c1 = a @ a.T + np.eye(5)
  q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
  # commuting covariances: FD = ||m1 - m2||^2 + sum (sqrt(l1) - sqrt(l2))^2 over the shared eigenbasis
  l1, l2 = rng.uniform(0.5, 3, 5), rng.uniform(0.5, 3, 5)
  c1, c2 = (q * l1) @ q.T, (q * l2) @ q.T
  m1, m2 = rng.normal(size=5), rng.normal(size=5)
  expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
  assert metrics.frechet_distance(m1, c1, m2, c2) == pytest.approx(expected, rel=1e-9)
  assert metrics.frechet_distance(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-9)
  # non-commuting: against scipy's sqrtm
  from scipy.linalg import sqrtm
  c3 = a @ a.T + 0.5 * np.eye(5)
  ref = np.sum((m1 - m2) ** 2) + np.trace(c1 + c3 - 2 * np.real(sqrtm(c1 @ c3)))
  assert metrics.frechet_distance(m1, c1, m2, c3) == pytest.approx(ref, rel=1e-7)


def test_frechet_distance_from_samples():
  rng = np.random.default_rng(1)
  x = rng.normal([0, 0, 0], [1.0, 2.0, 0.5], size=(200000, 3))
  y = rng.normal([1, 0, -1], [1.0, 1.0, 1.0], size=(200000, 3))
  expected = 2.0 + (2.0 - 1.0) ** 2 + (0.5 - 1.0) ** 2
  fd = metrics.frechet_distance(*metrics.gaussian_statistics(x), *metrics.gaussian_statistics(y))
  assert fd == pytest.approx(expected, rel=0.02)


def test_auroc_against_pair_counting():
  rng = np.random.default_rng(2)
  a = rng.integers(0, 20, 300).astype(float)          # many ties
  b = rng.integers(5, 25, 200).astype(float)
  brute = np.mean((a[:, None] > b[None]) + 0.5 * (a[:, None] == b[None]))
  assert metrics.auroc(a, b) == pytest.approx(brute, abs=1e-12)
  assert metrics.auroc([3, 4], [1, 2]) == 1.0
  assert metrics.auroc([1, 2], [3, 4]) == 0.0
  assert metrics.auroc([1, 1], [1, 1]) == 0.5


def test_inception_score():
  assert metrics.inception_score(np.full((100, 10), 0.1)) == pytest.approx(1.0)
  assert metrics.inception_score(np.eye(10)[np.arange(100) % 10]) == pytest.approx(10.0, rel=1e-6)
  assert metrics.inception_score(np.eye(10)[np.zeros(100, int)]) == pytest.approx(1.0)


@pytest.mark.realdata
def test_feature_net_weights_and_fid_fmnist():
  require_real_data("fashion_mnist")
  require_real_data("mnist")
  from jaxtricks.data import load
  net = metrics.load_feature_net()
  fashion, labels = load("fashion_mnist", "test")
  feats, probs = metrics.feature_net_outputs(fashion, net=net)
  assert feats.shape == (10000, 128)
  assert np.mean(probs.argmax(1) == labels) >= 0.92        # the committed net is the one that reached 92%
  train, _ = load("fashion_mnist", "train")
  digits, _ = load("mnist", "test")
  fid = metrics.fid_against(fashion, net=net)
  same, other = fid(train[:10000]), fid(digits)
  assert same < 0.05 * other, (same, other)
  assert metrics.inception_score(probs) > 5


def test_fid_against_a_reference_set_is_zero_on_itself_and_grows_with_noise():
  rng = np.random.default_rng(0)
  ref = rng.integers(0, 256, (300, 28, 28, 1), dtype=np.uint8)
  fid = metrics.fid_against(ref)
  assert abs(fid(ref)) < 1e-6
  noisy = np.clip(ref / 255.0 + rng.normal(0, 0.3, ref.shape), 0, 1).astype(np.float32)
  assert fid(noisy) > 1.0
  # by hand: the Fréchet distance of the feature statistics, images first, reference second
  feats, probs = metrics.feature_net_outputs(noisy)
  by_hand = metrics.frechet_distance(*metrics.gaussian_statistics(feats),
                                     *metrics.gaussian_statistics(metrics.feature_net_outputs(ref)[0]))
  assert fid(noisy) == by_hand                                            # bit for bit: the same operations
  with_is = metrics.fid_against(ref, with_inception_score=True)(noisy)   # one pass gives both
  assert with_is == (by_hand, metrics.inception_score(probs))


def test_fid_name_decides_which_data_sets_have_an_fid(monkeypatch, tmp_path):
  assert [metrics.fid_name(d) for d in ("fashion_mnist", "mnist", "cifar10", "imdb")] == [
      "fmnist", "fmnist", "cifar10", None]
  monkeypatch.setitem(metrics.FEATURE_NETS, "cifar10", (tmp_path / "absent.msgpack", (32, 32, 3)))
  assert metrics.fid_name("cifar10") is None                            # no committed weights: no FID


def test_one_fid_path():
  """The programs compute FID only through metrics.fid_against and decide only with metrics.fid_name."""
  for path in (REPO / "train").glob("*.py"):
    code = path.read_text()
    assert "frechet_distance" not in code and "gaussian_statistics" not in code and "FID_DATASETS" not in code, path
    assert ("fid_against" in code) == ("fid_name" in code), path
  assert not hasattr(metrics, "fid_fmnist")


def test_auroc_refuses_nan_and_empty_scores():
  """NaN has no rank: sorted last, it counted as the highest score (auroc([nan, 1], [.5]) was 1.0)."""
  with pytest.raises(ValueError, match="auroc: scores_in holds 1 NaN of 2 scores"):
    metrics.auroc([np.nan, 1.0], [0.5])
  with pytest.raises(ValueError, match="auroc: scores_out holds 1 NaN"):
    metrics.auroc([1.0], [np.nan, 0.5])
  with pytest.raises(ValueError, match="auroc: scores_out is empty"):
    metrics.auroc([1.0], [])


@pytest.mark.parametrize("probs", [np.random.default_rng(0).normal(size=(10, 10)),   # logits: IS was 3.4e7
                                   np.full((10, 10), 0.2), np.full((4, 10), np.nan), np.zeros((0, 10)), np.ones(10)])
def test_inception_score_refuses_what_is_not_probabilities(probs):
  with pytest.raises(ValueError, match="inception_score: probs_NC must"):
    metrics.inception_score(probs)


def test_fid_takes_one_input_convention():
  """uint8 0..255 or float in [0, 1], the same pixels give the same FID; int32 or float 0..255 (FID 4.9 million
  before), NaN images (a finite 175 before), one image ("Eigenvalues did not converge" before) and another image
  shape are refused, naming the argument."""
  rng = np.random.default_rng(0)
  ref = rng.integers(0, 256, (50, 28, 28, 1), dtype=np.uint8)
  images = rng.integers(0, 256, (40, 28, 28, 1), dtype=np.uint8)
  fid = metrics.fid_against(ref)
  assert fid(images) == fid(images.astype(np.float32) / 255) == fid(images.astype(np.float64) / 255)
  refusals = [(images.astype(np.int32), "images: images of dtype int32; give uint8"),
              (images.astype(np.float32), r"images: float images must be in \[0, 1\], got values in \[0, 255\]"),
              (images.astype(np.float32) / 127.5 - 1, r"float images must be in \[0, 1\]"),
              (np.full(images.shape, np.nan, np.float32), "images: 31360 pixel values are NaN"),
              (images[:1], "images: 1 images; at least 2 are needed"),
              (images[:, :20], r"images: shape \(20, 28, 1\) per image, the reference's is \(28, 28, 1\)"),
              (images[..., 0], r"images: images must be \[N, H, W, C\]"),
              (images.astype(bool), "dtype bool")]
  for bad, words in refusals:
    with pytest.raises(ValueError, match=words):
      fid(bad)
  with pytest.raises(ValueError, match="reference_images: 1 images; at least 2"):
    metrics.fid_against(ref[:1])
  with pytest.raises(ValueError, match="images_NHWC: images of dtype int64"):
    metrics.feature_net_outputs(ref.astype(np.int64))
