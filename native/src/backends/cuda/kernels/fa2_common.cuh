// Transitional forwarding header: the sm_80 primitives moved to sm80/primitives.cuh and the online
// softmax to common/online_softmax.cuh. This keeps the old path and the old fa4j::cuda::fa2 names for
// the kernels that still include it (the Hopper forward); remove it once nothing includes it.
#pragma once

#include "backends/cuda/kernels/common/online_softmax.cuh"
#include "backends/cuda/kernels/sm80/primitives.cuh"

namespace fa4j::cuda::fa2 {

using sm80::ceil_div;
using sm80::cp_async_16;
using sm80::cp_async_commit;
using sm80::cp_async_wait;
using sm80::kChunkBytes;
using sm80::kChunkElems;
using sm80::kSwizzleChunks;
using sm80::kWarpSize;
using sm80::LdmatrixLane;
using sm80::ldmatrix_x4;
using sm80::ldmatrix_x4_trans;
using sm80::Mma;
using sm80::quad_max;
using sm80::quad_sum;
using sm80::smem_address;
using sm80::SwizzledTile;

using kernels::fast_exp2;
using kernels::row_logsumexp;
using kernels::softmax_probability;
using kernels::softmax_reference;
using kernels::softmax_rescale;

}  // namespace fa4j::cuda::fa2
