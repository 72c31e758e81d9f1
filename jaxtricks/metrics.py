"""Evaluation metrics: accuracy, Fréchet distance (FID-FMNIST, FID-CIFAR10), classifier-based inception score,
AUROC."""

import functools
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks.models.feature_net import FeatureNet

ASSETS = Path(__file__).resolve().parent / "assets"
FEATURE_NET_WEIGHTS = ASSETS / "feature_net_fmnist.msgpack"
# Each FID's feature net: the committed weights and the images it reads. FID-FMNIST's also scores MNIST; neither is
# an Inception network, so their FIDs compare only with FIDs of the same net.
FEATURE_NETS = {"fmnist": (FEATURE_NET_WEIGHTS, (28, 28, 1)),
                "cifar10": (ASSETS / "feature_net_cifar10.msgpack", (32, 32, 3))}
FID_OF_DATASET = {"fashion_mnist": "fmnist", "mnist": "fmnist", "cifar10": "cifar10"}


def fid_name(dataset: str) -> str | None:
  """The FID that scores samples of `dataset` ("fmnist" for Fashion-MNIST and MNIST, "cifar10"), or None where
  that FID's feature net has no committed weights: the one place that decides whether a data set has an FID."""
  name = FID_OF_DATASET.get(dataset)
  return name if name is not None and FEATURE_NETS[name][0].exists() else None


def correct(logits_BC: jax.Array, labels_B: jax.Array) -> jax.Array:
  """1.0 where argmax(logits) == label, else 0.0; shape [B]."""
  return (jnp.argmax(logits_BC, axis=-1) == labels_B).astype(jnp.float32)


def gaussian_statistics(features_ND) -> tuple[np.ndarray, np.ndarray]:
  """(mean [D], covariance [D, D]) in float64."""
  f = np.asarray(features_ND, np.float64)
  return f.mean(0), np.cov(f, rowvar=False)


def _sqrt_psd(c):
  w, v = np.linalg.eigh(c)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
  """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)) (Heusel et al. 2017, FID), in float64.

  tr((C1 C2)^(1/2)) is computed as the sum of the square roots of the eigenvalues of the symmetric
  C1^(1/2) C2 C1^(1/2), which has the same spectrum and needs no complex sqrtm.
  """
  mu1, mu2, cov1, cov2 = (np.asarray(a, np.float64) for a in (mu1, mu2, cov1, cov2))
  s1 = _sqrt_psd(cov1)
  tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(s1 @ cov2 @ s1), 0, None)).sum()
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)


def inception_score(probs_NC) -> float:
  """exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016), from a classifier's class probabilities: rows of
  [N, C] in [0, 1] that sum to 1 (1e-3 tolerance), N >= 1; ValueError otherwise (logits are not probabilities)."""
  p = np.asarray(probs_NC, np.float64)
  if p.ndim != 2 or not p.size:
    raise ValueError(f"inception_score: probs_NC must be a non-empty [N, C] array, got shape {p.shape}")
  if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1 or np.abs(p.sum(1) - 1).max() > 1e-3:
    raise ValueError("inception_score: probs_NC must hold class probabilities (rows in [0, 1] summing to 1); got "
                     f"values in [{p.min():.4g}, {p.max():.4g}], row sums in [{p.sum(1).min():.4g}, "
                     f"{p.sum(1).max():.4g}]: apply a softmax to logits first")
  marginal = p.mean(0, keepdims=True)
  kl = np.sum(p * (np.log(np.clip(p, 1e-30, None)) - np.log(np.clip(marginal, 1e-30, None))), axis=1)
  return float(np.exp(kl.mean()))


def auroc(scores_in, scores_out) -> float:
  """P(score_in > score_out) + P(equal)/2: the area under the ROC curve of telling `in` (positive, higher
  score) from `out`, by the Mann-Whitney U statistic with average ranks for ties. ValueError for an empty set or
  a NaN score (NaN has no rank: sorted last, it would count as the highest)."""
  a, b = np.asarray(scores_in, np.float64).ravel(), np.asarray(scores_out, np.float64).ravel()
  for name, v in (("scores_in", a), ("scores_out", b)):
    if not v.size:
      raise ValueError(f"auroc: {name} is empty")
    if np.isnan(v).any():
      raise ValueError(f"auroc: {name} holds {int(np.isnan(v).sum())} NaN of {v.size} scores; drop or fix them "
                       "first (NaN has no rank)")
  both = np.concatenate([a, b])
  order = np.argsort(both, kind="mergesort")
  ranks = np.empty(len(both))
  sorted_vals = both[order]
  # average ranks (1-based) for ties
  _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
  avg = first + (counts + 1) / 2.0
  ranks[order] = np.repeat(avg, counts)
  u = ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2
  return float(u / (len(a) * len(b)))


def load_feature_net(path: str | Path | None = None, *, fid: str = "fmnist"):
  """(FeatureNet module, params) of FID `fid`'s net ("fmnist", "cifar10") from its committed weights, or from
  `path`."""
  default_path, input_shape = FEATURE_NETS[fid]
  model = FeatureNet()
  template = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, *input_shape)))["params"]
  path = default_path if path is None else path
  params = flax.serialization.from_bytes(template, Path(path).read_bytes())
  return model, params


@functools.partial(jax.jit, static_argnums=0)
def _features_and_probs(model, params, x_BHWC):
  feats, logits = model.apply({"params": params}, x_BHWC, return_features=True)
  return feats, jax.nn.softmax(logits)


def net_input(images_NHWC, *, name: str = "images_NHWC", min_count: int = 1) -> np.ndarray:
  """The feature nets' one input convention, as float32 in [0, 1]: uint8 in 0..255 (divided by 255), or floats in
  [0, 1] (as they are); [N, H, W, C] with N >= `min_count`. Anything else raises ValueError naming `name`: other
  integer types (int32 0..255 would be read as 0..255 "floats"), floats outside [0, 1] (e.g. 0..255, or [-1, 1]:
  map them first), NaN or inf, bool."""
  x = np.asarray(images_NHWC)
  if x.ndim != 4:
    raise ValueError(f"{name}: images must be [N, H, W, C], got shape {x.shape}")
  if len(x) < min_count:
    raise ValueError(f"{name}: {len(x)} images; at least {min_count} are needed (a covariance needs 2, and an FID "
                     "of fewer than a few thousand is biased upwards)")
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 255.0
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{name}: images of dtype {x.dtype}; give uint8 (0..255) or floats in [0, 1] (e.g. "
                     f"x.astype(np.uint8) for integer pixels)")
  x = x.astype(np.float32)
  if not np.isfinite(x).all():
    raise ValueError(f"{name}: {int((~np.isfinite(x)).sum())} pixel values are NaN or infinite")
  if x.size and (x.min() < 0 or x.max() > 1):
    raise ValueError(f"{name}: float images must be in [0, 1], got values in [{x.min():.4g}, {x.max():.4g}]; divide "
                     "0..255 pixels by 255 (or pass them as uint8), map [-1, 1] by (x + 1) / 2")
  return x


def feature_net_outputs(images_NHWC, *, net=None, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
  """(128-d features, class probabilities) of images as `net_input` takes them (uint8 0..255 or float in [0, 1]),
  of the net's input shape."""
  model, params = net if net is not None else load_feature_net()
  x = net_input(images_NHWC)
  feats, probs = [], []
  for start in range(0, len(x), batch_size):
    f, p = _features_and_probs(model, params, jnp.asarray(x[start:start + batch_size]))
    feats.append(np.asarray(f))
    probs.append(np.asarray(p))
  return np.concatenate(feats), np.concatenate(probs)


def fid_against(reference_images, *, net=None, with_inception_score: bool = False):
  """images -> the FID of `images` against `reference_images`: the Fréchet distance between the Gaussian statistics
  of the feature net's penultimate features (`net`: load_feature_net's (module, params), default FID-FMNIST's),
  the reference's computed once here. With `with_inception_score`, images -> (FID, inception score of the images'
  class probabilities), both from one pass of the net. The one FID of the project; `fid_name` says which net
  scores which data set.

  Images, both sets: uint8 0..255 or float in [0, 1] (`net_input`), at least 2 per set, of one shape; anything
  else raises ValueError naming the argument (`reference_images`, `images`)."""
  net = net if net is not None else load_feature_net()
  reference_images = net_input(reference_images, name="reference_images", min_count=2)
  shape = reference_images.shape[1:]
  reference = gaussian_statistics(feature_net_outputs(reference_images, net=net)[0])
  del reference_images   # only its statistics are kept

  def fid(images):
    images = net_input(images, name="images", min_count=2)
    if images.shape[1:] != shape:
      raise ValueError(f"images: shape {images.shape[1:]} per image, the reference's is {shape}")
    features, probs = feature_net_outputs(images, net=net)
    value = frechet_distance(*gaussian_statistics(features), *reference)
    return (value, inception_score(probs)) if with_inception_score else value
  return fid
