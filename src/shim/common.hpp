// Helpers shared by the shim's C++ files.
#pragma once
#include <ATen/ATen.h>
#include <cstring>
#include <vector>

namespace svib_shim {
// Copies `what` into buf (cap bytes, NUL-terminated) and returns 1.
inline int fail(const char *what, char *buf, size_t cap) {
  if (cap > 0) {
    std::strncpy(buf, what, cap - 1);
    buf[cap - 1] = '\0';
  }
  return 1;
}

// The tensors behind an array of at::Tensor* (as Rust hands them over).
inline std::vector<at::Tensor> list(at::Tensor **ts, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; i++) v.push_back(*ts[i]);
  return v;
}
}  // namespace svib_shim
