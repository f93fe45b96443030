#include "core/tensor_checks.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <sstream>

#include "core/error.hpp"

namespace fa4j {
namespace {

constexpr int kMaxRank = 8;

int64_t checked_mul(int64_t a, int64_t b, const char* name) {
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r)) fail(FA4J_ERROR_INVALID_ARGUMENT, std::string(name) + ": size overflows int64");
    return r;
}

int64_t checked_add(int64_t a, int64_t b, const char* name) {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r)) fail(FA4J_ERROR_INVALID_ARGUMENT, std::string(name) + ": size overflows int64");
    return r;
}

DType dtype_of(const fa4j_dtype& d, const char* name) {
    FA4J_REQUIRE(d.lanes == 1, std::string(name) + ": vector dtypes (lanes != 1) are not supported");
    DType dtype{};
    if (known_dtype(d, dtype)) return dtype;
    fail(FA4J_ERROR_UNSUPPORTED, std::string(name) + ": dtype (code " + std::to_string(d.code) + ", bits " +
                                     std::to_string(d.bits) + ") is not float32, float16, bfloat16, float8_e4m3fn, "
                                     "float8_e5m2, int8 or int4");
}

// Dimensions that matter for addressing (size > 1), sorted by ascending stride.
struct Dim {
    int64_t size;
    int64_t stride;
};

std::vector<Dim> addressing_dims(const fa4j_tensor& t) {
    std::vector<Dim> dims;
    for (int i = 0; i < t.ndim; ++i)
        if (t.shape[i] > 1) dims.push_back({t.shape[i], t.strides[i]});
    std::sort(dims.begin(), dims.end(), [](const Dim& a, const Dim& b) { return a.stride < b.stride; });
    return dims;
}

// [first byte, one past last byte] of the elements of t; empty tensors span nothing.
struct ByteRange {
    uintptr_t begin;
    uintptr_t end;
};

ByteRange byte_range(const fa4j_tensor& t) {
    if (element_count(t) == 0) return {0, 0};
    int64_t last = 0;
    for (int i = 0; i < t.ndim; ++i) last += (t.shape[i] - 1) * t.strides[i];  // overflow ruled out earlier
    const uintptr_t begin = reinterpret_cast<uintptr_t>(first_element(t));
    return {begin, begin + static_cast<uintptr_t>(span_bytes(t.dtype, last + 1))};
}

// One dimension of the difference of two views that step through memory with the same strides: an
// element of `a` at index i and one of `b` at index j differ by (i - j)·stride, with i - j in [lo, hi].
struct DigitRange {
    int64_t stride;
    int64_t lo;
    int64_t hi;
};

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// Can `delta` be written as sum(digit_k · stride_k) with lo_k <= digit_k <= hi_k, using dims [0, top]
// (sorted by ascending stride)? `reach[k]` bounds |sum| over dims [0, k). When every stride exceeds
// that bound the top digit has at most two candidates (floor and ceiling of delta / stride), so the
// search is exact and visits at most 2^rank paths.
bool reachable(const std::vector<DigitRange>& dims, const std::vector<int64_t>& reach, int top, int64_t delta) {
    if (top < 0) return delta == 0;
    const DigitRange& d = dims[top];
    const int64_t low = floor_div(delta, d.stride);
    for (int64_t digit : {low, low + 1}) {
        if (digit < d.lo || digit > d.hi) continue;
        const int64_t rest = delta - digit * d.stride;
        if (std::llabs(rest) <= reach[top] && reachable(dims, reach, top - 1, rest)) return true;
    }
    return false;
}

bool overlaps(const fa4j_tensor& a, const fa4j_tensor& b) {
    if (a.device.device_type != b.device.device_type || a.device.device_id != b.device.device_id) return false;
    const ByteRange ra = byte_range(a), rb = byte_range(b);
    if (ra.begin == ra.end || rb.begin == rb.end) return false;
    if (ra.end <= rb.begin || rb.end <= ra.begin) return false;
    // Extents intersect. Views interleaved in one buffer (q, k and v heads of a packed qkv, or dq, dk, dv
    // of a packed dqkv, also with fewer kv heads than query heads) are still disjoint; decide that
    // exactly when both views step with the same strides through one element type, else assume overlap.
    // Packed int4 (nibbles) is not analysed: intersecting extents count as overlap.
    if (a.ndim != b.ndim || a.dtype.bits != b.dtype.bits || a.dtype.bits < 8) return true;
    std::vector<DigitRange> dims;
    for (int i = 0; i < a.ndim; ++i) {
        if (a.shape[i] <= 1 && b.shape[i] <= 1) continue;
        if (a.strides[i] != b.strides[i] || a.strides[i] == 0) return true;
        dims.push_back({a.strides[i], -(b.shape[i] - 1), a.shape[i] - 1});
    }
    std::sort(dims.begin(), dims.end(), [](const DigitRange& x, const DigitRange& y) { return x.stride < y.stride; });
    std::vector<int64_t> reach(dims.size() + 1, 0);
    for (size_t k = 0; k < dims.size(); ++k) {
        reach[k + 1] = reach[k] + std::max(-dims[k].lo, dims[k].hi) * dims[k].stride;
        if (reach[k] >= dims[k].stride) return true;  // strides do not nest: the search would not be exact
    }
    const int64_t element = a.dtype.bits / 8;
    const int64_t delta_bytes = static_cast<int64_t>(rb.begin) - static_cast<int64_t>(ra.begin);
    if (delta_bytes % element != 0) return true;
    // b's first element minus a's: an element of each coincides iff the offset is reachable.
    return reachable(dims, reach, static_cast<int>(dims.size()) - 1, delta_bytes / element);
}

}  // namespace

bool known_dtype(const fa4j_dtype& d, DType& dtype) {
    if (d.lanes != 1) return false;
    if (d.code == FA4J_DTYPE_CODE_FLOAT && d.bits == 32) dtype = DType::F32;
    else if (d.code == FA4J_DTYPE_CODE_FLOAT && d.bits == 16) dtype = DType::F16;
    else if (d.code == FA4J_DTYPE_CODE_BFLOAT && d.bits == 16) dtype = DType::BF16;
    else if (d.code == FA4J_DTYPE_CODE_FLOAT8_E4M3FN && d.bits == 8) dtype = DType::F8E4M3;
    else if (d.code == FA4J_DTYPE_CODE_FLOAT8_E5M2 && d.bits == 8) dtype = DType::F8E5M2;
    else if (d.code == FA4J_DTYPE_CODE_INT && d.bits == 8) dtype = DType::I8;
    else if (d.code == FA4J_DTYPE_CODE_INT && d.bits == 4) dtype = DType::I4;
    else return false;
    return true;
}

int64_t span_bytes(const fa4j_dtype& d, int64_t elements) {
    if (d.bits >= 8) return elements * (d.bits / 8);
    const int64_t per_byte = 8 / d.bits;  // packed: divided first, so any element count fits
    return elements / per_byte + (elements % per_byte != 0 ? 1 : 0);
}

std::string packed_layout_problem(const fa4j_tensor& t) {
    if (t.dtype.bits >= 8) return "";
    if (t.ndim < 1) return "a packed int4 tensor needs at least one dimension";
    const int inner = t.ndim - 1;
    if (t.shape[inner] % 2 != 0)
        return "a packed int4 tensor's innermost dimension must have an even size (two elements per byte), has " +
               std::to_string(t.shape[inner]);
    int64_t count = 1;
    for (int i = 0; i < t.ndim; ++i) count *= t.shape[i] > 0 ? 1 : 0;
    if (count == 0) return "";  // no element: no byte to start on
    if (t.strides[inner] != 1)
        return "a packed int4 tensor's innermost dimension must be contiguous (stride 1), has stride " +
               std::to_string(t.strides[inner]);
    for (int i = 0; i < inner; ++i)
        if (t.shape[i] > 1 && t.strides[i] % 2 != 0)
            return "a packed int4 tensor's strides must be even outside the innermost dimension (rows start on a "
                   "byte); dimension " + std::to_string(i) + " has stride " + std::to_string(t.strides[i]);
    return "";
}

int64_t element_count(const fa4j_tensor& t) {
    int64_t n = 1;
    for (int i = 0; i < t.ndim; ++i) n *= t.shape[i];
    return n;
}

// Integer arithmetic: the offset is validated (no wrap) but may lie beyond what C++ calls the object.
char* first_element(const fa4j_tensor& t) {
    return reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(t.data) + static_cast<uintptr_t>(t.byte_offset));
}

namespace {

// The checks of every descriptor; `element_bytes` checks the dtype (at the point the messages have always
// reported it) and returns its size.
template <class ElementBytes>
void check_fields(const fa4j_tensor* t, const char* name, int expected_ndim, ElementBytes element_bytes) {
    const std::string n(name);
    FA4J_REQUIRE(t != nullptr, n + " is null");
    FA4J_REQUIRE(t->ndim == expected_ndim,
            n + " must have " + std::to_string(expected_ndim) + " dimensions, has " + std::to_string(t->ndim));
    FA4J_REQUIRE(t->ndim <= kMaxRank, n + ": too many dimensions");
    FA4J_REQUIRE(t->shape != nullptr, n + ": shape is null");
    FA4J_REQUIRE(t->strides != nullptr, n + ": strides is null (strides must be given explicitly)");
    FA4J_REQUIRE(t->device.device_type == FA4J_DEVICE_CPU || t->device.device_type == FA4J_DEVICE_CUDA,
            n + ": device type " + std::to_string(t->device.device_type) + " is neither CPU (1) nor CUDA (2)");
    FA4J_REQUIRE(t->device.device_id >= 0, n + ": negative device id");
    const int64_t element = element_bytes();  // 0 for packed int4 (nibbles)
    int64_t count = 1, last = 0;
    for (int i = 0; i < t->ndim; ++i) {
        FA4J_REQUIRE(t->shape[i] >= 0, n + ": negative size in dimension " + std::to_string(i));
        FA4J_REQUIRE(t->strides[i] >= 0, n + ": negative stride in dimension " + std::to_string(i));
        count = checked_mul(count, t->shape[i], name);
        if (t->shape[i] > 0) last = checked_add(last, checked_mul(t->shape[i] - 1, t->strides[i], name), name);
    }
    if (element == 0) {
        const std::string problem = packed_layout_problem(*t);
        FA4J_REQUIRE(problem.empty(), n + " " + shape_string(*t) + ": " + problem);
    }
    if (count > 0) {
        checked_mul(checked_add(last, 1, name), element == 0 ? 1 : element, name);
        FA4J_REQUIRE(t->data != nullptr, n + ": data is null");
        const int64_t alignment = element == 0 ? 1 : element;
        FA4J_REQUIRE(t->byte_offset % static_cast<uint64_t>(alignment) == 0, n + ": byte_offset is not a multiple of the element size");
        FA4J_REQUIRE(reinterpret_cast<uintptr_t>(t->data) % static_cast<uintptr_t>(alignment) == 0,
                n + ": data is not aligned to the element size");
        FA4J_REQUIRE(t->byte_offset <= static_cast<uint64_t>(INT64_MAX), n + ": byte_offset too large");
        // The last byte must be an address: data + byte_offset + extent may not wrap around.
        const uint64_t extent = static_cast<uint64_t>(element == 0 ? (last + 2) / 2 : (last + 1) * element);
        const uint64_t start = reinterpret_cast<uintptr_t>(t->data);
        FA4J_REQUIRE(t->byte_offset <= UINTPTR_MAX - start && extent <= UINTPTR_MAX - start - t->byte_offset,
                n + ": data + byte_offset + the tensor's extent wraps around the address space");
    }
}

}  // namespace

DType check_descriptor(const fa4j_tensor* t, const char* name, int expected_ndim) {
    DType dtype{};
    check_fields(t, name, expected_ndim, [&] {
        dtype = dtype_of(t->dtype, name);
        return static_cast<int64_t>(dtype_size(dtype));  // 0 for int4
    });
    return dtype;
}

void check_int32_descriptor(const fa4j_tensor* t, const char* name, int expected_ndim) {
    check_fields(t, name, expected_ndim, [&] {
        FA4J_REQUIRE(t->dtype.code == FA4J_DTYPE_CODE_INT && t->dtype.bits == 32 && t->dtype.lanes == 1,
                std::string(name) + " must be int32");
        return static_cast<int64_t>(sizeof(int32_t));
    });
}

void check_not_self_overlapping(const fa4j_tensor& t, const char* name) {
    if (element_count(t) == 0) return;
    const std::vector<Dim> dims = addressing_dims(t);
    int64_t span = 1;  // elements covered by the dimensions of smaller stride
    for (const Dim& d : dims) {
        FA4J_REQUIRE(d.stride >= span, std::string(name) + " " + shape_string(t) +
                                      ": layout maps several indices to one element; an output must not overlap itself");
        span = d.stride * d.size;
    }
}

void check_outputs_disjoint(const std::vector<NamedTensor>& outputs, const std::vector<NamedTensor>& inputs) {
    for (size_t i = 0; i < outputs.size(); ++i) {
        for (size_t j = i + 1; j < outputs.size(); ++j)
            FA4J_REQUIRE(!overlaps(*outputs[i].tensor, *outputs[j].tensor),
                    std::string(outputs[i].name) + " and " + outputs[j].name + " share memory");
        for (const NamedTensor& in : inputs)
            FA4J_REQUIRE(!overlaps(*outputs[i].tensor, *in.tensor),
                    std::string("output ") + outputs[i].name + " shares memory with input " + in.name);
    }
}

std::string shape_string(const fa4j_tensor& t) {
    std::ostringstream s;
    s << "shape [";
    for (int i = 0; i < t.ndim; ++i) s << (i ? ", " : "") << t.shape[i];
    s << "] strides [";
    for (int i = 0; i < t.ndim; ++i) s << (i ? ", " : "") << t.strides[i];
    s << "]";
    return s.str();
}

}  // namespace fa4j
