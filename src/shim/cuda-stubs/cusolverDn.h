// Stand-in for the CUDA library header cusolverDn.h, which ATen/cuda/CUDAContextLight.h includes on the way
// to ProcessGroupNCCL.hpp: src/shim/nccl.cpp uses nothing of that library, so only the handle type
// that the header declarations name is declared here (as the real header does), and the
// library's own wheel (hundreds of MB) is not needed to build svib.
#pragma once
typedef struct cusolverDnContext *cusolverDnHandle_t;
