// Stand-in for the CUDA library header cusolver_common.h, which ATen/cuda/Exceptions.h includes on
// the way to ProcessGroupNCCL.hpp: only the status type its declarations name (see cusparse.h).
#pragma once
typedef enum { CUSOLVER_STATUS_SUCCESS = 0, CUSOLVER_STATUS_INVALID_VALUE = 3 } cusolverStatus_t;
