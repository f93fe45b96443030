#include "core/quantize_validation.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/tensor_checks.hpp"

namespace fa4j {
namespace {

constexpr size_t kMinQuantizeArgsSize = offsetof(fa4j_quantize_args, mean) + sizeof(const fa4j_tensor*);

fa4j_quantize_args read_quantize_args(const fa4j_quantize_args* args) {
    FA4J_REQUIRE(args != nullptr, "args is null");
    FA4J_REQUIRE(args->struct_size >= kMinQuantizeArgsSize,
            "args->struct_size is " + std::to_string(args->struct_size) + ", at least " + std::to_string(kMinQuantizeArgsSize) +
                " expected (set it to sizeof(fa4j_quantize_args))");
    fa4j_quantize_args a{};
    std::memcpy(&a, args, std::min(args->struct_size, sizeof a));
    return a;
}

void require_same_device(const fa4j_tensor& t, const fa4j_tensor& reference, const char* name) {
    FA4J_REQUIRE(t.device.device_type == reference.device.device_type && t.device.device_id == reference.device.device_id,
            std::string(name) + " is on another device than input (all tensors of one call must share a device)");
}

// A contiguous float32 tensor of exactly `shape`; returns its data.
float* float_output(const fa4j_tensor* t, const fa4j_tensor& input, const char* name, const int64_t* shape, int rank) {
    std::string want = "[";
    for (int j = 0; j < rank; ++j) want += (j ? ", " : "") + std::to_string(shape[j]);
    want += "]";
    FA4J_REQUIRE(t != nullptr, std::string(name) + " is null");
    FA4J_REQUIRE(t->ndim == rank, std::string(name) + " must be float32 " + want + ", has " + std::to_string(t->ndim) + " dimensions");
    FA4J_REQUIRE(check_descriptor(t, name, rank) == DType::F32, std::string(name) + " must be float32");
    int64_t stride = 1;
    for (int i = rank - 1; i >= 0; --i) {
        FA4J_REQUIRE(t->shape[i] == shape[i], std::string(name) + " " + shape_string(*t) + " does not match the expected shape " + want);
        FA4J_REQUIRE(shape[i] <= 1 || t->strides[i] == stride, std::string(name) + " " + shape_string(*t) + " must be contiguous");
        stride *= shape[i];
    }
    require_same_device(*t, input, name);
    check_not_self_overlapping(*t, name);
    return reinterpret_cast<float*>(first_element(*t));
}

}  // namespace

ValidatedQuantize validate_quantize(const fa4j_quantize_args* args) {
    const fa4j_quantize_args a = read_quantize_args(args);
    FA4J_REQUIRE(a.mode > FA4J_QUANT_NONE && a.mode <= FA4J_QUANT_FP8,
            "mode must be an fa4j_quant_mode value other than NONE (1..5), got " + std::to_string(a.mode));
    FA4J_REQUIRE(a.operand >= FA4J_QUANT_OPERAND_Q && a.operand <= FA4J_QUANT_OPERAND_V,
            "operand must be an fa4j_quant_operand value (0..2), got " + std::to_string(a.operand));
    FA4J_REQUIRE((a.flags & ~FA4J_QUANT_NO_SMOOTH_K) == 0,
            "flags may hold FA4J_QUANT_NO_SMOOTH_K only (fa4j_quantize never smooths q), got " + std::to_string(a.flags));
    FA4J_REQUIRE(a.num_threads >= 0, "num_threads must be >= 0");
    quant::QuantizeProblem p{};
    p.mode = static_cast<QuantMode>(a.mode);
    p.operand = static_cast<quant::Operand>(a.operand);
    p.smooth = p.operand == quant::Operand::K && (a.flags & FA4J_QUANT_NO_SMOOTH_K) == 0;
    p.num_threads = a.num_threads;
    const std::string mode = quant::mode_name(p.mode);
    if (!quant::has_scale(p.mode, p.operand))
        fail(FA4J_ERROR_INVALID_ARGUMENT, mode + " does not quantize v: P·v runs in float16 there (pass v as float16, "
                                               "bfloat16 or float32 to the attention call)");

    p.input_dtype = check_descriptor(a.input, "input", 4);
    FA4J_REQUIRE(is_compute_dtype(p.input_dtype), std::string("input must be float32, float16 or bfloat16, not ") + dtype_name(p.input_dtype));
    const fa4j_tensor& in = *a.input;
    FA4J_REQUIRE(in.shape[3] <= 1 || in.strides[3] == 1, "input " + shape_string(in) + ": head_dim must be contiguous (stride 1)");
    p.batch = in.shape[0];
    p.seq = in.shape[1];
    p.heads = in.shape[2];
    p.head_dim = in.shape[3];

    const DType wanted = quant::quantized_dtype(p.mode, p.operand);
    FA4J_REQUIRE(a.output != nullptr, "output is null");
    p.output_dtype = check_descriptor(a.output, "output", 4);
    FA4J_REQUIRE(p.output_dtype == wanted, mode + " quantizes " + quant::operand_name(p.operand) + " to " + dtype_name(wanted) +
                                          "; output is " + dtype_name(p.output_dtype));
    const fa4j_tensor& out = *a.output;
    for (int i = 0; i < 4; ++i)
        FA4J_REQUIRE(out.shape[i] == in.shape[i], "output " + shape_string(out) + " must have the shape of input " + shape_string(in));
    FA4J_REQUIRE(out.shape[3] <= 1 || out.strides[3] == 1, "output " + shape_string(out) + ": head_dim must be contiguous (stride 1)");
    require_same_device(out, in, "output");
    check_not_self_overlapping(out, "output");

    int64_t shape[3];
    const int rank = quant::scale_shape(p.mode, p.operand, p.batch, p.seq, p.heads, p.head_dim, shape);
    p.scale = float_output(a.scale, in, "scale", shape, rank);
    std::vector<NamedTensor> outputs{{a.output, "output"}, {a.scale, "scale"}};
    if (a.mean != nullptr) {
        FA4J_REQUIRE(p.smooth, "mean is written only when k is smoothed (operand K without FA4J_QUANT_NO_SMOOTH_K)");
        const int64_t mean_shape[3] = {p.batch, p.heads, p.head_dim};
        p.mean = float_output(a.mean, in, "mean", mean_shape, 3);
        outputs.push_back({a.mean, "mean"});
    }
    check_outputs_disjoint(outputs, {{a.input, "input"}});
    p.input = SeqTensor{first_element(in), in.strides[0], in.strides[1], in.strides[2]};
    p.output = SeqTensor{first_element(out), out.strides[0], out.strides[1], out.strides[2]};
    return ValidatedQuantize{p, in.device};
}

}  // namespace fa4j
