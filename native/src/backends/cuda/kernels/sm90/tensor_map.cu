#include "backends/cuda/kernels/sm90/tensor_map.hpp"

#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstdint>
#include <mutex>

#include "backends/cuda/kernels/sm90/primitives.cuh"

namespace fa4j::cuda::sm90 {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
    static PFN_cuTensorMapEncodeTiled_v12000 encode = nullptr;
    static std::once_flag once;
    std::call_once(once, [] {
        void* fn = nullptr;
        cudaDriverEntryPointQueryResult found{};
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) ==
                cudaSuccess &&
            found == cudaDriverEntryPointSuccess)
            encode = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
        else
            (void)cudaGetLastError();
    });
    return encode;
}

// A TMA descriptor of a [batch, rows, heads, head_dim] view (strides in elements, head_dim contiguous)
// read in boxes of 64 columns x box_rows rows, 128-byte swizzled. Head and batch dimensions with stride 0
// collapse to extent 1 (their multiplier becomes 0). False if TMA cannot describe the view.
bool make_tensor_map(CUtensorMap* map, CUtensorMapDataType type, const void* base, int head_dim, int64_t rows,
                     int heads, int batch, int64_t row_stride, int64_t head_stride, int64_t batch_stride, int box_rows,
                     int& head_mul, int& batch_mul) {
    const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
    if (encode == nullptr) return false;
    constexpr int64_t kElem = 2;
    constexpr int64_t kMaxStride = int64_t{1} << 40;
    const auto stride_ok = [&](int64_t stride) { return stride > 0 && (stride * kElem) % 16 == 0 && stride * kElem < kMaxStride; };
    // A dimension of extent 1 gets a harmless stride; a broadcast one (stride 0) becomes extent 1.
    head_mul = 1;
    batch_mul = 1;
    if (heads > 1 && head_stride == 0) heads = 1, head_mul = 0;
    if (batch > 1 && batch_stride == 0) batch = 1, batch_mul = 0;
    if (rows < 1) rows = 1;  // no key: the kernel loads nothing, but the descriptor must be valid
    if (rows == 1) row_stride = 8;
    if (heads == 1) head_stride = 8;
    if (batch == 1) batch_stride = 8;
    if (!stride_ok(row_stride) || !stride_ok(head_stride) || !stride_ok(batch_stride)) return false;
    const cuuint64_t dims[4] = {static_cast<cuuint64_t>(head_dim), static_cast<cuuint64_t>(rows),
                                static_cast<cuuint64_t>(heads), static_cast<cuuint64_t>(batch)};
    const cuuint64_t strides[3] = {static_cast<cuuint64_t>(row_stride * kElem), static_cast<cuuint64_t>(head_stride * kElem),
                                   static_cast<cuuint64_t>(batch_stride * kElem)};
    const cuuint32_t box[4] = {static_cast<cuuint32_t>(kBlockCols), static_cast<cuuint32_t>(box_rows), 1, 1};
    const cuuint32_t element_strides[4] = {1, 1, 1, 1};
    const CUresult result = encode(map, type, 4, const_cast<void*>(base), dims, strides, box, element_strides,
                                   CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                   CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return result == CUDA_SUCCESS;
}

}  // namespace

bool describe_forward_tensors(const kernels::ForwardParams& p, int box_m, int box_n, ForwardTensorMaps& m) {
    const CUtensorMapDataType type =
        p.elem == kernels::ElemType::F16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
    const bool varlen = p.seqlens.varlen();
    const int batch = varlen ? 1 : p.batch;  // varlen: all tokens are one packed "batch entry"
    const int64_t rows_k = described_rows_k(p);
    if (!make_tensor_map(&m.q, type, p.q.data, p.head_dim, described_rows_q(p), p.heads_q, batch, p.q.row_stride,
                         p.q.head_stride, p.q.batch_stride, box_m, m.q_head_mul, m.q_batch_mul))
        return false;
    if (rows_k == 0) {  // nothing is loaded but Q: k and v (maybe null) get q's descriptor
        m.k = m.v = m.q;
        m.k_head_mul = m.k_batch_mul = m.v_head_mul = m.v_batch_mul = 0;
    } else if (!make_tensor_map(&m.k, type, p.k.data, p.head_dim, rows_k, p.heads_kv, batch, p.k.row_stride,
                                p.k.head_stride, p.k.batch_stride, box_n, m.k_head_mul, m.k_batch_mul) ||
               !make_tensor_map(&m.v, type, p.v.data, p.head_dim, rows_k, p.heads_kv, batch, p.v.row_stride,
                                p.v.head_stride, p.v.batch_stride, box_n, m.v_head_mul, m.v_batch_mul)) {
        return false;
    }
    if (varlen) m.q_batch_mul = m.k_batch_mul = m.v_batch_mul = 0;
    return true;
}

bool tma_describable(const kernels::ForwardParams& p) {
    if (described_rows_q(p) == 0) return true;  // nothing is loaded (no output row exists)
    ForwardTensorMaps maps;
    constexpr int kBoxRows = 64;
    return describe_forward_tensors(p, kBoxRows, kBoxRows, maps);
}

}  // namespace fa4j::cuda::sm90
