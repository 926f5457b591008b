// The few libtorch calls tch 0.24 does not expose, for mixed precision on CUDA
// (src/train/amp.rs): the autocast dtype, the TF32 switches, and GradScaler's fused
// unscale-and-check. Every function catches C++ exceptions and returns them as text.
#include <ATen/ATen.h>
#include "common.hpp"
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

using svib_shim::fail;
using svib_shim::list;

extern "C" {

// Sets the dtype CUDA autocast casts to: bfloat16 when bf16 != 0, float16 otherwise.
int svib_autocast_cuda_dtype(int bf16, char *err, size_t cap) {
  try {
    at::autocast::set_autocast_dtype(at::kCUDA, bf16 ? at::kBFloat16 : at::kHalf);
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}

// TF32 tensor cores for float32 matrix products (cuBLAS) and convolutions (cuDNN).
int svib_set_tf32(int on, char *err, size_t cap) {
  try {
    at::globalContext().setAllowTF32CuBLAS(on != 0);
    at::globalContext().setAllowTF32CuDNN(on != 0);
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}

// torch.amp.GradScaler's unscale: grads *= inv_scale in place, found_inf set to 1 when any
// gradient holds an inf or NaN (one fused kernel per device and dtype).
int svib_unscale_check(at::Tensor **grads, size_t n, at::Tensor *found_inf, at::Tensor *inv_scale, char *err, size_t cap) {
  try {
    at::_amp_foreach_non_finite_check_and_unscale_(list(grads, n), *found_inf, *inv_scale);
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}
}

extern "C" {

// Autocast on CUDA around a forward pass, with the current API (tch 0.24's autocast calls the
// deprecated one, which prints a warning on every call). Returns the previous state in *prev.
int svib_autocast_enter(int *prev, char *err, size_t cap) {
  try {
    *prev = at::autocast::is_autocast_enabled(at::kCUDA) ? 1 : 0;
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::increment_nesting();
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}

int svib_autocast_exit(int prev, char *err, size_t cap) {
  try {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCUDA, prev != 0);
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}

// A new float32 CPU tensor in pinned (page-locked) memory, for non-blocking copies to the GPU;
// *out receives a heap at::Tensor* that tch's Tensor takes over.
int svib_empty_pinned(const int64_t *shape, size_t ndim, void **out, char *err, size_t cap) {
  try {
    auto t = at::empty(at::IntArrayRef(shape, ndim), at::TensorOptions().dtype(at::kFloat).pinned_memory(true));
    *out = new at::Tensor(std::move(t));
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}
}

// Multi-tensor ("foreach") versions of the optimiser's, the clipping's and the EMA's per-tensor
// loops, for CUDA, where one kernel launch per tensor costs more than the arithmetic. Each does
// the same element-wise operations, in the same order, as the loop it replaces.
extern "C" {

int svib_foreach_zero(at::Tensor **ts, size_t n, char *err, size_t cap) {
  try {
    at::_foreach_zero_(list(ts, n));
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}

// dst[i].lerp_(src[i], w): the EMA teacher update.
int svib_foreach_lerp(at::Tensor **dst, at::Tensor **src, size_t n, double w, char *err, size_t cap) {
  try {
    at::_foreach_lerp_(list(dst, n), list(src, n), at::Scalar(w));
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}

// DINO's per-parameter clipping: g *= min(1, max / (||g|| + 1e-6)), factors kept on the device.
int svib_foreach_clip(at::Tensor **grads, size_t n, double max, char *err, size_t cap) {
  try {
    auto g = list(grads, n);
    auto norms = at::stack(at::_foreach_norm(g));
    auto coef = ((norms + 1e-6).reciprocal() * max).clamp_max(1.0);
    at::_foreach_mul_(g, coef.unbind(0));
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}

// One AdamW step of a group of tensors sharing lr, weight decay and step count, as
// Optimizer::step's loop: p *= 1 - lr wd (when wd != 0); m.lerp_(g, 1 - b1); v.lerp_(g g, 1 - b2);
// when lr > 0: d = sqrt(v) / sqrt(bc2) + eps, d *= -bc1 / lr, p.addcdiv_(m, d).
int svib_foreach_adamw(at::Tensor **ps, at::Tensor **gs, at::Tensor **ms, at::Tensor **vs, size_t n, double lr, double wd, double b1, double b2,
                       double bc1, double bc2, double eps, char *err, size_t cap) {
  try {
    auto p = list(ps, n), g = list(gs, n), m = list(ms, n), v = list(vs, n);
    if (wd != 0.0) at::_foreach_mul_(p, at::Scalar(1.0 - lr * wd));
    at::_foreach_lerp_(m, g, at::Scalar(1.0 - b1));
    at::_foreach_lerp_(v, at::_foreach_mul(g, g), at::Scalar(1.0 - b2));
    if (lr > 0.0) {
      auto d = at::_foreach_sqrt(v);
      at::_foreach_div_(d, at::Scalar(std::sqrt(bc2)));
      at::_foreach_add_(d, at::Scalar(eps));
      at::_foreach_mul_(d, at::Scalar(-bc1 / lr));
      at::_foreach_addcdiv_(p, m, d);
    }
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}
}
