// FA4J_HOST_DEVICE: marks the plain inline functions of core/ that CUDA device code calls too
// (core/score_mask.hpp, core/kv_cache.hpp), so that every backend shares one definition of each rule.
#pragma once

#if defined(__CUDACC__)
#define FA4J_HOST_DEVICE __host__ __device__
#else
#define FA4J_HOST_DEVICE
#endif
