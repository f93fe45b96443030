#include "core/attention_validation.hpp"

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/quantization.hpp"
#include "core/score_mask.hpp"
#include "core/softmax_scale.hpp"
#include "core/tensor_checks.hpp"

namespace fa4j {
namespace {

std::string describe(const char* name, const fa4j_tensor& t) { return std::string(name) + " " + shape_string(t); }

void require_shape(const fa4j_tensor& t, const char* name, std::initializer_list<int64_t> expected) {
    int i = 0;
    for (int64_t e : expected) {
        if (t.shape[i] != e) {
            std::string want = "[";
            int j = 0;
            for (int64_t x : expected) want += (j++ ? ", " : "") + std::to_string(x);
            fail(FA4J_ERROR_INVALID_ARGUMENT, describe(name, t) + " does not match the expected shape " + want + "]");
        }
        ++i;
    }
}

// Dense tensors are [batch, seq, heads, head_dim]; varlen ones [tokens, heads, head_dim] with the batch
// given by cu_seqlens (batch stride 0 in the problem: rows are addressed by token index).
SeqTensor seq_tensor(const fa4j_tensor& t, const char* name, bool varlen) {
    const int d = varlen ? 2 : 3;
    FA4J_REQUIRE(t.shape[d] <= 1 || t.strides[d] == 1, describe(name, t) + ": head_dim must be contiguous (stride 1)");
    if (varlen) return SeqTensor{first_element(t), 0, t.strides[0], t.strides[1]};
    return SeqTensor{first_element(t), t.strides[0], t.strides[1], t.strides[2]};
}

// Dense lse is [batch, heads, seq]; varlen lse is [heads, total_q].
LseTensor lse_tensor(const fa4j_tensor& t, bool varlen) {
    auto* data = reinterpret_cast<float*>(first_element(t));
    if (varlen) return LseTensor{data, 0, t.strides[0], t.strides[1]};
    return LseTensor{data, t.strides[0], t.strides[1], t.strides[2]};
}

// Shape, dtype and device shared by every call; q, k, v give the problem, everything else must agree.
struct Common {
    AttentionShape shape;
    DType dtype;
    fa4j_device device;
    bool varlen;
    int64_t total_q, total_k;  // varlen: rows of the packed tensors
    DType operand_dtypes[3];   // of q, k, v (quantized calls may mix them)
};

// Heads (GQA: a multiple) and the head dim every attention kernel supports; `keys` names the key tensors.
void check_heads(const AttentionShape& s, const char* keys) {
    FA4J_REQUIRE(s.heads_q >= 1 && s.heads_kv >= 1, std::string("the number of heads of q, ") + keys + " must be at least 1");
    FA4J_REQUIRE(s.heads_q % s.heads_kv == 0, "heads of q (" + std::to_string(s.heads_q) + ") must be a multiple of heads of " +
                                             keys + " (" + std::to_string(s.heads_kv) + ")");
    if (s.head_dim < kHeadDimMultiple || s.head_dim > kMaxHeadDim || s.head_dim % kHeadDimMultiple != 0)
        fail(FA4J_ERROR_UNSUPPORTED, "head_dim " + std::to_string(s.head_dim) + " is not supported: it must be a multiple of " +
                                         std::to_string(kHeadDimMultiple) + " between " + std::to_string(kHeadDimMultiple) +
                                         " and " + std::to_string(kMaxHeadDim));
}

// Plain attention computes on float32, float16 and bfloat16; quantized dtypes need a quant_mode.
void require_compute_dtype(DType dtype, const char* name) {
    if (is_compute_dtype(dtype)) return;
    fail(FA4J_ERROR_INVALID_ARGUMENT,
         std::string(name) + " has the quantized dtype " + dtype_name(dtype) +
             ": attention on quantized inputs needs a quantization mode (quant_mode) and the inputs' scales "
             "(q_scale, k_scale, v_scale); plain attention takes float32, float16 or bfloat16");
}

// The dtypes of q, k, v: one compute dtype for plain attention; for quantized attention each operand's
// own (checked by check_quantized_inputs), and c.dtype the high-precision inputs' (or out's) dtype.
Common check_qkv(const fa4j_tensor* q, const fa4j_tensor* k, const fa4j_tensor* v, bool varlen, bool quantized) {
    const int rank = varlen ? 3 : 4;
    const DType dtype = check_descriptor(q, "q", rank);
    if (!quantized) require_compute_dtype(dtype, "q");
    const DType k_dtype = check_descriptor(k, "k", rank);
    if (!quantized && k_dtype != dtype) require_compute_dtype(k_dtype, "k");
    FA4J_REQUIRE(quantized || k_dtype == dtype, "k must have the dtype of q (" + std::string(dtype_name(dtype)) + ")");
    const DType v_dtype = check_descriptor(v, "v", rank);
    if (!quantized && v_dtype != dtype) require_compute_dtype(v_dtype, "v");
    FA4J_REQUIRE(quantized || v_dtype == dtype, "v must have the dtype of q (" + std::string(dtype_name(dtype)) + ")");
    Common c{};
    c.dtype = dtype;
    c.operand_dtypes[0] = dtype;
    c.operand_dtypes[1] = k_dtype;
    c.operand_dtypes[2] = v_dtype;
    c.device = q->device;
    c.varlen = varlen;
    AttentionShape& s = c.shape;
    if (varlen) {
        c.total_q = q->shape[0];
        c.total_k = k->shape[0];
        s = AttentionShape{0, 0, 0, q->shape[1], k->shape[1], q->shape[2]};
        require_shape(*k, "k", {c.total_k, s.heads_kv, s.head_dim});
        require_shape(*v, "v", {c.total_k, s.heads_kv, s.head_dim});
    } else {
        s = AttentionShape{q->shape[0], q->shape[1], k->shape[1], q->shape[2], k->shape[2], q->shape[3]};
        require_shape(*k, "k", {s.batch, k->shape[1], k->shape[2], s.head_dim});
        require_shape(*v, "v", {s.batch, s.seqlen_k, s.heads_kv, s.head_dim});
    }
    check_heads(s, "k and v");
    return c;
}

// Refuses a scale whose scaled scores could leave float32 for inputs in the documented range
// (core/softmax_scale.hpp), which also keeps scale·log2(e), the kernels' exp2 factor, finite.
void check_softmax_scale(float scale, int64_t head_dim) {
    const double limit = max_softmax_scale(head_dim);
    if (std::fabs(static_cast<double>(scale)) <= limit && std::isfinite(softmax_scale_log2(scale))) return;
    char text[320];
    std::snprintf(text, sizeof text,
                  "softmax_scale %.9g is too large for head_dim %lld: |softmax_scale| * head_dim * 65504^2 must not "
                  "exceed 2^126, so that scaled scores of inputs within the float16 range fit float32 (here "
                  "|softmax_scale| <= %.9g)",
                  static_cast<double>(scale), static_cast<long long>(head_dim), limit);
    fail(FA4J_ERROR_INVALID_ARGUMENT, text);
}

void require_same_device(const Common& c, const fa4j_tensor& t, const char* name) {
    FA4J_REQUIRE(t.device.device_type == c.device.device_type && t.device.device_id == c.device.device_id,
            std::string(name) + " is on another device than q (all tensors of one call must share a device)");
}

void check_seq_like(const Common& c, const fa4j_tensor* t, const char* name, bool keys) {
    const DType dtype = check_descriptor(t, name, c.varlen ? 3 : 4);
    FA4J_REQUIRE(dtype == c.dtype, std::string(name) + " must have the dtype of q (" + dtype_name(c.dtype) + ")");
    const AttentionShape& s = c.shape;
    if (c.varlen) {
        if (keys) require_shape(*t, name, {c.total_k, s.heads_kv, s.head_dim});
        else require_shape(*t, name, {c.total_q, s.heads_q, s.head_dim});
    } else {
        if (keys) require_shape(*t, name, {s.batch, s.seqlen_k, s.heads_kv, s.head_dim});
        else require_shape(*t, name, {s.batch, s.seqlen_q, s.heads_q, s.head_dim});
    }
    require_same_device(c, *t, name);
}

void check_lse(const Common& c, const fa4j_tensor* lse) {
    FA4J_REQUIRE(check_descriptor(lse, "lse", c.varlen ? 2 : 3) == DType::F32, "lse must be float32");
    if (c.varlen) require_shape(*lse, "lse", {c.shape.heads_q, c.total_q});
    else require_shape(*lse, "lse", {c.shape.batch, c.shape.heads_q, c.shape.seqlen_q});
    require_same_device(c, *lse, "lse");
}

void check_qkv_devices(const Common& c, const fa4j_tensor* k, const fa4j_tensor* v) {
    require_same_device(c, *k, "k");
    require_same_device(c, *v, "v");
}


// An int32 vector of sequence lengths or offsets: its descriptor, device and length.
const int32_t* int32_vector(const Common& c, const fa4j_tensor* t, const char* name, int64_t length) {
    check_int32_descriptor(t, name, 1);
    FA4J_REQUIRE(t->shape[0] == length, describe(name, *t) + " must have " + std::to_string(length) + " elements");
    FA4J_REQUIRE(length <= 1 || t->strides[0] == 1, std::string(name) + " must be contiguous");
    require_same_device(c, *t, name);
    return reinterpret_cast<const int32_t*>(first_element(*t));
}

// Checks the varlen metadata and fills the shape's batch and maximum lengths. On the CPU the values are
// read and checked here; on a device they cannot be read without a synchronisation, so the maximum
// lengths must be given and the kernels must clamp whatever the vectors say.
void check_varlen(const fa4j_attention_args& a, Common& c, AttentionConfig& config) {
    FA4J_REQUIRE(a.cu_seqlens_q != nullptr && a.cu_seqlens_k != nullptr,
            "cu_seqlens_q and cu_seqlens_k are given together (varlen) or not at all");
    check_int32_descriptor(a.cu_seqlens_q, "cu_seqlens_q", 1);
    FA4J_REQUIRE(a.cu_seqlens_q->shape[0] >= 1, "cu_seqlens_q must have batch + 1 >= 1 elements");
    const int64_t batch = a.cu_seqlens_q->shape[0] - 1;
    VarlenInfo& v = config.varlen;
    v.cu_seqlens_q = int32_vector(c, a.cu_seqlens_q, "cu_seqlens_q", batch + 1);
    v.cu_seqlens_k = int32_vector(c, a.cu_seqlens_k, "cu_seqlens_k", batch + 1);
    if (a.seqused_k != nullptr) v.seqused_k = int32_vector(c, a.seqused_k, "seqused_k", batch);
    v.total_q = c.total_q;
    v.total_k = c.total_k;
    FA4J_REQUIRE(a.max_seqlen_q >= 0 && a.max_seqlen_k >= 0, "max_seqlen_q and max_seqlen_k must be >= 0");
    c.shape.batch = batch;
    c.shape.seqlen_q = a.max_seqlen_q;
    c.shape.seqlen_k = a.max_seqlen_k;
    if (c.device.device_type != FA4J_DEVICE_CPU) {
        FA4J_REQUIRE(a.max_seqlen_q > 0 || c.total_q == 0, "max_seqlen_q must be given for device tensors (their lengths are not read on the host)");
        FA4J_REQUIRE(a.max_seqlen_k > 0 || c.total_k == 0, "max_seqlen_k must be given for device tensors (their lengths are not read on the host)");
        return;
    }
    int64_t longest_q = 0, longest_k = 0;
    auto check_offsets = [&](const int32_t* cu, int64_t total, const char* name, int64_t& longest) {
        FA4J_REQUIRE(cu[0] == 0, std::string(name) + "[0] must be 0, is " + std::to_string(cu[0]));
        for (int64_t b = 0; b < batch; b++) {
            FA4J_REQUIRE(cu[b + 1] >= cu[b], std::string(name) + " must be non-decreasing: [" + std::to_string(b) + "] = " +
                                            std::to_string(cu[b]) + " > [" + std::to_string(b + 1) + "] = " + std::to_string(cu[b + 1]));
            longest = std::max<int64_t>(longest, cu[b + 1] - cu[b]);
        }
        FA4J_REQUIRE(cu[batch] <= total, std::string(name) + "[batch] = " + std::to_string(cu[batch]) + " exceeds the " +
                                        std::to_string(total) + " packed rows");
    };
    check_offsets(v.cu_seqlens_q, c.total_q, "cu_seqlens_q", longest_q);
    check_offsets(v.cu_seqlens_k, c.total_k, "cu_seqlens_k", longest_k);
    if (v.seqused_k != nullptr) {
        for (int64_t b = 0; b < batch; b++) {
            const int64_t length = v.cu_seqlens_k[b + 1] - v.cu_seqlens_k[b];
            FA4J_REQUIRE(v.seqused_k[b] >= 0 && v.seqused_k[b] <= length,
                    "seqused_k[" + std::to_string(b) + "] = " + std::to_string(v.seqused_k[b]) + " is outside 0.." + std::to_string(length));
        }
    }
    FA4J_REQUIRE(a.max_seqlen_q == 0 || a.max_seqlen_q >= longest_q,
            "max_seqlen_q " + std::to_string(a.max_seqlen_q) + " is below the longest query sequence (" + std::to_string(longest_q) + ")");
    FA4J_REQUIRE(a.max_seqlen_k == 0 || a.max_seqlen_k >= longest_k,
            "max_seqlen_k " + std::to_string(a.max_seqlen_k) + " is below the longest key sequence (" + std::to_string(longest_k) + ")");
    c.shape.seqlen_q = a.max_seqlen_q > 0 ? a.max_seqlen_q : longest_q;
    c.shape.seqlen_k = a.max_seqlen_k > 0 ? a.max_seqlen_k : longest_k;
}

void check_features(const fa4j_attention_args& a, const Common& c, AttentionConfig& config) {
    ScoreFeatures& f = config.features;
    FA4J_REQUIRE(std::isfinite(a.softcap) && a.softcap >= 0, "softcap must be finite and >= 0 (0: none)");
    f.softcap = a.softcap;
    f.window_left = a.window_left < 0 ? ScoreFeatures::kUnbounded : a.window_left;
    f.window_right = a.window_right < 0 ? ScoreFeatures::kUnbounded : a.window_right;
    if (config.causal) f.window_right = f.window_right == ScoreFeatures::kUnbounded ? 0 : std::min<int64_t>(f.window_right, 0);
    // The window [unbounded, 0] is the causal mask, whichever way the caller said it: kernels that know
    // only `causal` then run it too.
    if (f.window_left == ScoreFeatures::kUnbounded && f.window_right == 0) config.causal = true;
    if (a.alibi_slopes != nullptr) {
        const fa4j_tensor& t = *a.alibi_slopes;
        FA4J_REQUIRE(t.ndim == 1 || t.ndim == 2, "alibi_slopes must be float32 [heads_q] or [batch, heads_q]");
        FA4J_REQUIRE(check_descriptor(&t, "alibi_slopes", t.ndim) == DType::F32, "alibi_slopes must be float32");
        require_same_device(c, t, "alibi_slopes");
        if (t.ndim == 1) {
            require_shape(t, "alibi_slopes", {c.shape.heads_q});
            f.alibi_head_stride = t.strides[0];
        } else {
            require_shape(t, "alibi_slopes", {c.shape.batch, c.shape.heads_q});
            f.alibi_batch_stride = t.strides[0];
            f.alibi_head_stride = t.strides[1];
        }
        f.alibi_slopes = reinterpret_cast<const float*>(first_element(t));
        // Host slopes are checked here; device ones cannot be read without a synchronisation.
        if (c.device.device_type == FA4J_DEVICE_CPU) {
            const int64_t rows = t.ndim == 2 ? c.shape.batch : 1;
            for (int64_t b = 0; b < rows; b++)
                for (int64_t h = 0; h < c.shape.heads_q; h++) {
                    const float slope = f.alibi_slopes[b * f.alibi_batch_stride + h * f.alibi_head_stride];
                    FA4J_REQUIRE(std::isfinite(slope), "alibi_slopes must be finite; [" + std::to_string(b) + ", " +
                                                      std::to_string(h) + "] is " + std::to_string(slope));
                }
        }
    }
}

// ---- quantized attention (flashattn4j.h, "Quantized attention") -----------------------------------

QuantConfig quant_config(const fa4j_attention_args& a) {
    FA4J_REQUIRE(a.quant_mode >= FA4J_QUANT_NONE && a.quant_mode <= FA4J_QUANT_FP8,
            "quant_mode must be an fa4j_quant_mode value (0..5), got " + std::to_string(a.quant_mode));
    FA4J_REQUIRE((a.quant_flags & ~(FA4J_QUANT_NO_SMOOTH_K | FA4J_QUANT_NO_SMOOTH_Q)) == 0,
            "quant_flags has unknown bits: " + std::to_string(a.quant_flags));
    QuantConfig q;
    q.mode = static_cast<QuantMode>(a.quant_mode);
    q.smooth_k = (a.quant_flags & FA4J_QUANT_NO_SMOOTH_K) == 0;
    q.smooth_q = (a.quant_flags & FA4J_QUANT_NO_SMOOTH_Q) == 0;
    return q;
}

// A contiguous float32 tensor of exactly `shape` (rank `rank`) on the call's device; returns its data.
const float* quant_float_tensor(const Common& c, const fa4j_tensor* t, const char* name, const int64_t* shape, int rank,
                                const std::string& what) {
    FA4J_REQUIRE(t->ndim == rank, std::string(name) + " must be float32 " + what + " (" + std::to_string(rank) +
                                 " dimensions), has " + std::to_string(t->ndim) + " dimensions");
    FA4J_REQUIRE(check_descriptor(t, name, rank) == DType::F32, std::string(name) + " must be float32 " + what);
    int64_t stride = 1;
    for (int i = rank - 1; i >= 0; --i) {
        if (t->shape[i] != shape[i]) {
            std::string want = "[";
            for (int j = 0; j < rank; ++j) want += (j ? ", " : "") + std::to_string(shape[j]);
            fail(FA4J_ERROR_INVALID_ARGUMENT, describe(name, *t) + " does not match " + what + " " + want + "]");
        }
        FA4J_REQUIRE(shape[i] <= 1 || t->strides[i] == stride, describe(name, *t) + " must be contiguous");
        stride *= shape[i];
    }
    require_same_device(c, *t, name);
    return reinterpret_cast<const float*>(first_element(*t));
}

std::string scale_description(QuantMode mode, quant::Operand operand) {
    if (mode == QuantMode::Fp8) return operand == quant::Operand::Q ? "[batch, heads_q] (per batch and query head)"
                                                                    : "[batch, heads_kv] (per batch and kv head)";
    switch (operand) {
        case quant::Operand::Q: return "[batch, heads_q, seqlen_q] (per token)";
        case quant::Operand::K: return "[batch, heads_kv, ceil(seqlen_k / 128)] (per block of 128 keys)";
        case quant::Operand::V: return "[batch, heads_kv, head_dim] (per channel)";
    }
    return "";
}

// Each of q, k, v is high precision (a compute dtype, no scale) or pre-quantized (the mode's dtype with
// its scale); the high-precision ones share one dtype, which out has too. Fills the problem's QuantInputs.
void check_quantized_inputs(const fa4j_attention_args& a, Common& c, const QuantConfig& quant, QuantInputs& inputs) {
    const QuantMode mode = quant.mode;
    const char* mode_text = quant::mode_name(mode);
    const fa4j_tensor* scales[3] = {a.q_scale, a.k_scale, a.v_scale};
    QuantOperand* operands[3] = {&inputs.q, &inputs.k, &inputs.v};
    bool have_compute = false;
    DType compute{};
    for (int i = 0; i < 3; ++i) {
        const auto operand = static_cast<quant::Operand>(i);
        const std::string name = quant::operand_name(operand);
        const DType dtype = c.operand_dtypes[i];
        const DType quantized = quant::quantized_dtype(mode, operand);
        const bool scaled = quant::has_scale(mode, operand);
        operands[i]->dtype = dtype;
        if (scales[i] == nullptr) {
            if (!is_compute_dtype(dtype)) {
                if (dtype == quantized && scaled)
                    fail(FA4J_ERROR_INVALID_ARGUMENT, name + " is " + dtype_name(dtype) + ", pre-quantized: pass its scale (" +
                                                          name + "_scale, float32 " + scale_description(mode, operand) + ")");
                fail(FA4J_ERROR_INVALID_ARGUMENT,
                     name + ": " + mode_text + " takes " + name + " as " +
                         (scaled ? std::string(dtype_name(quantized)) + " with " + name + "_scale, or as " : std::string()) +
                         "float32, float16 or bfloat16; got " + dtype_name(dtype));
            }
            FA4J_REQUIRE(!have_compute || dtype == compute, name + " must have the dtype of the other high-precision inputs (" +
                                                           dtype_name(compute) + "), has " + dtype_name(dtype));
            have_compute = true;
            compute = dtype;
            continue;
        }
        FA4J_REQUIRE(scaled, name + "_scale must be NULL in " + mode_text + ": " + name +
                            " is used as float16 there, without a scale (pass it as float16, bfloat16 or float32)");
        FA4J_REQUIRE(dtype == quantized, name + "_scale is given, so " + name + " must be pre-quantized as " + dtype_name(quantized) +
                                        " in " + mode_text + "; it is " + dtype_name(dtype));
        const AttentionShape& s = c.shape;
        const bool is_q = operand == quant::Operand::Q;
        int64_t shape[3];
        const int rank = quant::scale_shape(mode, operand, s.batch, is_q ? s.seqlen_q : s.seqlen_k, is_q ? s.heads_q : s.heads_kv,
                                            s.head_dim, shape);
        const std::string scale_name = name + "_scale";
        operands[i]->scale = quant_float_tensor(c, scales[i], scale_name.c_str(), shape, rank, scale_description(mode, operand));
    }
    if (a.k_mean != nullptr) {
        FA4J_REQUIRE(inputs.k.prequantized(), "k_mean is for a pre-quantized k only (the library smooths a k it quantizes itself)");
        const int64_t shape[3] = {c.shape.batch, c.shape.heads_kv, c.shape.head_dim};
        inputs.k_mean = quant_float_tensor(c, a.k_mean, "k_mean", shape, 3, "[batch, heads_kv, head_dim]");
    }
    if (have_compute) {
        c.dtype = compute;
        return;
    }
    // Every input pre-quantized: out chooses the output dtype.
    FA4J_REQUIRE(a.out != nullptr, "out is null");
    const DType out = check_descriptor(a.out, "out", c.varlen ? 3 : 4);
    FA4J_REQUIRE(is_compute_dtype(out), std::string("out must be float32, float16 or bfloat16, not ") + dtype_name(out));
    c.dtype = out;
}

// What quantized attention does not do (yet): the backward, varlen batches, softcap.
void check_quantized_call(const fa4j_attention_args& a, const QuantConfig& quant, bool varlen) {
    const std::string mode = quant::mode_name(quant.mode);
    if (a.direction != FA4J_ATTENTION_FORWARD)
        fail(FA4J_ERROR_UNSUPPORTED, "quantized attention (" + mode + ") is forward only; the backward needs float32, "
                                     "float16 or bfloat16 inputs and quant_mode NONE");
    if (varlen)
        fail(FA4J_ERROR_UNSUPPORTED, "quantized attention (" + mode + ") does not implement variable-length batches "
                                     "(cu_seqlens) yet");
    if (a.softcap != 0)
        fail(FA4J_ERROR_UNSUPPORTED, "quantized attention (" + mode + ") does not take a softcap: softcap is not "
                                     "invariant to the per-row shifts that smoothing relies on");
}

void require_no_quant_fields(const fa4j_attention_args& a) {
    FA4J_REQUIRE(a.q_scale == nullptr && a.k_scale == nullptr && a.v_scale == nullptr && a.k_mean == nullptr,
            "q_scale, k_scale, v_scale and k_mean are for quantized attention: set quant_mode, or leave them NULL");
    FA4J_REQUIRE(a.quant_flags == 0, "quant_flags are for quantized attention: set quant_mode, or leave them 0");
}

// The prefix of fa4j_attention_args every caller must provide; later fields read as zero.
constexpr size_t kMinArgsSize = offsetof(fa4j_attention_args, num_threads) + sizeof(int32_t);

// A copy of the caller's struct as this library knows it: fields past the caller's struct_size are zero.
fa4j_attention_args read_args(const fa4j_attention_args* args) {
    FA4J_REQUIRE(args != nullptr, "args is null");
    FA4J_REQUIRE(args->struct_size >= kMinArgsSize,
            "args->struct_size is " + std::to_string(args->struct_size) + ", at least " + std::to_string(kMinArgsSize) +
                " expected (set it to sizeof(fa4j_attention_args))");
    fa4j_attention_args a{};
    std::memcpy(&a, args, std::min(args->struct_size, sizeof a));
    return a;
}

const char* direction_name(int32_t direction) {
    switch (direction) {
        case FA4J_ATTENTION_FORWARD: return "FA4J_ATTENTION_FORWARD";
        case FA4J_ATTENTION_BACKWARD: return "FA4J_ATTENTION_BACKWARD";
        case FA4J_ATTENTION_DECODE: return "FA4J_ATTENTION_DECODE";
        case FA4J_ATTENTION_MERGE: return "FA4J_ATTENTION_MERGE";
    }
    return "?";
}

// A field the direction does not use must be NULL (or 0): a caller who sets it meant another call.
void require_unused(bool unused, const char* field, const fa4j_attention_args& a) {
    FA4J_REQUIRE(unused, std::string(field) + " must be NULL (or 0) for " + direction_name(a.direction) + ": that direction does not use it");
}

// The KV cache block, unused by forward and backward.
void require_no_kv_cache_fields(const fa4j_attention_args& a) {
    require_unused(a.k_cache == nullptr, "k_cache", a);
    require_unused(a.v_cache == nullptr, "v_cache", a);
    require_unused(a.block_table == nullptr, "block_table", a);
    require_unused(a.cache_seqlens == nullptr, "cache_seqlens", a);
    require_unused(a.k_new == nullptr, "k_new", a);
    require_unused(a.v_new == nullptr, "v_new", a);
    require_unused(a.prefix_k == nullptr, "prefix_k", a);
    require_unused(a.prefix_v == nullptr, "prefix_v", a);
    require_unused(a.merge_out == nullptr, "merge_out", a);
    require_unused(a.merge_lse == nullptr, "merge_lse", a);
    require_unused(a.merge_count == 0, "merge_count", a);
    require_unused(a.num_splits == 0, "num_splits", a);
}

// The backward's gradient tensors, unused by every other direction.
void require_no_gradient_fields(const fa4j_attention_args& a) {
    require_unused(a.dout == nullptr, "dout", a);
    require_unused(a.dq == nullptr, "dq", a);
    require_unused(a.dk == nullptr, "dk", a);
    require_unused(a.dv == nullptr, "dv", a);
}

// The fields of dense and varlen attention that decode and merge do not use.
void require_no_attention_fields(const fa4j_attention_args& a) {
    require_unused(a.k == nullptr, "k", a);
    require_unused(a.v == nullptr, "v", a);
    require_no_gradient_fields(a);
    require_unused(a.cu_seqlens_q == nullptr, "cu_seqlens_q", a);
    require_unused(a.cu_seqlens_k == nullptr, "cu_seqlens_k", a);
    require_unused(a.seqused_k == nullptr, "seqused_k", a);
    require_unused(a.max_seqlen_q == 0, "max_seqlen_q", a);
    require_unused(a.max_seqlen_k == 0, "max_seqlen_k", a);
}

// ---- KV-cache attention (FA4J_ATTENTION_DECODE) ---------------------------------------------------------

// A cache tensor [pages or batch, slots, heads_kv, head_dim] with contiguous head_dim.
CacheTensor cache_tensor(const fa4j_tensor& t, const char* name) {
    FA4J_REQUIRE(t.shape[3] <= 1 || t.strides[3] == 1, describe(name, t) + ": head_dim must be contiguous (stride 1)");
    return CacheTensor{first_element(t), t.strides[0], t.strides[1], t.strides[2]};
}

// The shared prefix [prefix_len, heads_kv, head_dim] as a sequence tensor of batch stride 0.
SeqTensor prefix_tensor(const fa4j_tensor& t, const char* name) {
    FA4J_REQUIRE(t.shape[2] <= 1 || t.strides[2] == 1, describe(name, t) + ": head_dim must be contiguous (stride 1)");
    return SeqTensor{first_element(t), 0, t.strides[0], t.strides[1]};
}

std::string at(int64_t b) { return "[" + std::to_string(b) + "]"; }
std::string at(int64_t b, int64_t l) { return "[" + std::to_string(b) + ", " + std::to_string(l) + "]"; }

// The cache lengths and block table of CPU calls, read on the host before anything is written: lengths within
// the capacity, appends that fit, entries of used pages that name pages of the cache, and pages written by an
// append that nothing else in the call uses (else the append would change what another row reads, or two
// appends would write one slot). Entries past a sequence's used pages are not read.
void check_cache_metadata(const KvCacheLayout& layout, const int32_t* lengths, int64_t batch, int64_t seqlen_new) {
    for (int64_t b = 0; b < batch; ++b) {
        const int64_t length = lengths[b];
        FA4J_REQUIRE(length >= 0 && length <= layout.capacity, "cache_seqlens" + at(b) + " = " + std::to_string(length) +
                                                              " is outside 0.." + std::to_string(layout.capacity) +
                                                              " (the cache's capacity)");
        FA4J_REQUIRE(seqlen_new <= layout.capacity - length,
                "appending " + std::to_string(seqlen_new) + " keys to sequence " + std::to_string(b) + " (cache_seqlens" + at(b) +
                    " = " + std::to_string(length) + ") goes past the cache's capacity of " + std::to_string(layout.capacity) +
                    " positions");
    }
    if (!layout.paged()) return;
    for (int64_t b = 0; b < batch; ++b) {
        const int64_t pages = layout.pages_for(lengths[b] + seqlen_new);
        for (int64_t l = 0; l < pages; ++l) {
            const int64_t page = layout.table_entry(b, l);
            FA4J_REQUIRE(page >= 0 && page < layout.num_pages,
                    "block_table" + at(b, l) + " = " + std::to_string(page) + " is not a page of the cache (0.." +
                        std::to_string(layout.num_pages - 1) + "); sequence " + std::to_string(b) + " uses its first " +
                        std::to_string(pages) + " entries");
        }
    }
    if (seqlen_new == 0) return;
    struct Written {
        int64_t page, b, l;
        bool operator<(const Written& o) const { return page < o.page; }
    };
    std::vector<Written> written;
    auto written_pages = [&](int64_t b) {
        return IndexRange{lengths[b] / layout.page_size, layout.pages_for(lengths[b] + seqlen_new)};
    };
    for (int64_t b = 0; b < batch; ++b) {
        const IndexRange w = written_pages(b);
        for (int64_t l = w.begin; l < w.end; ++l) written.push_back({layout.table_entry(b, l), b, l});
    }
    std::sort(written.begin(), written.end());
    for (size_t n = 1; n < written.size(); ++n) {
        const Written& x = written[n - 1];
        const Written& y = written[n];
        FA4J_REQUIRE(x.page != y.page, "page " + std::to_string(x.page) + " is written by two appends (block_table" + at(x.b, x.l) +
                                      " and block_table" + at(y.b, y.l) + "): a page an append writes must belong to one "
                                      "sequence position only");
    }
    for (int64_t b = 0; b < batch; ++b) {
        const IndexRange w = written_pages(b);
        const int64_t pages = layout.pages_for(lengths[b] + seqlen_new);
        for (int64_t l = 0; l < pages; ++l) {
            if (l >= w.begin && l < w.end) continue;
            const Written key{layout.table_entry(b, l), 0, 0};
            const auto hit = std::lower_bound(written.begin(), written.end(), key);
            FA4J_REQUIRE(hit == written.end() || hit->page != key.page,
                    "page " + std::to_string(key.page) + " is written by the append of sequence " + std::to_string(hit->b) +
                        " (block_table" + at(hit->b, hit->l) + ") and also read through block_table" + at(b, l) +
                        ": a page an append writes must not be shared");
        }
    }
}

ValidatedCall validate_decode(const fa4j_attention_args& a, AttentionConfig config, fa4j_kernel_family family) {
    require_no_attention_fields(a);
    require_unused(a.merge_out == nullptr, "merge_out", a);
    require_unused(a.merge_lse == nullptr, "merge_lse", a);
    require_unused(a.merge_count == 0, "merge_count", a);
    FA4J_REQUIRE(a.num_splits >= 0 && a.num_splits <= FA4J_DECODE_MAX_SPLITS,
            "num_splits must be 0 (heuristic) or 1.." + std::to_string(FA4J_DECODE_MAX_SPLITS) + ", got " + std::to_string(a.num_splits));

    const DType dtype = check_descriptor(a.q, "q", 4);
    require_compute_dtype(dtype, "q");
    const std::string same_dtype = " must have the dtype of q (" + std::string(dtype_name(dtype)) + ")";
    FA4J_REQUIRE(check_descriptor(a.k_cache, "k_cache", 4) == dtype, "k_cache" + same_dtype);
    FA4J_REQUIRE(check_descriptor(a.v_cache, "v_cache", 4) == dtype, "v_cache" + same_dtype);
    const fa4j_tensor& q = *a.q;
    const fa4j_tensor& kc = *a.k_cache;
    Common c{};
    c.dtype = dtype;
    c.device = q.device;
    AttentionShape& s = c.shape;
    s = AttentionShape{q.shape[0], q.shape[1], 0, q.shape[2], kc.shape[2], q.shape[3]};
    require_shape(*a.v_cache, "v_cache", {kc.shape[0], kc.shape[1], kc.shape[2], kc.shape[3]});
    require_shape(kc, "k_cache", {kc.shape[0], kc.shape[1], s.heads_kv, s.head_dim});
    check_heads(s, "k_cache and v_cache");
    FA4J_REQUIRE(std::isfinite(config.softmax_scale), "softmax_scale must be finite");
    check_softmax_scale(config.softmax_scale, s.head_dim);
    require_same_device(c, kc, "k_cache");
    require_same_device(c, *a.v_cache, "v_cache");

    KvCacheLayout layout;
    if (a.block_table == nullptr) {
        FA4J_REQUIRE(kc.shape[0] == s.batch, describe("k_cache", kc) + ": a dense cache (no block_table) is [batch, capacity, "
                                                                   "heads_kv, head_dim] with q's batch " + std::to_string(s.batch));
        layout.page_size = layout.capacity = kc.shape[1];
        layout.num_pages = s.batch;
    } else {
        const fa4j_tensor& table = *a.block_table;
        check_int32_descriptor(&table, "block_table", 2);
        require_shape(table, "block_table", {s.batch, table.shape[1]});
        require_same_device(c, table, "block_table");
        layout.page_size = kc.shape[1];
        if (layout.page_size < kPageSizeMultiple || layout.page_size % kPageSizeMultiple != 0)
            fail(FA4J_ERROR_UNSUPPORTED, "page size " + std::to_string(layout.page_size) + " (k_cache.shape[1]) is not supported: "
                                         "pages of a paged cache hold a multiple of " + std::to_string(kPageSizeMultiple) + " positions");
        FA4J_REQUIRE(!__builtin_mul_overflow(table.shape[1], layout.page_size, &layout.capacity),
                "block_table width " + std::to_string(table.shape[1]) + " times page size " + std::to_string(layout.page_size) +
                    " overflows int64");
        layout.num_pages = kc.shape[0];
        layout.block_table = reinterpret_cast<const int32_t*>(first_element(table));
        layout.table_batch_stride = table.strides[0];
        layout.table_page_stride = table.strides[1];
    }
    s.seqlen_k = layout.capacity;
    const int32_t* lengths = int32_vector(c, a.cache_seqlens, "cache_seqlens", s.batch);

    int64_t seqlen_new = 0;
    const bool append = a.k_new != nullptr || a.v_new != nullptr;
    if (append) {
        FA4J_REQUIRE(a.k_new != nullptr && a.v_new != nullptr, "k_new and v_new are given together (an append) or not at all");
        FA4J_REQUIRE(check_descriptor(a.k_new, "k_new", 4) == dtype, "k_new" + same_dtype);
        FA4J_REQUIRE(check_descriptor(a.v_new, "v_new", 4) == dtype, "v_new" + same_dtype);
        seqlen_new = a.k_new->shape[1];
        require_shape(*a.k_new, "k_new", {s.batch, seqlen_new, s.heads_kv, s.head_dim});
        require_shape(*a.v_new, "v_new", {s.batch, seqlen_new, s.heads_kv, s.head_dim});
        require_same_device(c, *a.k_new, "k_new");
        require_same_device(c, *a.v_new, "v_new");
    }
    const bool prefix = a.prefix_k != nullptr || a.prefix_v != nullptr;
    int64_t prefix_len = 0;
    if (prefix) {
        FA4J_REQUIRE(a.prefix_k != nullptr && a.prefix_v != nullptr, "prefix_k and prefix_v are given together or not at all");
        FA4J_REQUIRE(check_descriptor(a.prefix_k, "prefix_k", 3) == dtype, "prefix_k" + same_dtype);
        FA4J_REQUIRE(check_descriptor(a.prefix_v, "prefix_v", 3) == dtype, "prefix_v" + same_dtype);
        prefix_len = a.prefix_k->shape[0];
        require_shape(*a.prefix_k, "prefix_k", {prefix_len, s.heads_kv, s.head_dim});
        require_shape(*a.prefix_v, "prefix_v", {prefix_len, s.heads_kv, s.head_dim});
        require_same_device(c, *a.prefix_k, "prefix_k");
        require_same_device(c, *a.prefix_v, "prefix_v");
    }

    const DType out_dtype = check_descriptor(a.out, "out", 4);
    require_compute_dtype(out_dtype, "out");
    FA4J_REQUIRE(out_dtype == dtype || out_dtype == DType::F32,
            "out must have the dtype of q (" + std::string(dtype_name(dtype)) + ") or float32");
    require_shape(*a.out, "out", {s.batch, s.seqlen_q, s.heads_q, s.head_dim});
    require_same_device(c, *a.out, "out");
    if (a.lse != nullptr) check_lse(c, a.lse);

    check_features(a, c, config);
    if (prefix) {
        const ScoreFeatures& f = config.features;
        const bool causal_only = f.window_left == ScoreFeatures::kUnbounded && (f.window_right == 0 || f.window_right == ScoreFeatures::kUnbounded);
        if (!causal_only)
            fail(FA4J_ERROR_UNSUPPORTED, "a shared prefix (prefix_k, prefix_v) with a sliding window is not implemented "
                                         "(causal masking is)");
        if (f.alibi_slopes != nullptr) fail(FA4J_ERROR_UNSUPPORTED, "a shared prefix (prefix_k, prefix_v) with ALiBi is not implemented");
    }

    // Outputs: out, lse, and the caches where an append writes them.
    check_not_self_overlapping(*a.out, "out");
    std::vector<NamedTensor> outputs{{a.out, "out"}};
    std::vector<NamedTensor> inputs{{a.q, "q"}, {a.cache_seqlens, "cache_seqlens"}};
    if (a.lse != nullptr) {
        check_not_self_overlapping(*a.lse, "lse");
        outputs.push_back({a.lse, "lse"});
    }
    if (append) {
        check_not_self_overlapping(kc, "k_cache");
        check_not_self_overlapping(*a.v_cache, "v_cache");
        outputs.push_back({a.k_cache, "k_cache"});
        outputs.push_back({a.v_cache, "v_cache"});
        inputs.push_back({a.k_new, "k_new"});
        inputs.push_back({a.v_new, "v_new"});
    } else {
        inputs.push_back({a.k_cache, "k_cache"});
        inputs.push_back({a.v_cache, "v_cache"});
    }
    if (a.block_table != nullptr) inputs.push_back({a.block_table, "block_table"});
    if (prefix) {
        inputs.push_back({a.prefix_k, "prefix_k"});
        inputs.push_back({a.prefix_v, "prefix_v"});
    }
    if (a.alibi_slopes != nullptr) inputs.push_back({a.alibi_slopes, "alibi_slopes"});
    check_outputs_disjoint(outputs, inputs);

    // Host metadata is checked here, before anything is written; a device's cannot be read without a
    // synchronisation (its kernels clamp and report, see flashattn4j.h).
    if (c.device.device_type == FA4J_DEVICE_CPU) check_cache_metadata(layout, lengths, s.batch, seqlen_new);

    config.shape = s;
    config.dtype = dtype;
    DecodeProblem p{};
    p.config = config;
    p.q = seq_tensor(q, "q", false);
    p.cache = layout;
    p.k_cache = cache_tensor(kc, "k_cache");
    p.v_cache = cache_tensor(*a.v_cache, "v_cache");
    p.cache_seqlens = lengths;
    if (append) {
        p.k_new = seq_tensor(*a.k_new, "k_new", false);
        p.v_new = seq_tensor(*a.v_new, "v_new", false);
    }
    p.seqlen_new = seqlen_new;
    if (prefix) {
        p.prefix_k = prefix_tensor(*a.prefix_k, "prefix_k");
        p.prefix_v = prefix_tensor(*a.prefix_v, "prefix_v");
    }
    p.prefix_len = prefix_len;
    p.has_prefix = prefix;
    p.out = seq_tensor(*a.out, "out", false);
    p.out_dtype = out_dtype;
    if (a.lse != nullptr) p.lse = lse_tensor(*a.lse, false);
    p.num_splits = a.num_splits;
    ValidatedCall call{};
    call.direction = FA4J_ATTENTION_DECODE;
    call.decode = ValidatedDecode{p, c.device, family};
    return call;
}

// ---- Merging partial results (FA4J_ATTENTION_MERGE) ------------------------------------------------------

ValidatedCall validate_merge(const fa4j_attention_args& a, fa4j_kernel_family family) {
    require_no_attention_fields(a);
    require_unused(a.q == nullptr, "q", a);
    require_unused(a.alibi_slopes == nullptr, "alibi_slopes", a);
    require_unused(a.k_cache == nullptr, "k_cache", a);
    require_unused(a.v_cache == nullptr, "v_cache", a);
    require_unused(a.block_table == nullptr, "block_table", a);
    require_unused(a.cache_seqlens == nullptr, "cache_seqlens", a);
    require_unused(a.k_new == nullptr, "k_new", a);
    require_unused(a.v_new == nullptr, "v_new", a);
    require_unused(a.prefix_k == nullptr, "prefix_k", a);
    require_unused(a.prefix_v == nullptr, "prefix_v", a);
    require_unused(a.num_splits == 0, "num_splits", a);
    FA4J_REQUIRE(a.merge_count >= 1, "merge_count must be at least 1, got " + std::to_string(a.merge_count));
    FA4J_REQUIRE(a.merge_out != nullptr && a.merge_lse != nullptr, "merge_out and merge_lse must point to merge_count tensors each");

    const DType out_dtype = check_descriptor(a.out, "out", 4);
    require_compute_dtype(out_dtype, "out");
    const fa4j_tensor& out = *a.out;
    FA4J_REQUIRE(out.shape[3] <= 1 || out.strides[3] == 1, describe("out", out) + ": head_dim must be contiguous (stride 1)");
    Common c{};
    c.dtype = out_dtype;
    c.device = out.device;
    c.shape = AttentionShape{out.shape[0], out.shape[1], 0, out.shape[2], 0, out.shape[3]};
    const AttentionShape& s = c.shape;
    if (a.lse != nullptr) check_lse(c, a.lse);

    MergeProblem p{};
    p.batch = s.batch;
    p.seqlen = s.seqlen_q;
    p.heads = s.heads_q;
    p.head_dim = s.head_dim;
    p.num_threads = a.num_threads;
    std::vector<std::string> names;
    names.reserve(2 * static_cast<size_t>(a.merge_count));
    for (int32_t n = 0; n < a.merge_count; ++n) {
        names.push_back("merge_out" + at(n));
        names.push_back("merge_lse" + at(n));
    }
    std::vector<NamedTensor> inputs;
    for (int32_t n = 0; n < a.merge_count; ++n) {
        const char* out_name = names[2 * static_cast<size_t>(n)].c_str();
        const char* lse_name = names[2 * static_cast<size_t>(n) + 1].c_str();
        const fa4j_tensor* t = a.merge_out[n];
        const fa4j_tensor* l = a.merge_lse[n];
        const DType dtype = check_descriptor(t, out_name, 4);
        require_compute_dtype(dtype, out_name);
        require_shape(*t, out_name, {s.batch, s.seqlen_q, s.heads_q, s.head_dim});
        require_same_device(c, *t, out_name);
        FA4J_REQUIRE(check_descriptor(l, lse_name, 3) == DType::F32, std::string(lse_name) + " must be float32");
        require_shape(*l, lse_name, {s.batch, s.heads_q, s.seqlen_q});
        require_same_device(c, *l, lse_name);
        p.states.push_back(MergeState{seq_tensor(*t, out_name, false), dtype, lse_tensor(*l, false)});
        inputs.push_back({t, out_name});
        inputs.push_back({l, lse_name});
    }
    check_not_self_overlapping(out, "out");
    std::vector<NamedTensor> outputs{{a.out, "out"}};
    if (a.lse != nullptr) {
        check_not_self_overlapping(*a.lse, "lse");
        outputs.push_back({a.lse, "lse"});
    }
    check_outputs_disjoint(outputs, inputs);
    p.out = seq_tensor(out, "out", false);
    p.out_dtype = out_dtype;
    if (a.lse != nullptr) p.lse = lse_tensor(*a.lse, false);
    ValidatedCall call{};
    call.direction = FA4J_ATTENTION_MERGE;
    call.merge = ValidatedMerge{std::move(p), c.device, family};
    return call;
}

}  // namespace

ValidatedCall validate(const fa4j_attention_args* args) {
    const fa4j_attention_args a = read_args(args);
    FA4J_REQUIRE(a.direction >= FA4J_ATTENTION_FORWARD && a.direction <= FA4J_ATTENTION_MERGE,
            "direction must be FA4J_ATTENTION_FORWARD (0), FA4J_ATTENTION_BACKWARD (1), FA4J_ATTENTION_DECODE (2) or "
            "FA4J_ATTENTION_MERGE (3), got " + std::to_string(a.direction));
    FA4J_REQUIRE(a.kernel_family >= FA4J_KERNEL_AUTO && a.kernel_family <= FA4J_KERNEL_SM90,
            "kernel_family must be an fa4j_kernel_family value (0..3), got " + std::to_string(a.kernel_family));
    FA4J_REQUIRE(a.num_threads >= 0, "num_threads must be >= 0");
    const auto family = static_cast<fa4j_kernel_family>(a.kernel_family);
    if (a.direction == FA4J_ATTENTION_MERGE || a.direction == FA4J_ATTENTION_DECODE) {
        if (a.quant_mode != FA4J_QUANT_NONE)
            fail(FA4J_ERROR_UNSUPPORTED, "quantized attention (quant_mode) is for the forward; KV-cache attention and "
                                         "merges take float32, float16 or bfloat16 tensors");
        require_no_quant_fields(a);
    }
    if (a.direction == FA4J_ATTENTION_MERGE) return validate_merge(a, family);
    if (a.direction == FA4J_ATTENTION_DECODE) {
        AttentionConfig config{};
        config.softmax_scale = a.softmax_scale;
        config.causal = a.causal != 0;
        config.num_threads = a.num_threads;
        config.deterministic = a.deterministic != 0;
        return validate_decode(a, config, family);
    }
    require_no_kv_cache_fields(a);
    const bool forward = a.direction == FA4J_ATTENTION_FORWARD;
    if (forward) require_no_gradient_fields(a);  // a forward given them was meant to be a backward
    const bool varlen = a.cu_seqlens_q != nullptr || a.cu_seqlens_k != nullptr;
    FA4J_REQUIRE(varlen || a.seqused_k == nullptr, "seqused_k needs cu_seqlens_q and cu_seqlens_k (varlen)");
    AttentionConfig config{};
    config.softmax_scale = a.softmax_scale;
    config.causal = a.causal != 0;
    config.num_threads = a.num_threads;
    config.deterministic = a.deterministic != 0;

    const QuantConfig quant = quant_config(a);
    if (quant.enabled()) check_quantized_call(a, quant, varlen);
    else require_no_quant_fields(a);
    config.quant = quant;

    Common c = check_qkv(a.q, a.k, a.v, varlen, quant.enabled());
    // After the shapes: a default scale of 1/sqrt(head_dim) is infinite for a bad head_dim, whose own
    // message names the real cause.
    FA4J_REQUIRE(std::isfinite(config.softmax_scale), "softmax_scale must be finite");
    check_softmax_scale(config.softmax_scale, c.shape.head_dim);
    check_qkv_devices(c, a.k, a.v);
    if (varlen) check_varlen(a, c, config);
    check_features(a, c, config);
    QuantInputs quant_inputs{};
    if (quant.enabled()) check_quantized_inputs(a, c, quant, quant_inputs);
    config.shape = c.shape;
    config.dtype = c.dtype;

    ValidatedCall call{};
    call.direction = static_cast<fa4j_attention_direction>(a.direction);
    if (forward) {
        check_seq_like(c, a.out, "out", false);
        check_lse(c, a.lse);
        check_not_self_overlapping(*a.out, "out");
        check_not_self_overlapping(*a.lse, "lse");
        std::vector<NamedTensor> inputs{{a.q, "q"}, {a.k, "k"}, {a.v, "v"}};
        for (const NamedTensor& t : {NamedTensor{a.q_scale, "q_scale"}, NamedTensor{a.k_scale, "k_scale"},
                                     NamedTensor{a.v_scale, "v_scale"}, NamedTensor{a.k_mean, "k_mean"}})
            if (t.tensor != nullptr) inputs.push_back(t);
        check_outputs_disjoint({{a.out, "out"}, {a.lse, "lse"}}, inputs);
        ForwardProblem p{config, seq_tensor(*a.q, "q", varlen), seq_tensor(*a.k, "k", varlen), seq_tensor(*a.v, "v", varlen),
                         seq_tensor(*a.out, "out", varlen), lse_tensor(*a.lse, varlen), quant_inputs};
        call.forward = ValidatedForward{p, c.device, family};
        return call;
    }
    check_seq_like(c, a.dout, "dout", false);
    check_seq_like(c, a.out, "out", false);
    check_lse(c, a.lse);
    check_seq_like(c, a.dq, "dq", false);
    check_seq_like(c, a.dk, "dk", true);
    check_seq_like(c, a.dv, "dv", true);
    check_not_self_overlapping(*a.dq, "dq");
    check_not_self_overlapping(*a.dk, "dk");
    check_not_self_overlapping(*a.dv, "dv");
    std::vector<NamedTensor> inputs{{a.dout, "dout"}, {a.q, "q"}, {a.k, "k"}, {a.v, "v"}, {a.out, "out"}, {a.lse, "lse"}};
    check_outputs_disjoint({{a.dq, "dq"}, {a.dk, "dk"}, {a.dv, "dv"}}, inputs);
    BackwardProblem p{config,
                      seq_tensor(*a.dout, "dout", varlen),
                      seq_tensor(*a.q, "q", varlen),
                      seq_tensor(*a.k, "k", varlen),
                      seq_tensor(*a.v, "v", varlen),
                      seq_tensor(*a.out, "out", varlen),
                      lse_tensor(*a.lse, varlen),
                      seq_tensor(*a.dq, "dq", varlen),
                      seq_tensor(*a.dk, "dk", varlen),
                      seq_tensor(*a.dv, "dv", varlen)};
    call.backward = ValidatedBackward{p, c.device, family};
    return call;
}

namespace {
// The prefix of fa4j_attention_params every caller must provide; later fields are optional.
constexpr size_t kMinParamsSize = offsetof(fa4j_attention_params, num_threads) + sizeof(int32_t);

fa4j_attention_args args_from(const fa4j_attention_params* params, fa4j_attention_direction direction) {
    FA4J_REQUIRE(params != nullptr, "params is null");
    FA4J_REQUIRE(params->struct_size >= kMinParamsSize,
            "params->struct_size is " + std::to_string(params->struct_size) + ", at least " +
                std::to_string(kMinParamsSize) + " expected (set it to sizeof(fa4j_attention_params))");
    fa4j_attention_args a{};
    a.struct_size = sizeof a;
    a.direction = direction;
    a.softmax_scale = params->softmax_scale;
    a.causal = params->causal;
    a.num_threads = params->num_threads;
    a.window_left = FA4J_WINDOW_UNBOUNDED;
    a.window_right = FA4J_WINDOW_UNBOUNDED;
    return a;
}
}  // namespace

fa4j_attention_args forward_args(const fa4j_attention_params* params, const fa4j_tensor* q, const fa4j_tensor* k,
                                 const fa4j_tensor* v, const fa4j_tensor* out, const fa4j_tensor* lse) {
    fa4j_attention_args a = args_from(params, FA4J_ATTENTION_FORWARD);
    a.q = q;
    a.k = k;
    a.v = v;
    a.out = out;
    a.lse = lse;
    return a;
}

fa4j_attention_args backward_args(const fa4j_attention_params* params, const fa4j_tensor* dout, const fa4j_tensor* q,
                                  const fa4j_tensor* k, const fa4j_tensor* v, const fa4j_tensor* out,
                                  const fa4j_tensor* lse, const fa4j_tensor* dq, const fa4j_tensor* dk,
                                  const fa4j_tensor* dv) {
    fa4j_attention_args a = args_from(params, FA4J_ATTENTION_BACKWARD);
    a.dout = dout;
    a.q = q;
    a.k = k;
    a.v = v;
    a.out = out;
    a.lse = lse;
    a.dq = dq;
    a.dk = dk;
    a.dv = dv;
    return a;
}

}  // namespace fa4j
