# The one place where the libtorch version is pinned (tch 0.24 expects exactly this).
TORCH_VERSION=2.11.0
# libtorch_cpu from the PyPI wheel needs libcudart/libcupti at load time even on CPU.
CUDA_TOOLKIT_SPEC="cuda-toolkit[cudart,cupti]==13.0.2"
# torchvision release that matches torch 2.11.0 (the PyTorch reference of `svib bench` only).
TORCHVISION_VERSION=0.26.0
# lightly, the peer implementation of bench/peer (DINO/SimCLR losses for parity fixtures, DINO runs).
LIGHTLY_VERSION=1.6.0
