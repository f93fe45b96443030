// KV-cache attention on CUDA devices (kernels/decode/decode_kernel.cuh): what it needs of the call beyond
// the C ABI's validation, the split-KV plan, and the launches on the caller's stream: the append, the
// attention over each state's keys, and (with several states) the merge of their partial results
// (attention_merge_cuda.cu). The partial results live in pool memory freed in the stream's order.
// Nothing here synchronizes.
#include <algorithm>
#include <string>

#include "backends/cuda/cuda_backend.hpp"
#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/current_device.hpp"
#include "backends/cuda/kernel_params.hpp"
#include "backends/cuda/kernels/decode/decode_kernel.cuh"
#include "backends/cuda/kernels/decode/merge_params.hpp"
#include "backends/cuda/metadata_errors.hpp"
#include "core/decode_split.hpp"
#include "core/error.hpp"

namespace fa4j::cuda {
namespace {

namespace dk = kernels::decode;

constexpr int64_t kMaxGridYZ = 65535;
constexpr int64_t kMaxGridX = (int64_t{1} << 31) - 1;
constexpr int kMaxOwnSplits = dk::kMaxMergeStates / 2;  // a prefix gets the other half
constexpr int64_t kMinKeysPerSplit = 256;
// Every head dim up to 256 fits the opt-in shared memory of every GPU from sm_80 (99 KB on 8.6/8.9/12.0).
static_assert(dk::decode_smem_bytes(256) <= 99 * 1024, "the decode tiles must fit every sm_80+ GPU");

int64_t row_chunks(const AttentionShape& s) {
    return (s.seqlen_q * s.group_size() + dk::kDecodeRows - 1) / dk::kDecodeRows;
}

dk::DecodeTensor decode_tensor(const SeqTensor& t) { return {t.data, t.batch_stride, t.seq_stride, t.head_stride}; }

// Splits of `keys` keys for `units` blocks per split on this device (core/decode_split.hpp's heuristic).
int plan_splits(int device, int64_t units, int64_t keys) {
    int sms = 0;
    FA4J_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return decode_num_splits(SplitHeuristicInput{units, keys, int64_t{sms} * 4, kMinKeysPerSplit, kMaxOwnSplits});
}

}  // namespace

std::string decode_tensors_refusal(const DecodeProblem& p) {
    const AttentionShape& s = p.config.shape;
    if (s.batch > kMaxGridYZ) return "the CUDA decode kernel supports batches of up to 65535 sequences";
    if (s.heads_kv * row_chunks(s) > kMaxGridYZ)
        return "the CUDA decode kernel supports up to 65535 (kv heads x chunks of 16 query rows) per sequence";
    if (s.seqlen_q * s.group_size() >= (int64_t{1} << 30) || p.seqlen_new >= (int64_t{1} << 30))
        return "the CUDA decode kernel supports fewer than 2^30 query rows and new tokens per sequence";
    if (s.batch * p.seqlen_new * s.heads_kv > kMaxGridX)
        return "the CUDA decode kernel appends fewer than 2^31 rows (batch x new tokens x kv heads) per call";
    if (p.num_splits > kMaxOwnSplits)
        return "the CUDA decode kernel merges at most " + std::to_string(kMaxOwnSplits) + " splits of each key range; num_splits " +
               std::to_string(p.num_splits) + " was forced";
    return "";
}

void attention_decode(int device, const DecodeProblem& p, fa4j_stream stream) {
    const CurrentDevice current(device);
    const AttentionShape& s = p.config.shape;
    const auto native_stream = reinterpret_cast<cudaStream_t>(stream);
    dk::DecodeParams params{};
    params.dtype = dk::float_dtype_of(p.config.dtype);
    params.batch = static_cast<int>(s.batch);
    params.seqlen_q = static_cast<int>(s.seqlen_q);
    params.heads_q = static_cast<int>(s.heads_q);
    params.heads_kv = static_cast<int>(s.heads_kv);
    params.group_size = static_cast<int>(s.group_size());
    params.head_dim = static_cast<int>(s.head_dim);
    params.q = decode_tensor(p.q);
    params.cache = p.cache;
    params.k_cache = p.k_cache;
    params.v_cache = p.v_cache;
    params.cache_seqlens = p.cache_seqlens;
    params.seqlen_new = static_cast<int>(p.seqlen_new);
    if (p.seqlen_new > 0) {
        params.k_new = decode_tensor(p.k_new);
        params.v_new = decode_tensor(p.v_new);
    }
    if (p.has_prefix) {
        params.prefix_k = decode_tensor(p.prefix_k);
        params.prefix_v = decode_tensor(p.prefix_v);
        params.prefix_len = p.prefix_len;
    }
    params.softmax_scale = p.config.softmax_scale;
    params.score = score_params(p.config);
    params.metadata_error = metadata_error_flag(device);
    params.out = p.out.data;
    params.out_dtype = dk::float_dtype_of(p.out_dtype);
    params.out_batch = p.out.batch_stride;
    params.out_seq = p.out.seq_stride;
    params.out_head = p.out.head_stride;
    params.lse = p.lse.data;
    params.lse_batch = p.lse.batch_stride;
    params.lse_head = p.lse.head_stride;
    params.lse_seq = p.lse.seq_stride;

    if (p.seqlen_new > 0 && s.batch > 0) {
        const auto blocks = static_cast<unsigned>(s.batch * p.seqlen_new * s.heads_kv);
        dk::decode_append_kernel<<<blocks, dk::kDecodeThreads, 0, native_stream>>>(params);
        FA4J_CUDA_CHECK(cudaGetLastError());
    }
    const int64_t rows = s.batch * s.heads_q * s.seqlen_q;
    if (rows == 0) return;

    // The states: splits of the prefix, then of each sequence's own keys (the cache lengths are on the
    // device: the plan assumes full caches, and splits past a sequence's keys are empty, weight 0).
    params.row_chunks = static_cast<int>(row_chunks(s));
    const int64_t units = s.batch * s.heads_kv * params.row_chunks;
    params.own_splits = p.num_splits > 0 ? p.num_splits : plan_splits(device, units, s.seqlen_k);
    params.prefix_splits = !p.has_prefix ? 0 : p.num_splits > 0 ? p.num_splits : plan_splits(device, units, p.prefix_len);
    const int states = params.states();

    void* workspace = nullptr;
    const size_t d = static_cast<size_t>(s.head_dim), state_rows = static_cast<size_t>(rows);
    const size_t out_bytes = static_cast<size_t>(states) * state_rows * d * sizeof(float);
    if (!params.direct()) {
        workspace = pool_allocate(device, out_bytes + static_cast<size_t>(states) * state_rows * sizeof(float), stream);
        params.part_out = static_cast<float*>(workspace);
        params.part_lse = reinterpret_cast<float*>(static_cast<unsigned char*>(workspace) + out_bytes);
    }
    // Freed in the stream's order after the kernels, also when queueing them failed.
    struct FreeAfterKernels {
        void* pointer;
        cudaStream_t stream;
        ~FreeAfterKernels() {
            if (pointer != nullptr) static_cast<void>(cudaFreeAsync(pointer, stream));
        }
    } free_after_kernels{workspace, native_stream};

    const int64_t smem = dk::decode_smem_bytes(s.head_dim);
    if (smem > 48 * 1024)
        FA4J_CUDA_CHECK(cudaFuncSetAttribute(dk::decode_attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(smem)));
    const dim3 grid(static_cast<unsigned>(states), static_cast<unsigned>(s.heads_kv * params.row_chunks),
                    static_cast<unsigned>(s.batch));
    dk::decode_attention_kernel<<<grid, dk::kDecodeThreads, static_cast<size_t>(smem), native_stream>>>(params);
    FA4J_CUDA_CHECK(cudaGetLastError());
    if (params.direct()) return;

    // The partial results as merge states: [state][batch][heads_q][seqlen_q](head_dim).
    MergeProblem merge{s.batch, s.seqlen_q, s.heads_q, s.head_dim, {}, p.out, p.out_dtype, p.lse, 0};
    const int64_t per_state = rows;
    for (int st = 0; st < states; ++st) {
        float* out = params.part_out + st * per_state * s.head_dim;
        float* lse = params.part_lse + st * per_state;
        merge.states.push_back(MergeState{SeqTensor{out, s.heads_q * s.seqlen_q * s.head_dim, s.head_dim, s.seqlen_q * s.head_dim},
                                          DType::F32, LseTensor{lse, s.heads_q * s.seqlen_q, s.seqlen_q, 1}});
    }
    attention_merge(device, merge, stream);
}

}  // namespace fa4j::cuda
