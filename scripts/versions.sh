# The one place where the libtorch version is pinned (tch 0.24 expects exactly this).
TORCH_VERSION=2.11.0
# libtorch_cpu from the PyPI wheel needs libcudart/libcupti at load time even on CPU; crt and
# cccl hold headers that cuda_runtime.h includes (for the NCCL shim, src/shim/nccl.cpp).
CUDA_TOOLKIT_SPEC="cuda-toolkit[cudart,cupti,crt,cccl]==13.0.2"
# torchvision release that matches torch 2.11.0 (the PyTorch reference of `svib bench` only).
TORCHVISION_VERSION=0.26.0
# lightly, the peer implementation of bench/peer (DINO/SimCLR losses for parity fixtures, DINO runs).
LIGHTLY_VERSION=1.6.0
# NCCL 2.28.9, the version torch 2.11.0 requires: only its headers, to compile the NCCL part of
# the distributed shim (src/shim/nccl.cpp); at run time libtorch_cuda brings its own libnccl.
NCCL_SPEC="nvidia-nccl-cu13==2.28.9"
