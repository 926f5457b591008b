// libtorch's own distributed engine (c10d), for data-parallel training (src/dist.rs): a
// TCPStore rendezvous and a Gloo process group (CPU tensors) or an NCCL one (CUDA tensors; made
// by libsvib_nccl.so, src/shim/nccl.cpp) with all-reduce (sum), broadcast, all-gather and
// barrier; every collective waits at most the group's timeout. The wheel ships
// c10d's headers but not Gloo's, which ProcessGroupGloo.hpp includes: they come from Debian's
// libgloo-dev (scripts/setup.sh); only pointers to Gloo types appear in the classes used here,
// and every Gloo symbol is libtorch's own. Each function catches C++ exceptions and returns
// them as text.
#include <ATen/ATen.h>
#include "common.hpp"
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/autograd/custom_function.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using svib_shim::fail;
using svib_shim::list;

namespace {
struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
  std::chrono::milliseconds timeout;
};

// Waits for a collective on the CPU: a timeout, or a peer that went away, throws (for NCCL too,
// so that a lost rank is named in one line; the trainer reads a loss every step, so the CPU
// waits for the GPU once per step anyway, and the collectives per step are few: one gradient
// bucket, one buffer bucket, the logged means).
void wait(const c10::intrusive_ptr<c10d::Work> &w, const Group *g) { w->wait(g->timeout); }

// Sums `t` (contiguous) over the group, in place.
void allreduce_one(at::Tensor &t, const Group *g) {
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  o.timeout = g->timeout;
  std::vector<at::Tensor> one{t};
  wait(g->pg->allreduce(one, o), g);
}

// y = the sum of x over the ranks, differentiable: every rank's loss depends on every rank's x,
// so the gradient of x is the sum of the ranks' gradients of y (the backward is an all-reduce
// too, as in torch.distributed.nn.all_reduce). A collective that fails inside the backward
// cannot return an error through autograd: it names itself on stderr and ends the process.
struct AllReduceSum : public torch::autograd::Function<AllReduceSum> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x, int64_t group) {
    ctx->saved_data["group"] = group;
    auto y = x.clone(at::MemoryFormat::Contiguous);
    allreduce_one(y, reinterpret_cast<const Group *>(group));
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx, torch::autograd::variable_list grads) {
    auto g = reinterpret_cast<const Group *>(ctx->saved_data["group"].toInt());
    auto out = grads[0].clone(at::MemoryFormat::Contiguous);
    try {
      allreduce_one(out, g);
    } catch (const std::exception &e) {
      std::string what(e.what());
      std::fprintf(stderr,
                   "error: rank %d of %d: all-reduce in the backward pass failed, so another rank stopped or cannot be reached (its last checkpoint stays good: "
                   "run the same command again to resume): %s\n",
                   g->pg->getRank(), g->pg->getSize(), what.substr(0, what.find('\n')).c_str());
      std::fflush(stderr);
      std::_Exit(1);  // not exit(): the backend's threads are still running
    }
    return {out, at::Tensor()};
  }
};
}  // namespace

extern "C" {

// svib_nccl_new of libsvib_nccl.so (src/shim/nccl.cpp).
typedef int (*nccl_new_fn)(void *store, int rank, int size, long timeout_ms, int device, void **out, char *err, size_t cap);

// Joins the group of `size` processes whose store is served at host:port (by this process when
// `serve`: rank 0, unless torchrun's agent serves it): over NCCL on
// CUDA device `device` when `nccl_new` is given, else over Gloo, whose transport binds to
// `bind_host` (an address of this machine; empty: the hostname's).
int svib_dist_new(const char *host, int port, int serve, int rank, int size, long timeout_ms, const char *bind_host, void *nccl_new, int device, void **out, char *err, size_t cap) {
  try {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = serve != 0;
    so.numWorkers = size;
    so.waitWorkers = true;
    so.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), so);
    auto store = c10::make_intrusive<c10d::PrefixStore>("svib", tcp);
    c10::intrusive_ptr<c10d::Backend> pg;
    if (nccl_new) {
      void *b = nullptr;
      c10d::Store *base = store.get();
      if (reinterpret_cast<nccl_new_fn>(nccl_new)(base, rank, size, timeout_ms, device, &b, err, cap) != 0) return 1;
      pg = c10::intrusive_ptr<c10d::Backend>::reclaim(static_cast<c10d::Backend *>(b));
    } else {
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      std::string bind(bind_host);
      opts->devices.push_back(bind.empty() ? c10d::ProcessGroupGloo::createDefaultDevice() : c10d::ProcessGroupGloo::createDeviceForHostname(bind));
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, opts);
    }
    *out = new Group{store, pg, timeout};
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}

void svib_dist_free(void *g) { delete static_cast<Group *>(g); }

// Sums each tensor over the group, in place.
int svib_dist_allreduce_sum(void *gp, at::Tensor **ts, size_t n, char *err, size_t cap) {
  try {
    auto g = static_cast<Group *>(gp);
    auto v = list(ts, n);
    for (auto &t : v) allreduce_one(t, g);
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}

// *out = the sum of `x` over the group, with a gradient (see AllReduceSum).
int svib_dist_allreduce_sum_grad(void *gp, at::Tensor *x, at::Tensor **out, char *err, size_t cap) {
  try {
    *out = new at::Tensor(AllReduceSum::apply(*x, reinterpret_cast<int64_t>(gp)));
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}

// Copies each tensor of rank `root` into the same tensors of every other rank, in place (one
// collective per tensor: src/dist.rs hands over one flat bucket per dtype).
int svib_dist_broadcast(void *gp, at::Tensor **ts, size_t n, int root, char *err, size_t cap) {
  try {
    auto g = static_cast<Group *>(gp);
    auto v = list(ts, n);
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.rootTensor = 0;
    o.timeout = g->timeout;
    for (auto &t : v) {
      std::vector<at::Tensor> one{t};
      wait(g->pg->broadcast(one, o), g);
    }
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}

// outs[r] = `input` of rank r (outs: one tensor per rank, shaped as input).
int svib_dist_allgather(void *gp, at::Tensor *input, at::Tensor **outs, size_t n, char *err, size_t cap) {
  try {
    auto g = static_cast<Group *>(gp);
    std::vector<std::vector<at::Tensor>> o{list(outs, n)};
    std::vector<at::Tensor> in{*input};
    c10d::AllgatherOptions opt;
    opt.timeout = g->timeout;
    wait(g->pg->allgather(o, in, opt), g);
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}

int svib_dist_barrier(void *gp, char *err, size_t cap) {
  try {
    auto g = static_cast<Group *>(gp);
    c10d::BarrierOptions o;
    o.timeout = g->timeout;
    wait(g->pg->barrier(o), g);
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, cap);
  }
}
}
