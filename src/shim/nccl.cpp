// The NCCL process group of c10d (ProcessGroupNCCL, in libtorch_cuda), for data-parallel
// training on GPUs. Compiled by build.rs into a shared library of its own, libsvib_nccl.so,
// which the binary carries and loads only when a GPU rank joins a group (src/dist.rs), after
// libtorch_cuda.so is loaded with RTLD_GLOBAL: its undefined symbols are libtorch's and
// NCCL's, resolved then, so the plain binary keeps starting on machines without CUDA.
// The group is handed back as a c10d::Backend, the class dist.cpp drives for Gloo as well.
#include <ATen/ATen.h>
#include "common.hpp"
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <chrono>

// ProcessGroupNCCL's layout depends on the NCCL headers: they must be the version libtorch was
// built with (scripts/versions.sh, NCCL_SPEC; torch 2.11.0 requires 2.28.9).
static_assert(NCCL_VERSION_CODE == NCCL_VERSION(2, 28, 9), "NCCL headers of another version than torch 2.11.0's (scripts/versions.sh)");

extern "C" {

// *out = a new c10d::Backend* (a ProcessGroupNCCL of `size` ranks over `store`, a c10d::Store*
// whose reference the caller keeps) bound to CUDA device `device`, which also becomes this thread's current device.
// The caller owns one reference of *out (intrusive_ptr::reclaim).
int svib_nccl_new(void *store, int rank, int size, long timeout_ms, int device, void **out, char *err, size_t cap) {
  try {
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    auto st = c10::intrusive_ptr<c10d::Store>::reclaim_copy(static_cast<c10d::Store *>(store));
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(st, rank, size, opts);
    pg->setBoundDeviceId(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)));
    c10d::Backend *b = pg.release();
    *out = b;
    return 0;
  } catch (const std::exception &e) {
    return svib_shim::fail(e.what(), err, cap);
  }
}
}
