// The verified v1 backward (kernels/v1/fa2_backward_kernel.cuh), kept beside the v2 backward until that
// has passed the GPU suite on hardware (dispatch/cuda_kernel_table.cpp: row kSm80BackwardV1); then this file
// and kernels/v1/ go. Float16 and bfloat16, head dims up to 128 (padded to 64 or 128), causal or not,
// GQA/MQA, any strides.
//
// Workspace: the kernels need, per call, an fp32 dQ accumulator [batch, heads_q, seqlen_q_pad,
// head_dim_pad] plus two fp32 row vectors (lse and D = rowsum(dO∘O)). It comes from the library's
// stream-ordered pool (memory_pool.cu), allocated and freed on the call's stream around the kernels: after
// the first steps the pool serves it from its cache, and nothing synchronizes.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "backends/cuda/cuda_backend.hpp"
#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/current_device.hpp"
#include "backends/cuda/kernels/v1/fa2_backward_params.cuh"
#include "backends/cuda/v1_attention.hpp"
#include "core/error.hpp"

namespace fa4j::cuda::v1 {
namespace {

bool vec16_ok(const SeqTensor& t) {
    return reinterpret_cast<uintptr_t>(t.data) % 16 == 0 && t.batch_stride % 8 == 0 && t.seq_stride % 8 == 0 &&
           t.head_stride % 8 == 0;
}

fa2bwd::SeqPtr seq_ptr(const SeqTensor& t) { return {t.data, t.batch_stride, t.seq_stride, t.head_stride}; }

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

}  // namespace

std::string backward_tensors_refusal(int device, const BackwardProblem& problem) {
    (void)device;
    const AttentionShape& s = problem.config.shape;
    constexpr int64_t kMaxGrid = 65535;  // grid y (kv heads) and z (batch)
    constexpr int64_t kMaxSeq = int64_t(1) << 30;
    if (s.batch > kMaxGrid || s.heads_kv > kMaxGrid || s.seqlen_q > kMaxSeq || s.seqlen_k > kMaxSeq ||
        s.heads_q > kMaxSeq)
        return "attention backward on CUDA supports batch and heads_kv up to 65535 and seqlen and heads_q up to 2^30";
    return "";
}

void attention_backward(int device, const BackwardProblem& problem, int head_dim, fa4j_stream stream) {
    const AttentionConfig& config = problem.config;
    const AttentionShape& s = config.shape;
    const CurrentDevice current(device);
    if (s.batch == 0) return;  // every tensor is empty
    const auto native_stream = reinterpret_cast<cudaStream_t>(stream);

    const int head_dim_pad = head_dim;
    const int64_t seqlen_q_pad = (s.seqlen_q + fa2bwd::kRowPadding - 1) / fa2bwd::kRowPadding * fa2bwd::kRowPadding;
    const auto rows = static_cast<size_t>(s.batch * s.heads_q * seqlen_q_pad);
    const size_t accum_bytes = align_up(rows * static_cast<size_t>(head_dim_pad) * sizeof(float), 256);
    const size_t vector_bytes = align_up(rows * sizeof(float), 256);

    fa2bwd::Params p{};
    p.q = seq_ptr(problem.q);
    p.k = seq_ptr(problem.k);
    p.v = seq_ptr(problem.v);
    p.out = seq_ptr(problem.out);
    p.dout = seq_ptr(problem.dout);
    p.dq = seq_ptr(problem.dq);
    p.dk = seq_ptr(problem.dk);
    p.dv = seq_ptr(problem.dv);
    p.lse = problem.lse.data;
    p.lse_batch_stride = problem.lse.batch_stride;
    p.lse_head_stride = problem.lse.head_stride;
    p.lse_seq_stride = problem.lse.seq_stride;
    p.batch = static_cast<int>(s.batch);
    p.seqlen_q = static_cast<int>(s.seqlen_q);
    p.seqlen_k = static_cast<int>(s.seqlen_k);
    p.heads_q = static_cast<int>(s.heads_q);
    p.heads_kv = static_cast<int>(s.heads_kv);
    p.group = static_cast<int>(s.group_size());
    p.head_dim = static_cast<int>(s.head_dim);
    p.seqlen_q_pad = static_cast<int>(seqlen_q_pad);
    p.scale = config.softmax_scale;
    p.vec16 = true;
    for (const SeqTensor* t : {&problem.q, &problem.k, &problem.v, &problem.out, &problem.dout, &problem.dq,
                               &problem.dk, &problem.dv})
        p.vec16 = p.vec16 && vec16_ok(*t);

    void* workspace = pool_allocate(device, accum_bytes + 2 * vector_bytes, stream);
    auto* base = static_cast<unsigned char*>(workspace);
    p.dq_accum = reinterpret_cast<float*>(base);
    p.lse_rows = reinterpret_cast<float*>(base + accum_bytes);
    p.delta = reinterpret_cast<float*>(base + accum_bytes + vector_bytes);

    // Freed in the stream's order after the kernels, also when queueing them failed.
    struct FreeAfterKernels {
        void* pointer;
        cudaStream_t stream;
        ~FreeAfterKernels() { static_cast<void>(cudaFreeAsync(pointer, stream)); }
    } free_after_kernels{workspace, native_stream};

    const bool bf16 = config.dtype == DType::BF16;
    if (head_dim_pad == 64) fa2bwd::run_backward<64>(p, bf16, config.causal, native_stream);
    else fa2bwd::run_backward<128>(p, bf16, config.causal, native_stream);
}

}  // namespace fa4j::cuda::v1
