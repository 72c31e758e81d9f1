// oneDNN 2-D convolutions for JAX on CPU, called through XLA's FFI (jaxtricks/onednn.py; issue 35).
//
// Three handlers, NHWC activations and HWIO weights as JAX holds them, float32 or bfloat16:
//   jaxtricks_onednn_conv_fwd         y  = conv(x, w)
//   jaxtricks_onednn_conv_bwd_data    dx = the input-gradient of conv, from dy and w
//   jaxtricks_onednn_conv_bwd_weights dw = the weight-gradient of conv, from x and dy (float32 out)
// Attributes: stride, pad_top, pad_bottom, pad_left, pad_right (int64). oneDNN picks its own weight layout
// (format "any", reordered from HWIO on each call: the weights change every step); primitives are built once
// per shape and kept. Written for oneDNN 2.x (Debian's libdnnl-dev 2.6.3, the one built and tested) and 3.x (its
// primitive_desc constructors; not built here yet). First-order only: the gradients are FFI calls with no VJP.
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;

namespace {

dnnl::engine& Engine() { static dnnl::engine e(dnnl::engine::kind::cpu, 0); return e; }

struct Geometry {   // one convolution: N, H, W, C -> N, OH, OW, O with a K x K kernel
  int64_t n, h, w, c, o, k, oh, ow, stride, pt, pb, pl, pr;
  memory::dims src() const { return {n, c, h, w}; }
  memory::dims wei() const { return {o, c, k, k}; }
  memory::dims dst() const { return {n, o, oh, ow}; }
  memory::dims strides() const { return {stride, stride}; }
  memory::dims pad_l() const { return {pt, pl}; }
  memory::dims pad_r() const { return {pb, pr}; }
  auto key(int kind, int dt) const { return std::make_tuple(kind, dt, n, h, w, c, o, k, stride, pt, pb, pl, pr); }
};

struct Prims {   // what one shape needs, built once
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::primitive main;
  memory::desc weights_md;        // oneDNN's layout of the weights (or of the weight-gradient)
  std::unique_ptr<memory> weights; // scratch in that layout
  dnnl::reorder reorder;          // HWIO -> weights_md (fwd, bwd-data) or weights_md -> HWIO (bwd-weights)
};

memory::data_type Dt(ffi::DataType t) { return t == ffi::DataType::BF16 ? memory::data_type::bf16 : memory::data_type::f32; }

dnnl::convolution_forward::primitive_desc ForwardPd(const Geometry& g, memory::data_type dt) {
  memory::desc src(g.src(), dt, Tag::nhwc), wei(g.wei(), dt, Tag::any), dst(g.dst(), dt, Tag::nhwc);
#if DNNL_VERSION_MAJOR >= 3
  return {Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, wei, dst,
          g.strides(), g.pad_l(), g.pad_r()};
#else
  return {{dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, wei, dst, g.strides(),
           g.pad_l(), g.pad_r()}, Engine()};
#endif
}

// The primitive_desc of a backward convolution P (backward_data or backward_weights), `hint` its forward's.
template <class P>
typename P::primitive_desc BackwardPd(const Geometry& g, const memory::desc& src, const memory::desc& wei,
                                      const memory::desc& dst, const dnnl::convolution_forward::primitive_desc& hint) {
#if DNNL_VERSION_MAJOR >= 3
  return {Engine(), dnnl::algorithm::convolution_direct, src, wei, dst, g.strides(), g.pad_l(), g.pad_r(), hint};
#else
  return {typename P::desc(dnnl::algorithm::convolution_direct, src, wei, dst, g.strides(), g.pad_l(), g.pad_r()),
          Engine(), hint};
#endif
}

Prims* Get(int kind, const Geometry& g, memory::data_type dt) {
  static std::mutex mu;
  static std::map<decltype(g.key(0, 0)), std::unique_ptr<Prims>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[g.key(kind, static_cast<int>(dt))];
  if (slot) return slot.get();
  auto p = std::make_unique<Prims>(Prims{ForwardPd(g, dt), {}, {}, nullptr, {}});
  memory::desc src(g.src(), dt, Tag::nhwc), dst(g.dst(), dt, Tag::nhwc), hwio(g.wei(), dt, Tag::hwio);
  if (kind == 0) {
    p->weights_md = p->fwd_pd.weights_desc();
    p->main = dnnl::convolution_forward(p->fwd_pd);
  } else if (kind == 1) {
    auto pd = BackwardPd<dnnl::convolution_backward_data>(g, src, memory::desc(g.wei(), dt, Tag::any), dst, p->fwd_pd);
    p->weights_md = pd.weights_desc();
    p->main = dnnl::convolution_backward_data(pd);
  } else {
    hwio = memory::desc(g.wei(), memory::data_type::f32, Tag::hwio);
    auto pd = BackwardPd<dnnl::convolution_backward_weights>(
        g, src, memory::desc(g.wei(), memory::data_type::f32, Tag::any), dst, p->fwd_pd);
    p->weights_md = pd.diff_weights_desc();
    p->main = dnnl::convolution_backward_weights(pd);
  }
  p->weights = std::make_unique<memory>(p->weights_md, Engine());
  memory user(hwio, Engine(), nullptr);
  p->reorder = kind == 2 ? dnnl::reorder(*p->weights, user) : dnnl::reorder(user, *p->weights);
  slot = std::move(p);
  return slot.get();
}

Geometry Make(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w, ffi::Span<const int64_t> y, int64_t stride,
              int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return {x[0], x[1], x[2], x[3], w[3], w[0], y[1], y[2], stride, pt, pb, pl, pr};
}

// The shapes must fit together as the Python side computes them; anything else would read past a buffer.
ffi::Error Check(const Geometry& g, ffi::DataType a, ffi::DataType b, ffi::Span<const int64_t> x,
                 ffi::Span<const int64_t> w, ffi::Span<const int64_t> y) {
  if (a != b || (a != ffi::DataType::F32 && a != ffi::DataType::BF16))
    return ffi::Error::InvalidArgument("onednn conv: float32 or bfloat16 operands of one type only");
  if (g.pt < 0 || g.pb < 0 || g.pl < 0 || g.pr < 0 || g.stride < 1)
    return ffi::Error::InvalidArgument("onednn conv: paddings must be >= 0 and the stride >= 1");
  if (x.size() != 4 || w.size() != 4 || y.size() != 4 || w[0] != w[1] || w[2] != x[3] || y[0] != x[0] ||
      y[3] != w[3] || y[1] != (x[1] + g.pt + g.pb - w[0]) / g.stride + 1 ||
      y[2] != (x[2] + g.pl + g.pr - w[1]) / g.stride + 1)
    return ffi::Error::InvalidArgument("onednn conv: x [B,H,W,C], w [K,K,C,O] and y [B,OH,OW,O] do not fit");
  return ffi::Error::Success();
}

template <class F>
ffi::Error Guarded(F f) {   // a oneDNN exception must not cross the FFI boundary (it would terminate the process)
  try {
    f();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("onednn conv: ") + e.what());
  }
  return ffi::Error::Success();
}

void Run(int kind, const Geometry& g, memory::data_type dt, void* act, void* wts, void* out) {
  // kind 0: act = x, wts = w (HWIO), out = y;  1: act = dy, wts = w, out = dx;  2: act = x, wts = dy, out = dw
  // One call at a time: a shape's primitives share their weight scratch, and oneDNN's threads use every core.
  static std::mutex running;
  std::lock_guard<std::mutex> lock(running);
  Prims* p = Get(kind, g, dt);
  auto& eng = Engine();
  dnnl::stream s(eng);
  memory::desc src(g.src(), dt, Tag::nhwc), dst(g.dst(), dt, Tag::nhwc);
  if (kind == 2) {
    memory x(src, eng, act), dy(dst, eng, wts), dw(memory::desc(g.wei(), memory::data_type::f32, Tag::hwio), eng, out);
    p->main.execute(s, {{DNNL_ARG_SRC, x}, {DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_DIFF_WEIGHTS, *p->weights}});
    p->reorder.execute(s, *p->weights, dw);
  } else {
    memory w(memory::desc(g.wei(), dt, Tag::hwio), eng, wts);
    p->reorder.execute(s, w, *p->weights);
    if (kind == 0) {
      memory x(src, eng, act), y(dst, eng, out);
      p->main.execute(s, {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, *p->weights}, {DNNL_ARG_DST, y}});
    } else {
      memory dy(dst, eng, act), dx(src, eng, out);
      p->main.execute(s, {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_WEIGHTS, *p->weights}, {DNNL_ARG_DIFF_SRC, dx}});
    }
  }
  s.wait();
}

ffi::Error Fwd(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y, int64_t stride, int64_t pad_top,
               int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  Geometry g = Make(x.dimensions(), w.dimensions(), y->dimensions(), stride, pad_top, pad_bottom, pad_left, pad_right);
  if (auto e = Check(g, x.element_type(), w.element_type(), x.dimensions(), w.dimensions(), y->dimensions());
      e.failure()) return e;
  return Guarded([&] { Run(0, g, Dt(x.element_type()), x.untyped_data(), w.untyped_data(), y->untyped_data()); });
}

ffi::Error BwdData(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx, int64_t stride,
                   int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  Geometry g = Make(dx->dimensions(), w.dimensions(), dy.dimensions(), stride, pad_top, pad_bottom, pad_left, pad_right);
  if (auto e = Check(g, dy.element_type(), w.element_type(), dx->dimensions(), w.dimensions(), dy.dimensions());
      e.failure()) return e;
  return Guarded([&] { Run(1, g, Dt(dy.element_type()), dy.untyped_data(), w.untyped_data(), dx->untyped_data()); });
}

ffi::Error BwdWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw, int64_t stride,
                      int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  Geometry g = Make(x.dimensions(), dw->dimensions(), dy.dimensions(), stride, pad_top, pad_bottom, pad_left, pad_right);
  if (auto e = Check(g, x.element_type(), dy.element_type(), x.dimensions(), dw->dimensions(), dy.dimensions());
      e.failure()) return e;
  if (dw->element_type() != ffi::DataType::F32) return ffi::Error::InvalidArgument("onednn conv: dw is float32");
  return Guarded([&] { Run(2, g, Dt(x.element_type()), x.untyped_data(), dy.untyped_data(), dw->untyped_data()); });
}

}  // namespace

#define ATTRS .Attr<int64_t>("stride").Attr<int64_t>("pad_top").Attr<int64_t>("pad_bottom") \
              .Attr<int64_t>("pad_left").Attr<int64_t>("pad_right")
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxtricks_onednn_conv_fwd, Fwd,
    ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>() ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxtricks_onednn_conv_bwd_data, BwdData,
    ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>() ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxtricks_onednn_conv_bwd_weights, BwdWeights,
    ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>() ATTRS);
