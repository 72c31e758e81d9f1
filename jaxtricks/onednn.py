"""2-D convolutions by oneDNN on CPU, called through XLA's FFI (issue 35): `conv2d`, with its gradient.

XLA:CPU's bfloat16 convolutions do not reach a CPU's bf16 matrix units; oneDNN's do (its `brgconv` kernels on
AVX-512 BF16 and AMX). The kernels are jaxtricks/csrc/onednn_conv.cc, compiled against the system's oneDNN by
`make onednn` (Debian: libdnnl-dev) into jaxtricks/csrc/onednn_conv.so; `available()` says whether it was. Activations
NHWC and weights HWIO as JAX holds them, float32 or bfloat16; the weight-gradient is accumulated in float32 by
oneDNN and returned in the kernel's dtype. The call is opaque to XLA: it runs on the whole array on one device (use
one CPU device, oneDNN's threads use every core), nothing fuses into it, it has no batching rule beyond a loop
(`vmap_method="sequential"`), and it is differentiable once (its gradients are FFI calls without a VJP of their
own: a second derivative, e.g. ebm.kl_loss through a net using it, is refused by JAX).
"""

import ctypes
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxtricks.errors import ConfigError

LIBRARY = Path(__file__).parent / "csrc" / "onednn_conv.so"
_TARGETS = ("jaxtricks_onednn_conv_fwd", "jaxtricks_onednn_conv_bwd_data", "jaxtricks_onednn_conv_bwd_weights")


@functools.cache
def _registered() -> bool:
  """Loads the compiled kernels and registers them with XLA once; False when they were not built or do not load
  (e.g. oneDNN's shared library is gone)."""
  if not LIBRARY.is_file():
    return False
  try:
    lib = ctypes.cdll.LoadLibrary(str(LIBRARY))
  except OSError:
    return False
  for name in _TARGETS:
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
  return True


def available() -> bool:
  """Whether the oneDNN kernels were built here (`make onednn`)."""
  return _registered()


NOT_BUILT = ("the oneDNN kernels are not built here or do not load: run `make onednn` (a C++ compiler and oneDNN's "
             "headers, Debian's libdnnl-dev)")


def _require() -> None:
  if not _registered():
    raise ConfigError("conv", f"onednn: {NOT_BUILT}, or use another form")


def _pads(x_shape, k: int, stride: int, padding) -> tuple[tuple[int, int], tuple[int, int]]:
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(x_shape[1:3], (k, k), (stride, stride), padding)
  (top, bottom), (left, right) = padding
  if min(top, bottom, left, right) < 0:
    raise ValueError(f"onednn.conv2d: paddings must be >= 0, got {padding}")
  return (int(top), int(bottom)), (int(left), int(right))


def _attrs(stride, pads):
  (top, bottom), (left, right) = pads
  return dict(stride=np.int64(stride), pad_top=np.int64(top), pad_bottom=np.int64(bottom), pad_left=np.int64(left),
              pad_right=np.int64(right))


def _out_hw(x_shape, k, stride, pads):
  return tuple((x_shape[1 + i] + sum(pads[i]) - k) // stride + 1 for i in range(2))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x_BHWC, kernel_KKCO, stride, pads):
  k, o = kernel_KKCO.shape[0], kernel_KKCO.shape[3]
  out = jax.ShapeDtypeStruct((x_BHWC.shape[0], *_out_hw(x_BHWC.shape, k, stride, pads), o), x_BHWC.dtype)
  return jax.ffi.ffi_call(_TARGETS[0], out, vmap_method="sequential")(x_BHWC, kernel_KKCO, **_attrs(stride, pads))


def _conv_fwd(x_BHWC, kernel_KKCO, stride, pads):
  return _conv(x_BHWC, kernel_KKCO, stride, pads), (x_BHWC, kernel_KKCO)


def _conv_bwd(stride, pads, residuals, dy):
  x, kernel = residuals
  dy = dy.astype(x.dtype)
  dx = jax.ffi.ffi_call(_TARGETS[1], jax.ShapeDtypeStruct(x.shape, x.dtype), vmap_method="sequential")(
      dy, kernel, **_attrs(stride, pads))
  dw = jax.ffi.ffi_call(_TARGETS[2], jax.ShapeDtypeStruct(kernel.shape, jnp.float32), vmap_method="sequential")(
      x, dy, **_attrs(stride, pads))
  return dx, dw.astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv2d(x_BHWC: jax.Array, kernel_KKCO: jax.Array, stride: int = 1, padding="SAME") -> jax.Array:
  """lax.conv_general_dilated(x, kernel, (stride, stride), padding) with NHWC / HWIO / NHWC, square kernels,
  computed by oneDNN (forward, input- and weight-gradient). x and kernel: both float32 or both bfloat16.
  `padding`: "SAME", "VALID" or [(top, bottom), (left, right)] with non-negative values."""
  _require()
  if (x_BHWC.ndim != 4 or kernel_KKCO.ndim != 4 or kernel_KKCO.shape[0] != kernel_KKCO.shape[1]
      or kernel_KKCO.shape[2] != x_BHWC.shape[3]):
    raise ValueError(f"onednn.conv2d: x [B, H, W, C] and a square kernel [K, K, C, O] with x's C, got {x_BHWC.shape} "
                     f"and {kernel_KKCO.shape}")
  if isinstance(stride, bool) or int(stride) != stride or stride < 1:
    raise ValueError(f"onednn.conv2d: stride must be an integer >= 1, got {stride!r}")
  if x_BHWC.dtype != kernel_KKCO.dtype or x_BHWC.dtype not in (jnp.float32, jnp.bfloat16):
    raise ValueError(f"onednn.conv2d: x and kernel both float32 or both bfloat16, got {x_BHWC.dtype} and "
                     f"{kernel_KKCO.dtype}")
  return _conv(x_BHWC, kernel_KKCO, int(stride), _pads(x_BHWC.shape, kernel_KKCO.shape[0], stride, padding))
