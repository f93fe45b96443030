// Attention backward on CUDA devices: FlashAttention-2 (kernels/fa2_backward_kernel.cuh) for float16 and
// bfloat16, head dims up to 128 (padded to 64 or 128), causal or not, GQA/MQA, any strides.
//
// Workspace policy. The kernels need, per call, an fp32 dQ accumulator [batch, heads_q, seqlen_q_pad,
// head_dim_pad] plus two fp32 row vectors (lse and D = rowsum(dO∘O)). Nothing is allocated in the
// steady state: each (device, stream) pair keeps one cached buffer that only grows. Growing frees the old
// buffer with cudaFreeAsync and takes the new one with cudaMallocAsync, both ordered on the owning
// stream, so work already queued on that stream finishes with the old buffer before it is reused and no
// device-wide synchronisation is needed. Streams are told apart by cudaStreamGetId (unique for the
// process's lifetime), so a new stream that reuses a destroyed one's handle never inherits its buffer.
// Lifetime: a buffer lives until it grows, its stream is destroyed through fa4j_cuda_stream_destroy
// (release_workspace, below), or the process exits (the default stream's). A per-entry mutex is held while
// the call queues its kernels, so threads sharing a stream never see a buffer freed under them.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "backends/cuda/cuda_backend.hpp"
#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/current_device.hpp"
#include "backends/cuda/kernels/fa2_backward_params.cuh"
#include "core/error.hpp"

namespace fa4j::cuda {
namespace {

struct Workspace {
    std::mutex mutex;  // held from sizing the buffer until the last kernel that uses it is queued
    void* data = nullptr;
    size_t bytes = 0;
};

using WorkspaceKey = std::pair<int, unsigned long long>;  // (device, cudaStreamGetId)

std::mutex cache_mutex;
// Never destroyed: freeing device memory from a static destructor could run after the driver is gone.
auto* const cache = new std::map<WorkspaceKey, std::unique_ptr<Workspace>>();

WorkspaceKey key_of(int device, cudaStream_t stream) {
    unsigned long long stream_id = 0;
    FA4J_CUDA_CHECK(cudaStreamGetId(stream, &stream_id));
    return {device, stream_id};
}

Workspace& workspace_for(int device, cudaStream_t stream) {
    const WorkspaceKey key = key_of(device, stream);
    std::lock_guard<std::mutex> lock(cache_mutex);
    std::unique_ptr<Workspace>& entry = (*cache)[key];
    if (!entry) entry = std::make_unique<Workspace>();
    return *entry;
}

// Makes the buffer hold at least `bytes`; the caller holds ws.mutex.
void reserve(Workspace& ws, size_t bytes, cudaStream_t stream) {
    if (ws.bytes >= bytes) return;
    constexpr size_t kGranule = size_t(2) << 20;  // grow in 2 MiB steps, never by less than half the old size
    size_t grown = std::max(bytes, ws.bytes + ws.bytes / 2);
    grown = (grown + kGranule - 1) / kGranule * kGranule;
    if (ws.data != nullptr) {
        void* old = ws.data;
        ws.data = nullptr;
        ws.bytes = 0;
        FA4J_CUDA_CHECK(cudaFreeAsync(old, stream));
    }
    FA4J_CUDA_CHECK(cudaMallocAsync(&ws.data, grown, stream));
    ws.bytes = grown;
}

bool vec16_ok(const SeqTensor& t) {
    return reinterpret_cast<uintptr_t>(t.data) % 16 == 0 && t.batch_stride % 8 == 0 && t.seq_stride % 8 == 0 &&
           t.head_stride % 8 == 0;
}

fa2bwd::SeqPtr seq_ptr(const SeqTensor& t) { return {t.data, t.batch_stride, t.seq_stride, t.head_stride}; }

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

}  // namespace

void release_workspace(int device, fa4j_stream stream) {
    const auto native_stream = reinterpret_cast<cudaStream_t>(stream);
    const WorkspaceKey key = key_of(device, native_stream);
    std::unique_ptr<Workspace> released;
    {
        std::lock_guard<std::mutex> lock(cache_mutex);
        auto it = cache->find(key);
        if (it == cache->end()) return;
        released = std::move(it->second);
        cache->erase(it);
    }
    // Waits for a call on another thread that is still queueing work with this buffer.
    std::lock_guard<std::mutex> lock(released->mutex);
    if (released->data != nullptr) FA4J_CUDA_CHECK(cudaFreeAsync(released->data, native_stream));
}

void attention_backward(int device, const BackwardProblem& problem, fa4j_stream stream) {
    const AttentionConfig& config = problem.config;
    const AttentionShape& s = config.shape;
    if (config.dtype == DType::F32)
        fail(FA4J_ERROR_UNSUPPORTED,
             "attention backward on CUDA supports float16 and bfloat16 tensors, not float32 (convert the inputs to a "
             "16-bit dtype, or use CPU tensors for float32)");
    if (s.head_dim > 128)
        fail(FA4J_ERROR_UNSUPPORTED, "attention backward on CUDA supports head_dim up to 128, got " +
                                         std::to_string(s.head_dim) + " (use CPU tensors for larger head dims)");
    constexpr int64_t kMaxGrid = 65535;  // grid y (kv heads) and z (batch)
    constexpr int64_t kMaxSeq = int64_t(1) << 30;
    if (s.batch > kMaxGrid || s.heads_kv > kMaxGrid || s.seqlen_q > kMaxSeq || s.seqlen_k > kMaxSeq ||
        s.heads_q > kMaxSeq)
        fail(FA4J_ERROR_UNSUPPORTED, "attention backward on CUDA supports batch and heads_kv up to 65535 and "
                                     "seqlen and heads_q up to 2^30");
    const CurrentDevice current(device);
    if (s.batch == 0) return;  // every tensor is empty
    const auto native_stream = reinterpret_cast<cudaStream_t>(stream);

    const int head_dim_pad = s.head_dim <= 64 ? 64 : 128;
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

    Workspace& ws = workspace_for(device, native_stream);
    std::lock_guard<std::mutex> lock(ws.mutex);
    reserve(ws, accum_bytes + 2 * vector_bytes, native_stream);
    auto* base = static_cast<unsigned char*>(ws.data);
    p.dq_accum = reinterpret_cast<float*>(base);
    p.lse_rows = reinterpret_cast<float*>(base + accum_bytes);
    p.delta = reinterpret_cast<float*>(base + accum_bytes + vector_bytes);

    const bool bf16 = config.dtype == DType::BF16;
    if (head_dim_pad == 64) fa2bwd::run_backward<64>(p, bf16, config.causal, native_stream);
    else fa2bwd::run_backward<128>(p, bf16, config.causal, native_stream);
}

}  // namespace fa4j::cuda
