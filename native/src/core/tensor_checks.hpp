// Validation of fa4j_tensor descriptors coming from callers: nothing a caller passes may make a
// backend read or write outside the tensors it was handed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "flashattn4j.h"

namespace fa4j {

// The DType of a DLPack dtype this library knows (int32 is not one); false if none.
bool known_dtype(const fa4j_dtype& d, DType& dtype);

// Bytes holding `elements` consecutive elements: bits / 8 each, or for packed int4 half a byte each, rounded up.
int64_t span_bytes(const fa4j_dtype& d, int64_t elements);

// Why a tensor of a packed sub-byte dtype (int4) breaks the packing rule of flashattn4j.h (ndim >= 1, an
// even innermost size with stride 1, even strides elsewhere), or "" if it does not (or is not packed).
// Needs a descriptor whose shape and strides may be read.
std::string packed_layout_problem(const fa4j_tensor& t);

// Checks the descriptor itself (non-null fields, rank, non-negative sizes and strides, a supported
// dtype with lanes == 1, aligned data, a known device type, the int4 packing rule) and returns its dtype.
DType check_descriptor(const fa4j_tensor* t, const char* name, int expected_ndim);

// check_descriptor for tensors of int32 (sequence offsets and lengths), which attention's data never is.
void check_int32_descriptor(const fa4j_tensor* t, const char* name, int expected_ndim);

int64_t element_count(const fa4j_tensor& t);

// Byte address of element (0, ..., 0).
char* first_element(const fa4j_tensor& t);

// Requires that no two index tuples of `t` address the same element (writes would race).
void check_not_self_overlapping(const fa4j_tensor& t, const char* name);

struct NamedTensor {
    const fa4j_tensor* tensor;
    const char* name;
};

// Requires that every output shares no byte with any other listed tensor (inputs or outputs).
void check_outputs_disjoint(const std::vector<NamedTensor>& outputs, const std::vector<NamedTensor>& inputs);

std::string shape_string(const fa4j_tensor& t);

}  // namespace fa4j
