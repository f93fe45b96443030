// Attention forward on CUDA devices: checks what the kernels need beyond the C ABI's own validation
// (dtype, head dim, 16-byte alignment, index ranges), then queues one kernel launch on the caller's
// stream: the Hopper (wgmma + TMA) kernel on compute capability 9.0 devices, the FlashAttention-2
// (mma.sync) kernel elsewhere. Nothing here synchronizes or allocates. The kernels live in kernels/.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "backends/cuda/cuda_backend.hpp"
#include "backends/cuda/cuda_check.cuh"
#include "backends/cuda/current_device.hpp"
#include "backends/cuda/feature_support.hpp"
#include "backends/cuda/kernels/fa2_forward.hpp"
#include "backends/cuda/kernels/fa3_forward.hpp"
#include "core/error.hpp"
#include "core/softmax_scale.hpp"

namespace fa4j::cuda {
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
void require_vector_aligned(const char* name, const SeqTensor& t, int64_t batch, int64_t seqlen, int64_t heads) {
    const bool base_ok = reinterpret_cast<uintptr_t>(t.data) % kVectorBytes == 0;
    const bool strides_ok = (batch <= 1 || t.batch_stride % kVectorElems == 0) &&
                            (seqlen <= 1 || t.seq_stride % kVectorElems == 0) &&
                            (heads <= 1 || t.head_stride % kVectorElems == 0);
    if (base_ok && strides_ok) return;
    fail(FA4J_ERROR_UNSUPPORTED,
         std::string(name) + " is not 16-byte aligned for the CUDA kernels: its first element must sit at a multiple of 16 bytes " +
             "and its batch, sequence and head strides must be multiples of 8 elements; got " +
             (base_ok ? "an aligned address" : "a misaligned address") + " and strides " + stride_text(t));
}

// Whether `device` is a Hopper part (compute capability 9.0, where the sm_90a kernels run), asked once
// per device and cached.
constexpr int kCachedDevices = 64;
std::atomic<int> hopper_cache[kCachedDevices];  // 0: not asked yet, 1: Hopper, 2: not

bool is_hopper(int device) {
    const bool cacheable = device >= 0 && device < kCachedDevices;
    if (cacheable) {
        const int known = hopper_cache[device].load(std::memory_order_relaxed);
        if (known != 0) return known == 1;
    }
    int major = 0, minor = 0;
    FA4J_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    FA4J_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    const bool hopper = major == 9 && minor == 0;
    if (cacheable) hopper_cache[device].store(hopper ? 1 : 2, std::memory_order_relaxed);
    return hopper;
}

template <class Strided>
void set_strides(const Strided& t, int64_t& batch, int64_t& row, int64_t& head) {
    batch = t.batch_stride;
    row = t.seq_stride;
    head = t.head_stride;
}

}  // namespace

void check_forward(int device, const ForwardProblem& problem, fa4j_kernel_family family) {
    const AttentionShape& s = problem.config.shape;
    const DType dtype = problem.config.dtype;
    require_plain_dense(problem.config, "forward");
    if (dtype == DType::F32)
        fail(FA4J_ERROR_UNSUPPORTED,
             "attention forward on CUDA supports float16 and bfloat16 tensors; float32 is not implemented there "
             "(convert the inputs, or use CPU tensors)");
    if (s.head_dim > 128)
        fail(FA4J_ERROR_UNSUPPORTED, "attention forward on CUDA supports head dims up to 128 (multiples of 8); head_dim " +
                                         std::to_string(s.head_dim) + " is not implemented there yet (use CPU tensors)");
    if (s.heads_q > kMaxGridYZ || s.batch > kMaxGridYZ)
        fail(FA4J_ERROR_UNSUPPORTED, "attention forward on CUDA supports at most " + std::to_string(kMaxGridYZ) +
                                         " query heads and batch entries; got " + std::to_string(s.heads_q) + " and " +
                                         std::to_string(s.batch));
    if (s.seqlen_q >= kMaxSeqlen || s.seqlen_k >= kMaxSeqlen)
        fail(FA4J_ERROR_UNSUPPORTED, "attention forward on CUDA supports sequences shorter than 2^30");
    const CurrentDevice current(device);
    if (family == FA4J_KERNEL_SM90 && !is_hopper(device))
        fail(FA4J_ERROR_UNSUPPORTED, "kernel family SM90 needs a Hopper GPU (compute capability 9.0); cuda:" +
                                         std::to_string(device) + " is not one");
    if (s.batch == 0 || s.seqlen_q == 0) return;  // no output element exists
    require_vector_aligned("q", problem.q, s.batch, s.seqlen_q, s.heads_q);
    require_vector_aligned("out", problem.out, s.batch, s.seqlen_q, s.heads_q);
    if (s.seqlen_k > 0) {  // with no keys the kernel never touches k and v
        require_vector_aligned("k", problem.k, s.batch, s.seqlen_k, s.heads_kv);
        require_vector_aligned("v", problem.v, s.batch, s.seqlen_k, s.heads_kv);
    }
    if (reinterpret_cast<uintptr_t>(problem.lse.data) % alignof(float) != 0)
        fail(FA4J_ERROR_UNSUPPORTED, "lse is not 4-byte aligned, which the CUDA kernels need for float32");
}

void attention_forward(int device, const ForwardProblem& problem, fa4j_kernel_family family, fa4j_stream stream) {
    check_forward(device, problem, family);
    const AttentionShape& s = problem.config.shape;
    const DType dtype = problem.config.dtype;
    const CurrentDevice current(device);
    if (s.batch == 0 || s.seqlen_q == 0) return;  // no output element exists

    // exp2 replaces exp: scores are multiplied by scale·log2(e) (finite: validation bounds the scale). A
    // zero scale (uniform attention) becomes the smallest normal float, which yields the same
    // probabilities but keeps masked scores at -inf.
    float scale_log2 = softmax_scale_log2(problem.config.softmax_scale);
    if (scale_log2 == 0.0f) scale_log2 = std::numeric_limits<float>::min();

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
    p.batch = static_cast<int>(s.batch);
    p.seqlen_q = static_cast<int>(s.seqlen_q);
    p.seqlen_k = static_cast<int>(s.seqlen_k);
    p.heads_q = static_cast<int>(s.heads_q);
    p.group_size = static_cast<int>(s.group_size());
    p.head_dim = static_cast<int>(s.head_dim);
    p.causal_offset = static_cast<int>(s.causal_offset());
    p.scale_log2 = scale_log2;
    p.flip_sign = scale_log2 < 0.0f ? 1 : 0;
    p.abs_scale = std::fabs(problem.config.softmax_scale);

    const fa2::Elem elem = dtype == DType::F16 ? fa2::Elem::F16 : fa2::Elem::BF16;
    const bool causal = problem.config.causal;
    const auto native_stream = reinterpret_cast<cudaStream_t>(stream);
    if (family != FA4J_KERNEL_SM80 && is_hopper(device)) {
        const bool queued = s.head_dim <= 64 ? fa3::run_forward<64>(p, elem, causal, native_stream)
                                             : fa3::run_forward<128>(p, elem, causal, native_stream);
        if (queued) return;  // else: strides TMA cannot describe; the FlashAttention-2 kernel takes them
        if (family == FA4J_KERNEL_SM90)
            fail(FA4J_ERROR_UNSUPPORTED, "kernel family SM90: these strides cannot be described to the Hopper "
                                         "kernel's tensor copies (AUTO falls back to the SM80 kernel)");
    }
    if (s.head_dim <= 64) fa2::run_forward<64>(p, elem, causal, native_stream);
    else fa2::run_forward<128>(p, elem, causal, native_stream);
}

}  // namespace fa4j::cuda
