// Hopper forward kernels for head dims 8 to 64 (fp16 and bf16, causal and not); head dims below 64 run
// with the columns past their end zero-filled by TMA.
#include "backends/cuda/kernels/v1/fa3_forward_kernel.cuh"

namespace fa4j::cuda::v1::fa3 {

// 192 query rows (three consumer warpgroups of 64, 160 registers each: S 64, P 32, O 32), 128 keys per
// step; K and V tiles are 16 KB each, so four stages (128 KB) plus Q (24 KB) fit.
using Hdim64Tile = Fa3Tile</*kHeadDim=*/64, /*kBlockN=*/128, /*kConsumers=*/3, /*kStages=*/4, /*kPingpong=*/true>;

template <>
bool run_forward<64>(const ForwardParams& params, Elem elem, bool causal, cudaStream_t stream) {
    return dispatch_forward<Hdim64Tile>(params, elem, causal, stream);
}

bool tma_describable(const ForwardParams& p, Elem elem) {
    const CUtensorMapDataType type = elem == Elem::F16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
    const int heads_kv = p.heads_q / p.group_size;
    CUtensorMap map;
    int head_mul = 0, batch_mul = 0;
    constexpr int kBoxRows = 64;
    if (!make_tensor_map(&map, type, p.q, p.head_dim, p.seqlen_q, p.heads_q, p.batch, p.q_row_stride, p.q_head_stride,
                         p.q_batch_stride, kBoxRows, head_mul, batch_mul))
        return false;
    if (p.seqlen_k == 0) return true;
    return make_tensor_map(&map, type, p.k, p.head_dim, p.seqlen_k, heads_kv, p.batch, p.k_row_stride, p.k_head_stride,
                           p.k_batch_stride, kBoxRows, head_mul, batch_mul) &&
           make_tensor_map(&map, type, p.v, p.head_dim, p.seqlen_k, heads_kv, p.batch, p.v_row_stride, p.v_head_stride,
                           p.v_batch_stride, kBoxRows, head_mul, batch_mul);
}

}  // namespace fa4j::cuda::v1::fa3
