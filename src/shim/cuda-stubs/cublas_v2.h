// Stand-in for the CUDA library header cublas_v2.h, which ATen/cuda/CUDAContextLight.h includes on the way
// to ProcessGroupNCCL.hpp: src/shim/nccl.cpp uses nothing of that library, so only the handle type
// that the header declarations name is declared here (as the real header does), and the
// library's own wheel (hundreds of MB) is not needed to build svib.
#pragma once
typedef struct cublasContext *cublasHandle_t;
typedef enum { CUBLAS_STATUS_SUCCESS = 0 } cublasStatus_t;
