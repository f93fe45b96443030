// The verified v1 forward kernels (kernels/v1/), kept beside the v2 kernels until those have passed the
// GPU suite on hardware (dispatch/cuda_kernel_table.cpp: rows kSm90ForwardV1, kSm80ForwardV1); then this
// file and kernels/v1/ go. What the kernels need beyond the C ABI's own validation (16-byte alignment, index
// ranges, TMA), and one launch on the caller's stream. Nothing here synchronizes or allocates.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "backends/cuda/cuda_backend.hpp"
#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/current_device.hpp"
#include "backends/cuda/kernel_params.hpp"
#include "backends/cuda/kernels/v1/fa2_forward.hpp"
#include "backends/cuda/kernels/v1/fa3_forward.hpp"
#include "backends/cuda/v1_attention.hpp"
#include "core/error.hpp"
#include "core/softmax_scale.hpp"

namespace fa4j::cuda::v1 {
namespace {

constexpr int64_t kVectorBytes = 16;  // every kernel copy is one 16-byte vector
constexpr int64_t kVectorElems = 8;   // ... of a 16-bit dtype
constexpr int64_t kMaxGridYZ = 65535; // heads and batch are grid dimensions y and z
constexpr int64_t kMaxSeqlen = int64_t{1} << 30;  // row indices and causal offsets stay in int

std::string stride_text(const SeqTensor& t) {
    return "(batch " + std::to_string(t.batch_stride) + ", sequence " + std::to_string(t.seq_stride) + ", head " +
           std::to_string(t.head_stride) + " elements)";
}

// The kernels move rows as 16-byte vectors, so the base address and every stride that actually moves
// the pointer (those of dimensions longer than 1) must be multiples of 16 bytes.
std::string vector_alignment_refusal(const char* name, const SeqTensor& t, int64_t batch, int64_t seqlen, int64_t heads) {
    const bool base_ok = reinterpret_cast<uintptr_t>(t.data) % kVectorBytes == 0;
    const bool strides_ok = (batch <= 1 || t.batch_stride % kVectorElems == 0) &&
                            (seqlen <= 1 || t.seq_stride % kVectorElems == 0) &&
                            (heads <= 1 || t.head_stride % kVectorElems == 0);
    if (base_ok && strides_ok) return "";
    return std::string(name) + " is not 16-byte aligned for the CUDA kernels: its first element must sit at a multiple of 16 bytes " +
           "and its batch, sequence and head strides must be multiples of 8 elements; got " +
           (base_ok ? "an aligned address" : "a misaligned address") + " and strides " + stride_text(t);
}

template <class Strided>
void set_strides(const Strided& t, int64_t& batch, int64_t& row, int64_t& head) {
    batch = t.batch_stride;
    row = t.seq_stride;
    head = t.head_stride;
}

// Transitional: the v1 kernels still read fa2::ForwardParams; the v2 ones read kernels::ForwardParams.
fa2::ForwardParams v1_params(const kernels::ForwardParams& k, const ForwardProblem& problem) {
    fa2::ForwardParams p{};
    p.q = problem.q.data;
    p.k = problem.k.data;
    p.v = problem.v.data;
    p.o = problem.out.data;
    p.lse = problem.lse.data;
    set_strides(problem.q, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
    set_strides(problem.k, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
    set_strides(problem.v, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
    set_strides(problem.out, p.o_batch_stride, p.o_row_stride, p.o_head_stride);
    p.lse_batch_stride = problem.lse.batch_stride;
    p.lse_head_stride = problem.lse.head_stride;
    p.lse_row_stride = problem.lse.seq_stride;
    p.batch = k.batch;
    p.seqlen_q = k.seqlen_q;
    p.seqlen_k = k.seqlen_k;
    p.heads_q = k.heads_q;
    p.group_size = k.group_size;
    p.head_dim = k.head_dim;
    p.causal_offset = k.seqlen_k - k.seqlen_q;
    p.scale_log2 = k.scale_log2;
    p.flip_sign = k.flip_sign;
    p.abs_scale = k.abs_scale;
    return p;
}

}  // namespace

std::string forward_tensors_refusal(int /*device*/, const ForwardProblem& problem, bool sm90) {
    const AttentionShape& s = problem.config.shape;
    if (s.heads_q > kMaxGridYZ || s.batch > kMaxGridYZ)
        return "attention forward on CUDA supports at most " + std::to_string(kMaxGridYZ) +
               " query heads and batch entries; got " + std::to_string(s.heads_q) + " and " + std::to_string(s.batch);
    if (s.seqlen_q >= kMaxSeqlen || s.seqlen_k >= kMaxSeqlen)
        return "attention forward on CUDA supports sequences shorter than 2^30";
    if (s.batch == 0 || s.seqlen_q == 0) return "";  // no output element exists
    std::string why = vector_alignment_refusal("q", problem.q, s.batch, s.seqlen_q, s.heads_q);
    if (why.empty()) why = vector_alignment_refusal("out", problem.out, s.batch, s.seqlen_q, s.heads_q);
    if (why.empty() && s.seqlen_k > 0) {  // with no keys the kernel never touches k and v
        why = vector_alignment_refusal("k", problem.k, s.batch, s.seqlen_k, s.heads_kv);
        if (why.empty()) why = vector_alignment_refusal("v", problem.v, s.batch, s.seqlen_k, s.heads_kv);
    }
    if (why.empty() && reinterpret_cast<uintptr_t>(problem.lse.data) % alignof(float) != 0)
        why = "lse is not 4-byte aligned, which the CUDA kernels need for float32";
    const fa2::Elem elem = problem.config.dtype == DType::F16 ? fa2::Elem::F16 : fa2::Elem::BF16;
    if (why.empty() && sm90 &&
        !fa3::tma_describable(v1_params(forward_params(/*device=*/-1, problem), problem), elem))
        why = "the SM90 forward kernel's tensor copies (TMA) cannot describe these strides";
    return why;
}

void attention_forward(int device, const ForwardProblem& problem, bool sm90, int head_dim, fa4j_stream stream) {
    const AttentionShape& s = problem.config.shape;
    const CurrentDevice current(device);
    if (s.batch == 0 || s.seqlen_q == 0) return;  // no output element exists
    const kernels::ForwardParams params = forward_params(device, problem);
    const fa2::ForwardParams p = v1_params(params, problem);
    const fa2::Elem elem = problem.config.dtype == DType::F16 ? fa2::Elem::F16 : fa2::Elem::BF16;
    const bool causal = problem.config.causal;
    const auto native_stream = reinterpret_cast<cudaStream_t>(stream);
    if (sm90) {
        const bool queued = head_dim == 64 ? fa3::run_forward<64>(p, elem, causal, native_stream)
                                                  : fa3::run_forward<128>(p, elem, causal, native_stream);
        if (!queued) fail(FA4J_ERROR_INTERNAL, "the SM90 forward refused tensors it had accepted");
        return;
    }
    if (head_dim == 64) fa2::run_forward<64>(p, elem, causal, native_stream);
    else fa2::run_forward<128>(p, elem, causal, native_stream);
}

}  // namespace fa4j::cuda::v1
