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


# Beside FID: KID, precision/recall, density/coverage on the same features, and FID's sample-size bias (FID∞).


def _subsets(n: int, m: int, num_subsets: int, seed: int, stream: int) -> np.ndarray:
  """[num_subsets, m] indices into n items, each row drawn without replacement; one random stream per set, so a
  set's subsets depend only on its size, m and the seed (the reference's are the same at every evaluation)."""
  rng = np.random.default_rng([seed, stream])
  return np.stack([rng.choice(n, m, replace=False) for _ in range(num_subsets)])


@functools.partial(jax.jit, static_argnames="skip_diagonal")
def _cubic_kernel_row_sums(x_SMD, y_SMD, *, skip_diagonal: bool):
  """sum_j k(x_si, y_sj) per subset s and row i, k(x, y) = (x.y / d + 1)^3 (without j = i with skip_diagonal);
  [S, M] in float32, summed on in float64 by the caller."""
  d = x_SMD.shape[-1]
  gram_SMM = jnp.einsum("smd,snd->smn", x_SMD, y_SMD, precision=jax.lax.Precision.HIGHEST)
  k_SMM = (gram_SMM / d + 1.0) ** 3
  if skip_diagonal:
    k_SMM = jnp.where(jnp.eye(k_SMM.shape[-1], dtype=bool)[None], 0.0, k_SMM)
  return k_SMM.sum(-1)


def _kernel_sums(x_ND, idx_x_SM, y_ND, idx_y_SM, *, skip_diagonal: bool) -> np.ndarray:
  """[S] float64: the cubic kernel summed over each subset pair, in equal chunks of <= 2^23 kernel values."""
  num_subsets, m = idx_x_SM.shape
  chunks = -(-num_subsets // max(1, (1 << 23) // (m * m)))
  chunk = -(-num_subsets // chunks)
  sums = []
  for start in range(0, num_subsets, chunk):
    ix, iy = idx_x_SM[start:start + chunk], idx_y_SM[start:start + chunk]
    pad = chunk - len(ix)   # the last chunk repeats its last subset: one compiled shape
    ix, iy = (np.concatenate([i, np.repeat(i[-1:], pad, 0)]) for i in (ix, iy))
    rows = _cubic_kernel_row_sums(jnp.asarray(x_ND[ix]), jnp.asarray(y_ND[iy]), skip_diagonal=skip_diagonal)
    sums.append(np.asarray(rows, np.float64).sum(-1)[:chunk - pad])
  return np.concatenate(sums)


def _self_sums(x_ND, idx_SM) -> np.ndarray:
  """[S]: sum_{i!=j} k(x_i, x_j) over each subset; computed once when every subset is the whole set."""
  if idx_SM.shape[1] == len(x_ND):   # a permutation of all points: the same sum for every subset
    whole = np.arange(len(x_ND))[None]
    return np.repeat(_kernel_sums(x_ND, whole, x_ND, whole, skip_diagonal=True), len(idx_SM))
  return _kernel_sums(x_ND, idx_SM, x_ND, idx_SM, skip_diagonal=True)


def _indicator(idx_SM, n: int) -> np.ndarray:
  a_SN = np.zeros((len(idx_SM), n), np.float32)
  np.put_along_axis(a_SN, idx_SM, 1.0, axis=1)
  return a_SN


@jax.jit
def _subset_kernel_sums(a_SN, x_ND, y_CD):
  """A k(x, y) [S, C]: row s sums k(x_i, y_j) over the points i of subset s (A: [S, N] of 0/1), float32."""
  gram_NC = jnp.matmul(x_ND, y_CD.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.matmul(a_SN, (gram_NC / x_ND.shape[-1] + 1.0) ** 3, precision=jax.lax.Precision.HIGHEST)


def _sample_sums(x_ND, idx_SM, y_MD=None, idx_y_SM=None) -> np.ndarray:
  """[S] float64: sum_{i, j} k(x_i, y_j) over subset s of x and subset s of y, or without y the same over pairs
  i != j of subset s of x. One kernel pass over all of x and y with the subsets as 0/1 matrices, N M (d + S)
  multiply-adds, instead of S m^2 d for one product per subset pair."""
  x = np.asarray(x_ND, np.float32)
  a_SN = _indicator(idx_SM, len(x))
  y, b_SM = (x, a_SN) if y_MD is None else (np.asarray(y_MD, np.float32), _indicator(idx_y_SM, len(y_MD)))
  chunks = -(-len(y) // max(1, (1 << 23) // len(x)))   # columns of k(x, y) in equal chunks of <= 2^23 values
  cols = -(-len(y) // chunks)
  a, xj, total = jnp.asarray(a_SN), jnp.asarray(x), np.zeros(len(idx_SM))
  for start in range(0, len(y), cols):
    y_CD = y[start:start + cols]
    y_CD = np.concatenate([y_CD, np.zeros((cols - len(y_CD), y.shape[1]), np.float32)])   # one compiled shape
    ak_SC = np.asarray(_subset_kernel_sums(a, xj, jnp.asarray(y_CD)), np.float64)[:, :len(y) - start]
    total += (ak_SC * b_SM[:, start:start + cols]).sum(1)
  if y_MD is None:   # less the i = j terms
    x64 = x.astype(np.float64)
    total -= a_SN @ ((x64 * x64).sum(1) / x.shape[1] + 1.0) ** 3
  return total


def _kid_reference(reference_features_MD, m: int, num_subsets: int, seed: int):
  """(reference [M, D] float32, its subsets [S, m], their self sums [S]): KID's part that depends on the reference
  only, which scores_against computes once (one product per subset: cheaper than _sample_sums for M >> m)."""
  y = np.asarray(reference_features_MD, np.float32)
  iy = _subsets(len(y), m, num_subsets, seed, 1)
  return y, iy, _self_sums(y, iy)


def _kid_against(features_ND, reference, m: int, num_subsets: int, seed: int) -> tuple[float, float]:
  y, iy, yy = reference
  x = np.asarray(features_ND, np.float32)
  ix = _subsets(len(x), m, num_subsets, seed, 0)
  xx, xy = _sample_sums(x, ix), _sample_sums(x, ix, y, iy)
  mmd2_S = (xx + yy) / (m * (m - 1)) - 2.0 * xy / (m * m)
  return float(mmd2_S.mean()), float(mmd2_S.std())


def _kid_subset_size(n: int, m_ref: int, subset_size: int, num_subsets: int) -> int:
  m = min(subset_size, n, m_ref)
  if m < 2 or num_subsets < 1:
    raise ValueError(f"kid needs subsets of at least 2 points of each set and at least 1 subset; got {n} features, "
                     f"{m_ref} reference features, subset_size {subset_size}, num_subsets {num_subsets}")
  return m


def kid(features_ND, reference_features_MD, *, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
  """(mean, std) over subsets of the Kernel Inception Distance (Bińkowski et al. 2018, arXiv 1801.01401, on this
  net's features): the unbiased estimator of MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3,

      MMD^2_u = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (m(m-1)) - 2 sum_{i,j} k(x_i, y_j) / m^2,

  on `num_subsets` pairs of subsets of m = min(subset_size, N, M) points of each set, drawn without replacement
  with a fixed `seed` (a set's subsets depend only on its size). The defaults are torch-fidelity's and clean-fid's
  (100 subsets of 1,000). Unbiased: its expectation is 0 when both sets come from one distribution, so a single
  value can be negative. Kernel values in float32 (summed in float64)."""
  m = _kid_subset_size(len(features_ND), len(reference_features_MD), subset_size, num_subsets)
  return _kid_against(features_ND, _kid_reference(reference_features_MD, m, num_subsets, seed), m, num_subsets, seed)


def _squared_distances(a_ND, b_MD) -> np.ndarray:
  """||a_i - b_j||^2 [N, M] in float64."""
  a, b = np.asarray(a_ND, np.float64), np.asarray(b_MD, np.float64)
  return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def _kth_neighbour_sq_distances(features_ND, ks, block: int = 1024) -> dict[int, np.ndarray]:
  """{k: [N] squared distance of each point to its k-th nearest other point} (itself, at distance 0, is the 0th)."""
  x = np.asarray(features_ND, np.float64)
  out = {k: np.empty(len(x)) for k in ks}
  for start in range(0, len(x), block):
    d2 = np.partition(_squared_distances(x[start:start + block], x), list(ks), axis=1)
    for k in ks:
      out[k][start:start + block] = d2[:, k]
  return out


def _manifold_scores(real_ND, fake_MD, real_r2_pr, fake_r2_pr, real_r2_dc, k_dc: int,
                     block: int = 1024) -> dict[str, float]:
  """Precision, recall (the k-NN balls of `*_r2_pr`) and density, coverage (the reals' balls `real_r2_dc` of the
  k_dc-th neighbour) in one pass over blocks of reals; a point on a ball's surface is inside (<=)."""
  real, fake = np.asarray(real_ND, np.float64), np.asarray(fake_MD, np.float64)
  fake_in_real_ball = np.zeros(len(fake), bool)
  fake_ball_counts = np.zeros(len(fake))
  recalled = covered = 0
  for start in range(0, len(real), block):
    d2 = _squared_distances(real[start:start + block], fake)
    fake_in_real_ball |= (d2 <= real_r2_pr[start:start + block, None]).any(0)
    recalled += int((d2 <= fake_r2_pr[None, :]).any(1).sum())
    in_ball = d2 <= real_r2_dc[start:start + block, None]
    fake_ball_counts += in_ball.sum(0)
    covered += int(in_ball.any(1).sum())
  return {"precision": float(fake_in_real_ball.mean()), "recall": recalled / len(real),
          "density": float(fake_ball_counts.sum() / (k_dc * len(fake))), "coverage": covered / len(real)}


def _require_neighbours(k: int, **sets):
  for name, features in sets.items():
    if len(features) <= k:
      raise ValueError(f"k-NN radii with k = {k} need more than {k} points; {name} has {len(features)}")


def precision_recall(real_features_ND, fake_features_MD, *, k: int = 3) -> tuple[float, float]:
  """(precision, recall) of Kynkäänniemi et al. 2019 (arXiv 1904.06991): each set's manifold is the union of balls
  around its points with radius the distance to the point's k-th nearest neighbour in the set;

      precision = fraction of fakes inside the reals' manifold,  recall = fraction of reals inside the fakes'.

  A ball holds its surface (<=, as the authors' code). The papers compare equal numbers of reals and fakes."""
  _require_neighbours(k, real_features=real_features_ND, fake_features=fake_features_MD)
  real_r2, fake_r2 = (_kth_neighbour_sq_distances(f, [k])[k] for f in (real_features_ND, fake_features_MD))
  s = _manifold_scores(real_features_ND, fake_features_MD, real_r2, fake_r2, real_r2, k)
  return s["precision"], s["recall"]


def density_coverage(real_features_ND, fake_features_MD, *, k: int = 5) -> tuple[float, float]:
  """(density, coverage) of Naeem et al. 2020 (arXiv 2002.09797), with B_i the ball around real i of radius its
  distance to its k-th nearest real:

      density = sum_j #{i: fake_j in B_i} / (k M),  coverage = fraction of reals whose ball holds a fake.

  A ball holds its surface (<=; the authors' prdc code uses <, which differs only on ties)."""
  _require_neighbours(k, real_features=real_features_ND)
  _require_neighbours(0, fake_features=fake_features_MD)
  real_r2 = _kth_neighbour_sq_distances(real_features_ND, [k])[k]
  s = _manifold_scores(real_features_ND, fake_features_MD, real_r2, np.zeros(len(fake_features_MD)), real_r2, k)
  return s["density"], s["coverage"]


def fid_infinity(features_ND, reference_features_MD, *, sample_counts=None, seed: int = 0) -> tuple[float, float]:
  """(FID∞, a) of Chong & Forsyth 2020 (arXiv 1911.07023): FID of N samples is biased, FID_N ≈ FID∞ + a / N;
  FID_N at several N (random subsets of the features, the reference's statistics fixed), a least-squares line in
  1/N, and its value at 1/N = 0. `sample_counts` default: 15 values from N/10 to N (theirs: 5,000 to 50,000)."""
  x = np.asarray(features_ND)
  ns = np.unique(np.asarray(sample_counts if sample_counts is not None else
                            np.linspace(max(2, len(x) // 10), len(x), 15), int))
  if len(ns) < 2 or ns.min() < 2 or ns.max() > len(x):
    raise ValueError(f"fid_infinity needs at least 2 sample counts between 2 and the {len(x)} features; got "
                     f"{ns.tolist()}")
  a, fid_inf = np.polyfit(1.0 / ns, fid_at_counts(x, reference_features_MD, ns, seed=seed), 1)
  return float(fid_inf), float(a)


def fid_at_counts(features_ND, reference_features_MD, sample_counts, *, seed: int = 0) -> list[float]:
  """FID of a random subset of n of the features against all of the reference, for each n of `sample_counts` in
  turn (one permutation per n, drawn from `seed`): the points fid_infinity fits."""
  x = np.asarray(features_ND)
  reference = gaussian_statistics(reference_features_MD)
  rng = np.random.default_rng(seed)
  return [frechet_distance(*gaussian_statistics(x[rng.permutation(len(x))[:n]]), *reference) for n in sample_counts]


def scores_against(reference_images, *, net=None, kid_subsets: int = 100, kid_subset_size: int = 1000,
                   k_precision: int = 3, k_density: int = 5, seed: int = 0, reference_features_ND=None):
  """images -> {"fid", "inception_score", "kid", "kid_std", "precision", "recall", "density", "coverage",
  "samples"}, all from one pass of the feature net over the images (`net`: load_feature_net's (module, params),
  default FID-FMNIST's), the reference's features computed once here. "fid" is fid_against's, bit for bit;
  "samples" is the number of images. KID's subsets come from the whole reference; precision, recall, density and
  coverage compare with as many reference images as there are images (at most all; drawn once per count with
  `seed`), as their papers do. A metric that needs more images than given (the k-NN ones: k + 1) is NaN. Images:
  fid_against's convention (`net_input`, at least 2 per set, the reference's shape), else ValueError.
  `reference_features_ND`: the net's features of the reference images where they were computed before (a cache:
  harness.scores_against_test's), used instead of a feature pass; [N, D] for the N reference images, else
  ValueError."""
  net = net if net is not None else load_feature_net()
  reference_images = net_input(reference_images, name="reference_images", min_count=2)   # as fid_against
  shape = reference_images.shape[1:]
  if reference_features_ND is None:
    reference_ND = feature_net_outputs(reference_images, net=net)[0]
  else:
    reference_ND = np.asarray(reference_features_ND)
    if reference_ND.ndim != 2 or len(reference_ND) != len(reference_images):
      raise ValueError(f"reference_features_ND: shape {reference_ND.shape}; the features of the "
                       f"{len(reference_images)} reference images are [{len(reference_images)}, D]")
  del reference_images   # only its features are kept
  reference = gaussian_statistics(reference_ND)
  manifolds, kid_references = {}, {}   # image count -> (reals of that count, their squared k-NN radii); m -> ...

  def reals_for(n):
    if n not in manifolds:
      reals = reference_ND[np.sort(_subsets(len(reference_ND), min(n, len(reference_ND)), 1, seed, 2)[0])]
      manifolds[n] = reals, _kth_neighbour_sq_distances(reals, sorted({k_precision, k_density}))
    return manifolds[n]

  def scores(images):
    images = net_input(images, name="images", min_count=2)
    if images.shape[1:] != shape:
      raise ValueError(f"images: shape {images.shape[1:]} per image, the reference's is {shape}")
    features, probs = feature_net_outputs(images, net=net)
    n, nan = len(features), float("nan")
    out = {"fid": frechet_distance(*gaussian_statistics(features), *reference),
           "inception_score": inception_score(probs), "samples": n, "kid": nan, "kid_std": nan,
           "precision": nan, "recall": nan, "density": nan, "coverage": nan}
    if n >= 2:
      m = _kid_subset_size(n, len(reference_ND), kid_subset_size, kid_subsets)
      if m not in kid_references:
        kid_references[m] = _kid_reference(reference_ND, m, kid_subsets, seed)
      out["kid"], out["kid_std"] = _kid_against(features, kid_references[m], m, kid_subsets, seed)
    if n > max(k_precision, k_density):
      reals, real_r2 = reals_for(n)
      fake_r2 = _kth_neighbour_sq_distances(features, [k_precision])[k_precision]
      out.update(_manifold_scores(reals, features, real_r2[k_precision], fake_r2, real_r2[k_density], k_density))
    return out
  return scores


def logged_scores(scores: dict, fid: str, suffix: str = "") -> dict[str, float]:
  """scores_against's values under the names the programs log for FID `fid` ("fmnist") and sample set `suffix`
  ("_ema", "_buffer"): fid_<fid><suffix> (as before), fid_<fid><suffix>_samples (the count behind all of them),
  kid_<fid><suffix> and kid_<fid><suffix>_std, precision_, recall_, density_, coverage_<fid><suffix>."""
  name = f"{fid}{suffix}"
  return {f"fid_{name}": scores["fid"], f"fid_{name}_samples": scores["samples"], f"kid_{name}": scores["kid"],
          f"kid_{name}_std": scores["kid_std"],
          **{f"{metric}_{name}": scores[metric] for metric in ("precision", "recall", "density", "coverage")}}
