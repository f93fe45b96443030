// The attention merge on CUDA devices (kernels/decode/merge_kernel.cuh): what it needs of the call beyond
// the C ABI's validation, and its launch on the caller's stream. Nothing here synchronizes or allocates.
#include <string>

#include "backends/cuda/cuda_backend.hpp"
#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/current_device.hpp"
#include "backends/cuda/kernels/decode/merge_kernel.cuh"
#include "core/error.hpp"

namespace fa4j::cuda {
namespace {

constexpr int64_t kMaxBlocks = (int64_t{1} << 31) - 1;  // gridDim.x

}  // namespace

std::string merge_tensors_refusal(const MergeProblem& p) {
    if (static_cast<int64_t>(p.states.size()) > kernels::decode::kMaxMergeStates)
        return "the CUDA merge kernel takes at most " + std::to_string(kernels::decode::kMaxMergeStates) +
               " partial results per call; got " + std::to_string(p.states.size()) +
               " (merge them in groups: the merge of merges is the merge)";
    const int64_t rows = p.batch * p.seqlen * p.heads;
    if (rows / kernels::decode::kMergeWarpsPerBlock >= kMaxBlocks)
        return "the CUDA merge kernel supports fewer than 2^33 rows (batch x seqlen x heads)";
    return "";
}

void attention_merge(int device, const MergeProblem& p, fa4j_stream stream) {
    const CurrentDevice current(device);
    const int64_t rows = p.batch * p.seqlen * p.heads;
    if (rows == 0) return;
    kernels::decode::MergeParams params{};
    params.batch = p.batch;
    params.seqlen = p.seqlen;
    params.heads = p.heads;
    params.head_dim = p.head_dim;
    params.count = static_cast<int32_t>(p.states.size());
    for (size_t s = 0; s < p.states.size(); ++s) {
        const MergeState& st = p.states[s];
        params.states[s] = {st.out.data, st.out.batch_stride, st.out.seq_stride, st.out.head_stride,
                            st.lse.data, st.lse.batch_stride, st.lse.head_stride, st.lse.seq_stride, kernels::decode::float_dtype_of(st.dtype)};
    }
    params.out = p.out.data;
    params.out_batch = p.out.batch_stride;
    params.out_seq = p.out.seq_stride;
    params.out_head = p.out.head_stride;
    params.out_dtype = kernels::decode::float_dtype_of(p.out_dtype);
    params.lse = p.lse.data;
    params.lse_batch = p.lse.batch_stride;
    params.lse_head = p.lse.head_stride;
    params.lse_seq = p.lse.seq_stride;
    constexpr int kWarps = kernels::decode::kMergeWarpsPerBlock;
    const auto blocks = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
    kernels::decode::lse_merge_kernel<<<blocks, 32 * kWarps, 0, reinterpret_cast<cudaStream_t>(stream)>>>(params);
    FA4J_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fa4j::cuda
