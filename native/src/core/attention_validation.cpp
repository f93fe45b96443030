#include "core/attention_validation.hpp"

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/softmax_scale.hpp"
#include "core/tensor_checks.hpp"

namespace fa4j {
namespace {

// The prefix of fa4j_attention_params every caller must provide; later fields are optional.
constexpr size_t kMinParamsSize = offsetof(fa4j_attention_params, num_threads) + sizeof(int32_t);

AttentionConfig read_params(const fa4j_attention_params* params) {
    require(params != nullptr, "params is null");
    require(params->struct_size >= kMinParamsSize,
            "params->struct_size is " + std::to_string(params->struct_size) + ", at least " +
                std::to_string(kMinParamsSize) + " expected (set it to sizeof(fa4j_attention_params))");
    require(std::isfinite(params->softmax_scale), "softmax_scale must be finite");
    require(params->num_threads >= 0, "num_threads must be >= 0");
    AttentionConfig config{};
    config.softmax_scale = params->softmax_scale;
    config.causal = params->causal != 0;
    config.num_threads = params->num_threads;
    return config;
}

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

SeqTensor seq_tensor(const fa4j_tensor& t, const char* name) {
    require(t.shape[3] <= 1 || t.strides[3] == 1, describe(name, t) + ": head_dim must be contiguous (stride 1)");
    return SeqTensor{first_element(t), t.strides[0], t.strides[1], t.strides[2]};
}

LseTensor lse_tensor(const fa4j_tensor& t) {
    return LseTensor{reinterpret_cast<float*>(first_element(t)), t.strides[0], t.strides[1], t.strides[2]};
}

// Shape, dtype and device shared by every call; q, k, v give the problem, everything else must agree.
struct Common {
    AttentionShape shape;
    DType dtype;
    fa4j_device device;
};

Common check_qkv(const fa4j_tensor* q, const fa4j_tensor* k, const fa4j_tensor* v) {
    const DType dtype = check_descriptor(q, "q", 4);
    require(check_descriptor(k, "k", 4) == dtype, "k must have the dtype of q (" + std::string(dtype_name(dtype)) + ")");
    require(check_descriptor(v, "v", 4) == dtype, "v must have the dtype of q (" + std::string(dtype_name(dtype)) + ")");
    AttentionShape s{q->shape[0], q->shape[1], k->shape[1], q->shape[2], k->shape[2], q->shape[3]};
    require_shape(*k, "k", {s.batch, k->shape[1], k->shape[2], s.head_dim});
    require_shape(*v, "v", {s.batch, s.seqlen_k, s.heads_kv, s.head_dim});
    require(s.heads_q >= 1 && s.heads_kv >= 1, "the number of heads of q, k and v must be at least 1");
    require(s.heads_q % s.heads_kv == 0, "heads of q (" + std::to_string(s.heads_q) +
                                             ") must be a multiple of heads of k and v (" + std::to_string(s.heads_kv) + ")");
    if (s.head_dim < kHeadDimMultiple || s.head_dim > kMaxHeadDim || s.head_dim % kHeadDimMultiple != 0)
        fail(FA4J_ERROR_UNSUPPORTED, "head_dim " + std::to_string(s.head_dim) + " is not supported: it must be a multiple of " +
                                         std::to_string(kHeadDimMultiple) + " between " + std::to_string(kHeadDimMultiple) +
                                         " and " + std::to_string(kMaxHeadDim));
    return Common{s, dtype, q->device};
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
    require(t.device.device_type == c.device.device_type && t.device.device_id == c.device.device_id,
            std::string(name) + " is on another device than q (all tensors of one call must share a device)");
}

void check_seq_like(const Common& c, const fa4j_tensor* t, const char* name, bool keys) {
    const DType dtype = check_descriptor(t, name, 4);
    require(dtype == c.dtype, std::string(name) + " must have the dtype of q (" + dtype_name(c.dtype) + ")");
    const AttentionShape& s = c.shape;
    if (keys) require_shape(*t, name, {s.batch, s.seqlen_k, s.heads_kv, s.head_dim});
    else require_shape(*t, name, {s.batch, s.seqlen_q, s.heads_q, s.head_dim});
    require_same_device(c, *t, name);
}

void check_lse(const Common& c, const fa4j_tensor* lse) {
    require(check_descriptor(lse, "lse", 3) == DType::F32, "lse must be float32");
    require_shape(*lse, "lse", {c.shape.batch, c.shape.heads_q, c.shape.seqlen_q});
    require_same_device(c, *lse, "lse");
}

void check_qkv_devices(const Common& c, const fa4j_tensor* k, const fa4j_tensor* v) {
    require_same_device(c, *k, "k");
    require_same_device(c, *v, "v");
}

}  // namespace

ValidatedForward validate_forward(const fa4j_attention_params* params, const fa4j_tensor* q, const fa4j_tensor* k,
                                  const fa4j_tensor* v, const fa4j_tensor* out, const fa4j_tensor* lse) {
    AttentionConfig config = read_params(params);
    const Common c = check_qkv(q, k, v);
    check_softmax_scale(config.softmax_scale, c.shape.head_dim);
    check_qkv_devices(c, k, v);
    check_seq_like(c, out, "out", false);
    check_lse(c, lse);
    check_not_self_overlapping(*out, "out");
    check_not_self_overlapping(*lse, "lse");
    check_outputs_disjoint({{out, "out"}, {lse, "lse"}}, {{q, "q"}, {k, "k"}, {v, "v"}});

    config.shape = c.shape;
    config.dtype = c.dtype;
    ForwardProblem p{config, seq_tensor(*q, "q"), seq_tensor(*k, "k"), seq_tensor(*v, "v"), seq_tensor(*out, "out"),
                     lse_tensor(*lse)};
    return ValidatedForward{p, c.device};
}

ValidatedBackward validate_backward(const fa4j_attention_params* params, const fa4j_tensor* dout, const fa4j_tensor* q,
                                    const fa4j_tensor* k, const fa4j_tensor* v, const fa4j_tensor* out,
                                    const fa4j_tensor* lse, const fa4j_tensor* dq, const fa4j_tensor* dk,
                                    const fa4j_tensor* dv) {
    AttentionConfig config = read_params(params);
    const Common c = check_qkv(q, k, v);
    check_softmax_scale(config.softmax_scale, c.shape.head_dim);
    check_qkv_devices(c, k, v);
    check_seq_like(c, dout, "dout", false);
    check_seq_like(c, out, "out", false);
    check_lse(c, lse);
    check_seq_like(c, dq, "dq", false);
    check_seq_like(c, dk, "dk", true);
    check_seq_like(c, dv, "dv", true);
    check_not_self_overlapping(*dq, "dq");
    check_not_self_overlapping(*dk, "dk");
    check_not_self_overlapping(*dv, "dv");
    check_outputs_disjoint({{dq, "dq"}, {dk, "dk"}, {dv, "dv"}},
                           {{dout, "dout"}, {q, "q"}, {k, "k"}, {v, "v"}, {out, "out"}, {lse, "lse"}});

    config.shape = c.shape;
    config.dtype = c.dtype;
    BackwardProblem p{config,           seq_tensor(*dout, "dout"), seq_tensor(*q, "q"),   seq_tensor(*k, "k"),
                      seq_tensor(*v, "v"), seq_tensor(*out, "out"), lse_tensor(*lse),       seq_tensor(*dq, "dq"),
                      seq_tensor(*dk, "dk"), seq_tensor(*dv, "dv")};
    return ValidatedBackward{p, c.device};
}

}  // namespace fa4j
