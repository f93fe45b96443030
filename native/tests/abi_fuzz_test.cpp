// Random calls through the C ABI, as a binding in another language or a confused caller makes them:
// mostly well-formed forward, backward, decode, merge, quantized and quantize calls on CPU tensors and
// DLPack imports (with re-export and release), then
// broken in up to three places (a dtype, a rank, a dimension, a stride, an offset, a device, a missing or
// aliased tensor, a struct size, a scalar option, sequence metadata). For every call:
//  - the process survives; run it under ASan/UBSan (./build.sh sanitize) to see every stray access;
//  - the status is one the header defines, never FA4J_ERROR_INTERNAL, and an error has a message;
//  - fa4j_attention_support answers with the same status and message as the call, and writes nothing;
//    a short reason buffer gets a NUL-terminated prefix of the message and nothing beyond its capacity;
//  - a refused call writes nothing: every byte of every tensor is as before;
//  - an accepted call on finite inputs writes finite outputs (lse: finite or -infinity).
// Memory: each tensor gets its own allocation of exactly the bytes its descriptor spans, so the sanitizer
// catches any access outside it. A descriptor whose span does not fit in 63 bits (or that is malformed)
// gets 64 bytes: the library must refuse it before touching it. A representable span beyond the fuzzer's
// memory cap is only asked about (the support query reads no tensor data), never run.
//
// usage: abi_fuzz_test [--iterations N] [--seed S] [--dlpack-only]   (a failure prints its seed and iteration: replay
// with --seed S --iterations I+1 to reach it; FA4J_FUZZ_TRACE=1 prints each call before it runs)
#include <flashattn4j.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "support/abi_values.hpp"
#include "support/dlpack_structs.hpp"
#include "support/half_codec.hpp"
#include "support/test_report.hpp"

namespace {

using namespace fa4j_test;

constexpr int64_t kMemoryCap = int64_t{1} << 26;  // bytes one tensor may span and still be run
constexpr int kMaxRank = 6;

bool same(fa4j_dtype a, fa4j_dtype b) { return a.code == b.code && a.bits == b.bits && a.lanes == b.lanes; }
bool is_float(fa4j_dtype d) { return same(d, kF32) || same(d, kF16) || same(d, kBF16); }

using Rng = std::mt19937_64;
int pick(Rng& rng, int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); }
bool chance(Rng& rng, double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }

// One tensor of a call: its descriptor, and the allocation that backs it once placed.
struct Tensor {
    std::string name;
    bool metadata = false;   // read on the host by the support query too: lengths, offsets, block table, ALiBi slopes
    bool output = false;     // the call writes it (its bytes may change on success)
    std::vector<int32_t> values;  // metadata: the logical values, row-major
    int64_t shape[kMaxRank] = {};
    int64_t strides[kMaxRank] = {};
    fa4j_tensor t{};
    std::unique_ptr<unsigned char[]> memory;
    size_t bytes = 0;
    bool huge = false;       // representable span beyond the cap: support query only

    Tensor(std::string n, fa4j_dtype dtype, std::vector<int64_t> dims) : name(std::move(n)) {
        t.device = kCpu;
        t.dtype = dtype;
        t.ndim = static_cast<int32_t>(dims.size());
        t.shape = shape;
        t.strides = strides;
        for (size_t i = 0; i < dims.size(); i++) shape[i] = dims[i];
        int64_t stride = 1;
        for (int i = t.ndim - 1; i >= 0; i--) {
            strides[i] = stride;
            stride *= std::max<int64_t>(shape[i], 1);
        }
    }

    // Row-major strides with the outer dimensions permuted and padded: the layouts callers pass
    // (transposed heads, packed qkv, padded rows). The innermost stays contiguous.
    void scramble(Rng& rng) {
        if (t.ndim < 3) return;
        std::vector<int> order;
        for (int i = 0; i < t.ndim - 1; i++) order.push_back(i);
        std::shuffle(order.begin(), order.end(), rng);
        const int64_t unit = t.dtype.bits == 4 ? 2 : 1;
        int64_t stride = shape[t.ndim - 1] + unit * pick(rng, 3);
        for (int k = static_cast<int>(order.size()) - 1; k >= 0; k--) {
            strides[order[k]] = stride;
            stride *= std::max<int64_t>(shape[order[k]], 1);
            stride += unit * pick(rng, 2);
        }
    }
};

using TensorPtr = std::unique_ptr<Tensor>;

// Spans are computed exactly, beyond 64 bits, to tell a representable descriptor from an overflowing one.
__extension__ typedef __int128 Wide;

// Bytes [lo, hi) a descriptor spans relative to data, or false if it is malformed or beyond 63 bits.
bool span(const fa4j_tensor& t, Wide& lo, Wide& hi) {
    const Wide limit = std::numeric_limits<int64_t>::max();
    if (t.ndim < 0 || t.ndim > 64 || (t.ndim > 0 && (t.shape == nullptr || t.strides == nullptr))) return false;
    if (t.dtype.bits == 0 || (t.dtype.bits % 8 != 0 && t.dtype.bits != 4)) return false;
    Wide min = 0, max = 0;
    for (int i = 0; i < t.ndim; i++) {
        if (t.shape[i] < 0) return false;
        if (t.shape[i] == 0) {
            lo = hi = 0;
            return true;
        }
        const Wide reach = static_cast<Wide>(t.shape[i] - 1) * t.strides[i];
        (reach < 0 ? min : max) += reach;
        if (min < -limit || max > limit) return false;
    }
    const Wide lanes = t.dtype.lanes == 0 ? 1 : t.dtype.lanes;
    const Wide offset = t.byte_offset;
    if (t.dtype.bits == 4) {
        lo = offset + (min < 0 ? (min - 1) / 2 : min / 2);
        hi = offset + max / 2 + 1;
    } else {
        const Wide size = t.dtype.bits / 8 * lanes;
        lo = offset + min * size;
        hi = offset + (max + 1) * size;
    }
    return lo >= -limit && hi <= limit;
}

uint16_t half_bits(float x, fa4j_dtype d) { return same(d, kF16) ? encode_f16(x) : encode_bf16(x); }

// Fills the allocation with values of the tensor's dtype: finite inputs everywhere, whatever the layout.
void fill(Tensor& x, Rng& rng) {
    std::uniform_real_distribution<float> uniform(-2.f, 2.f);
    unsigned char* p = x.memory.get();
    const fa4j_dtype d = x.t.dtype;
    if (same(d, kF32)) {
        for (size_t i = 0; i + 4 <= x.bytes; i += 4) {
            const float f = uniform(rng);
            std::memcpy(p + i, &f, 4);
        }
    } else if (same(d, kF16) || same(d, kBF16)) {
        for (size_t i = 0; i + 2 <= x.bytes; i += 2) {
            const uint16_t h = half_bits(uniform(rng), d);
            std::memcpy(p + i, &h, 2);
        }
    } else if (same(d, kE4M3) || same(d, kE5M2)) {
        for (size_t i = 0; i < x.bytes; i++) {
            unsigned char b = static_cast<unsigned char>(rng());
            if ((b & 0x7f) >= 0x78) b &= 0x37;  // no NaN or infinity: finite codes only
            p[i] = b;
        }
    } else {
        for (size_t i = 0; i < x.bytes; i++) p[i] = static_cast<unsigned char>(rng());
    }
}

// Writes metadata values at their logical positions (row-major over the descriptor's shape), if the
// descriptor still has the int32 dtype; otherwise the random fill stays.
void write_metadata(Tensor& x, unsigned char* data) {
    if (x.values.empty() || !same(x.t.dtype, kI32) || x.t.ndim < 1 || x.t.ndim > 2) return;
    const int64_t rows = x.t.ndim == 2 ? x.shape[0] : 1, cols = x.shape[x.t.ndim - 1];
    const int64_t row_stride = x.t.ndim == 2 ? x.strides[0] : 0, col_stride = x.strides[x.t.ndim - 1];
    if (rows <= 0 || cols <= 0) return;
    // Broken shapes may claim far more elements (stride 0) than there are values: only the values are walked.
    for (size_t n = 0; n < x.values.size() && static_cast<int64_t>(n / static_cast<size_t>(cols)) < rows; n++) {
        const int64_t r = static_cast<int64_t>(n / static_cast<size_t>(cols)), c = static_cast<int64_t>(n % static_cast<size_t>(cols));
        std::memcpy(data + x.t.byte_offset + 4 * (r * row_stride + c * col_stride), &x.values[n], 4);
    }
}

// Gives every tensor memory for its (possibly broken) descriptor; false if any metadata tensor is huge
// (the support query reads metadata, so such a call cannot be made safely).
bool place(std::vector<Tensor*>& tensors, Rng& rng) {
    for (Tensor* x : tensors) {
        Wide lo = 0, hi = 0;
        bool valid = span(x->t, lo, hi);
        x->huge = valid && hi - lo > kMemoryCap;
        if (x->huge && x->metadata) return false;
        x->bytes = !valid || x->huge ? 64 : static_cast<size_t>(std::max<Wide>(hi - lo, 1));
        x->memory.reset(new unsigned char[x->bytes]);
        fill(*x, rng);
        const intptr_t base = reinterpret_cast<intptr_t>(x->memory.get());
        // data + lo is the allocation's first byte (wrapping arithmetic: lo may be far from 0).
        x->t.data = valid && !x->huge ? reinterpret_cast<void*>(static_cast<intptr_t>(
                                            static_cast<uint64_t>(base) - static_cast<uint64_t>(static_cast<int64_t>(lo))))
                                      : x->memory.get();
        if (x->metadata && valid && !x->huge) write_metadata(*x, static_cast<unsigned char*>(x->t.data));
    }
    return true;
}

// ---- building a call ----

struct Call {
    std::vector<TensorPtr> owned;
    fa4j_attention_args args{};
    fa4j_quantize_args quantize{};
    bool is_quantize = false;
    std::vector<const fa4j_tensor*> merge_out, merge_lse;
    std::string shape;               // what the call is, for failure messages
    bool values_trusted = true;      // inputs are finite values of their dtype (no reinterpretation)
    int mutations = 0;

    Tensor* add(std::string name, fa4j_dtype d, std::vector<int64_t> dims, bool output = false) {
        owned.push_back(std::make_unique<Tensor>(std::move(name), d, std::move(dims)));
        owned.back()->output = output;
        return owned.back().get();
    }
    Tensor* metadata(std::string name, std::vector<int32_t> values, std::vector<int64_t> dims) {
        Tensor* x = add(std::move(name), kI32, std::move(dims));
        x->metadata = true;
        x->values = std::move(values);
        return x;
    }
};

fa4j_dtype float_dtype(Rng& rng) {
    const fa4j_dtype all[] = {kF32, kF16, kBF16};
    return all[pick(rng, 3)];
}

int64_t head_dim(Rng& rng) {
    const int64_t dims[] = {8, 16, 24, 32, 40, 64, 72, 128, 12, 264};
    return dims[chance(rng, 0.9) ? pick(rng, 7) : 7 + pick(rng, 3)];
}

std::vector<int32_t> offsets(const std::vector<int32_t>& lengths) {
    std::vector<int32_t> cu{0};
    for (int32_t n : lengths) cu.push_back(cu.back() + n);
    return cu;
}

void score_options(Call& c, Rng& rng) {
    fa4j_attention_args& a = c.args;
    a.softmax_scale = std::uniform_real_distribution<float>(0.05f, 0.5f)(rng);
    a.causal = chance(rng, 0.4);
    a.window_left = chance(rng, 0.2) ? pick(rng, 20) : -1;
    a.window_right = chance(rng, 0.2) ? pick(rng, 20) : -1;
    a.softcap = chance(rng, 0.15) ? std::uniform_real_distribution<float>(1.f, 30.f)(rng) : 0.f;
    a.num_threads = pick(rng, 4);
}

void alibi(Call& c, Rng& rng, int64_t batch, int64_t heads) {
    if (!chance(rng, 0.15)) return;
    Tensor* s = chance(rng, 0.5) ? c.add("alibi", kF32, {heads}) : c.add("alibi", kF32, {batch, heads});
    s->metadata = true;  // host slopes are read (checked for finiteness) by the call and the support query
    c.args.alibi_slopes = &s->t;
}

// Forward (and with `backward` the gradients too), dense or varlen, any GQA grouping.
void attention_call(Call& c, Rng& rng, bool backward) {
    fa4j_attention_args& a = c.args;
    a.direction = backward ? FA4J_ATTENTION_BACKWARD : FA4J_ATTENTION_FORWARD;
    score_options(c, rng);
    const fa4j_dtype d = float_dtype(rng);
    const int64_t batch = 1 + pick(rng, 3), hkv = 1 + pick(rng, 3), hq = hkv * (1 + pick(rng, 3)), dim = head_dim(rng);
    const bool varlen = chance(rng, 0.3);
    Tensor *q, *k, *v, *out, *lse;
    if (varlen) {
        std::vector<int32_t> lq, lk;
        for (int64_t b = 0; b < batch; b++) {
            lq.push_back(pick(rng, 24));
            lk.push_back(pick(rng, 24));
        }
        const std::vector<int32_t> cq = offsets(lq), ck = offsets(lk);
        const int64_t tq = cq.back(), tk = ck.back();
        q = c.add("q", d, {tq, hq, dim});
        k = c.add("k", d, {tk, hkv, dim});
        v = c.add("v", d, {tk, hkv, dim});
        out = c.add("out", d, {tq, hq, dim}, true);
        lse = c.add("lse", kF32, {hq, tq}, true);
        a.cu_seqlens_q = &c.metadata("cu_seqlens_q", cq, {batch + 1})->t;
        a.cu_seqlens_k = &c.metadata("cu_seqlens_k", ck, {batch + 1})->t;
        if (chance(rng, 0.3)) {
            std::vector<int32_t> used;
            for (int32_t n : lk) used.push_back(pick(rng, n + 1));
            a.seqused_k = &c.metadata("seqused_k", used, {batch})->t;
        }
        if (chance(rng, 0.5)) {
            a.max_seqlen_q = *std::max_element(lq.begin(), lq.end());
            a.max_seqlen_k = *std::max_element(lk.begin(), lk.end());
        }
        c.shape = "varlen b" + std::to_string(batch) + " tq" + std::to_string(tq) + " tk" + std::to_string(tk);
    } else {
        const int64_t nq = pick(rng, 33), nk = pick(rng, 33);
        q = c.add("q", d, {batch, nq, hq, dim});
        k = c.add("k", d, {batch, nk, hkv, dim});
        v = c.add("v", d, {batch, nk, hkv, dim});
        out = c.add("out", d, {batch, nq, hq, dim}, true);
        lse = c.add("lse", kF32, {batch, hq, nq}, true);
        c.shape = "b" + std::to_string(batch) + " nq" + std::to_string(nq) + " nk" + std::to_string(nk);
    }
    c.shape += " h" + std::to_string(hq) + "/" + std::to_string(hkv) + " d" + std::to_string(dim);
    for (Tensor* x : {q, k, v, out}) x->scramble(rng);
    a.q = &q->t;
    a.k = &k->t;
    a.v = &v->t;
    if (backward) {
        // out and lse are inputs of the backward; dout, dq, dk, dv mirror q, k, v.
        out->output = lse->output = false;
        a.out = &out->t;
        a.lse = &lse->t;
        Tensor* dout = c.add("dout", d, std::vector<int64_t>(q->shape, q->shape + q->t.ndim));
        Tensor* dq = c.add("dq", d, std::vector<int64_t>(q->shape, q->shape + q->t.ndim), true);
        Tensor* dk = c.add("dk", d, std::vector<int64_t>(k->shape, k->shape + k->t.ndim), true);
        Tensor* dv = c.add("dv", d, std::vector<int64_t>(v->shape, v->shape + v->t.ndim), true);
        for (Tensor* x : {dout, dq, dk, dv}) x->scramble(rng);
        a.dout = &dout->t;
        a.dq = &dq->t;
        a.dk = &dk->t;
        a.dv = &dv->t;
    } else {
        a.out = &out->t;
        a.lse = chance(rng, 0.9) ? &lse->t : nullptr;
    }
    alibi(c, rng, batch, hq);
}

// Decode against a dense or paged cache, with optional append and shared prefix.
void decode_call(Call& c, Rng& rng) {
    fa4j_attention_args& a = c.args;
    a.direction = FA4J_ATTENTION_DECODE;
    score_options(c, rng);
    const fa4j_dtype d = float_dtype(rng);
    const int64_t batch = 1 + pick(rng, 3), hkv = 1 + pick(rng, 2), hq = hkv * (1 + pick(rng, 4)), dim = head_dim(rng);
    const int64_t nq = pick(rng, 4), nnew = chance(rng, 0.5) ? pick(rng, 4) : 0;
    const bool paged = chance(rng, 0.5);
    const int64_t page = 8 * (1 + pick(rng, 2)), max_pages = 1 + pick(rng, 4);
    const int64_t capacity = paged ? page * max_pages : 8 + pick(rng, 40);
    std::vector<int32_t> lengths;
    for (int64_t b = 0; b < batch; b++) lengths.push_back(pick(rng, static_cast<int>(capacity - nnew + 1)));
    Tensor* q = c.add("q", d, {batch, nq, hq, dim});
    Tensor* out = c.add("out", chance(rng, 0.2) ? kF32 : d, {batch, nq, hq, dim}, true);
    Tensor* lse = c.add("lse", kF32, {batch, hq, nq}, true);
    Tensor *kc, *vc;
    if (paged) {
        const int64_t pages = batch * max_pages + pick(rng, 3);
        std::vector<int32_t> ids(static_cast<size_t>(pages));
        for (size_t i = 0; i < ids.size(); i++) ids[i] = static_cast<int32_t>(i);
        std::shuffle(ids.begin(), ids.end(), rng);
        ids.resize(static_cast<size_t>(batch * max_pages));
        kc = c.add("k_cache", d, {pages, page, hkv, dim}, nnew > 0);
        vc = c.add("v_cache", d, {pages, page, hkv, dim}, nnew > 0);
        a.block_table = &c.metadata("block_table", ids, {batch, max_pages})->t;
    } else {
        kc = c.add("k_cache", d, {batch, capacity, hkv, dim}, nnew > 0);
        vc = c.add("v_cache", d, {batch, capacity, hkv, dim}, nnew > 0);
    }
    a.cache_seqlens = &c.metadata("cache_seqlens", lengths, {batch})->t;
    for (Tensor* x : {q, out, kc, vc}) x->scramble(rng);
    a.q = &q->t;
    a.out = &out->t;
    a.lse = chance(rng, 0.7) ? &lse->t : nullptr;
    a.k_cache = &kc->t;
    a.v_cache = &vc->t;
    if (nnew > 0) {
        a.k_new = &c.add("k_new", d, {batch, nnew, hkv, dim})->t;
        a.v_new = &c.add("v_new", d, {batch, nnew, hkv, dim})->t;
    }
    if (chance(rng, 0.25)) {
        const int64_t prefix = pick(rng, 40);
        a.prefix_k = &c.add("prefix_k", d, {prefix, hkv, dim})->t;
        a.prefix_v = &c.add("prefix_v", d, {prefix, hkv, dim})->t;
        a.window_left = a.window_right = -1;
    } else {
        alibi(c, rng, batch, hq);
    }
    a.num_splits = chance(rng, 0.3) ? pick(rng, 6) : 0;
    c.shape = std::string(paged ? "paged" : "dense") + " decode b" + std::to_string(batch) + " nq" + std::to_string(nq) +
              " new" + std::to_string(nnew) + " cap" + std::to_string(capacity) + " h" + std::to_string(hq) + "/" +
              std::to_string(hkv) + " d" + std::to_string(dim);
}

void merge_call(Call& c, Rng& rng) {
    fa4j_attention_args& a = c.args;
    a.direction = FA4J_ATTENTION_MERGE;
    a.num_threads = pick(rng, 3);
    const int64_t batch = 1 + pick(rng, 2), n = pick(rng, 9), heads = 1 + pick(rng, 4), dim = 1 + pick(rng, 40);
    const int count = 1 + pick(rng, 4);
    for (int s = 0; s < count; s++) {
        Tensor* o = c.add("merge_out" + std::to_string(s), chance(rng, 0.5) ? kF32 : float_dtype(rng), {batch, n, heads, dim});
        o->scramble(rng);
        c.merge_out.push_back(&o->t);
        c.merge_lse.push_back(&c.add("merge_lse" + std::to_string(s), kF32, {batch, heads, n})->t);
    }
    a.merge_out = c.merge_out.data();
    a.merge_lse = c.merge_lse.data();
    a.merge_count = count;
    a.out = &c.add("out", float_dtype(rng), {batch, n, heads, dim}, true)->t;
    a.lse = chance(rng, 0.7) ? &c.add("lse", kF32, {batch, heads, n}, true)->t : nullptr;
    c.shape = "merge x" + std::to_string(count) + " b" + std::to_string(batch) + " n" + std::to_string(n) + " h" +
              std::to_string(heads) + " d" + std::to_string(dim);
}

// The quantized dtype and scale shape of one operand, as the header's table gives them.
fa4j_dtype quantized_dtype(int mode, int operand) {
    if (mode == FA4J_QUANT_FP8) return kE4M3;
    if (operand == FA4J_QUANT_OPERAND_V) return kE4M3;
    return mode == FA4J_QUANT_SAGE_INT8_FP8 || mode == FA4J_QUANT_SAGE_INT8_FP16 ? kI8 : kI4;
}

std::vector<int64_t> scale_shape(int mode, int operand, int64_t batch, int64_t heads, int64_t n, int64_t dim) {
    if (mode == FA4J_QUANT_FP8) return {batch, heads};
    if (operand == FA4J_QUANT_OPERAND_Q) return {batch, heads, n};
    if (operand == FA4J_QUANT_OPERAND_K) return {batch, heads, (n + 127) / 128};
    return {batch, heads, dim};
}

bool fp16_pv(int mode) { return mode == FA4J_QUANT_SAGE_INT8_FP16 || mode == FA4J_QUANT_SAGE_INT4_FP16; }

void quantized_call(Call& c, Rng& rng) {
    fa4j_attention_args& a = c.args;
    a.direction = FA4J_ATTENTION_FORWARD;
    score_options(c, rng);
    a.softcap = 0;
    a.quant_mode = 1 + pick(rng, 5);
    a.quant_flags = static_cast<uint32_t>(pick(rng, 4));
    const fa4j_dtype d = float_dtype(rng);
    const int64_t batch = 1 + pick(rng, 2), hkv = 1 + pick(rng, 2), hq = hkv * (1 + pick(rng, 2)), dim = head_dim(rng);
    const int64_t nq = pick(rng, 30), nk = pick(rng, 150);
    const int64_t rows[] = {nq, nk, nk}, heads[] = {hq, hkv, hkv};
    const fa4j_tensor** inputs[] = {&a.q, &a.k, &a.v};
    const fa4j_tensor** scales[] = {&a.q_scale, &a.k_scale, &a.v_scale};
    bool any_high = false;
    for (int operand = 0; operand < 3; operand++) {
        const bool pre = chance(rng, 0.4) && !(operand == FA4J_QUANT_OPERAND_V && fp16_pv(a.quant_mode));
        const fa4j_dtype qd = operand == FA4J_QUANT_OPERAND_V && fp16_pv(a.quant_mode) ? (chance(rng, 0.5) ? kF16 : d)
                                                                                        : quantized_dtype(a.quant_mode, operand);
        Tensor* x = c.add("qkv"[operand] + std::string(pre ? "_quantized" : ""), pre ? qd : d, {batch, rows[operand], heads[operand], dim});
        if (!pre || qd.bits != 4) x->scramble(rng);
        *inputs[operand] = &x->t;
        any_high |= !pre;
        if (pre) {
            Tensor* s = c.add(std::string("qkv").substr(static_cast<size_t>(operand), 1) + "_scale", kF32,
                              scale_shape(a.quant_mode, operand, batch, heads[operand], rows[operand], dim));
            *scales[operand] = &s->t;
        }
    }
    Tensor* out = c.add("out", any_high ? d : float_dtype(rng), {batch, nq, hq, dim}, true);
    a.out = &out->t;
    a.lse = chance(rng, 0.8) ? &c.add("lse", kF32, {batch, hq, nq}, true)->t : nullptr;
    c.shape = "quant mode " + std::to_string(a.quant_mode) + " b" + std::to_string(batch) + " nq" + std::to_string(nq) + " nk" +
              std::to_string(nk) + " h" + std::to_string(hq) + "/" + std::to_string(hkv) + " d" + std::to_string(dim);
}

void quantize_call(Call& c, Rng& rng) {
    c.is_quantize = true;
    fa4j_quantize_args& qa = c.quantize;
    qa.struct_size = sizeof qa;
    qa.mode = 1 + pick(rng, 5);
    qa.operand = pick(rng, 3);
    qa.flags = static_cast<uint32_t>(pick(rng, 2));
    qa.num_threads = pick(rng, 3);
    const int64_t batch = 1 + pick(rng, 2), n = pick(rng, 200), heads = 1 + pick(rng, 3), dim = head_dim(rng);
    Tensor* in = c.add("input", float_dtype(rng), {batch, n, heads, dim});
    in->scramble(rng);
    Tensor* out = c.add("output", quantized_dtype(qa.mode, qa.operand), {batch, n, heads, dim}, true);
    if (out->t.dtype.bits != 4) out->scramble(rng);
    qa.input = &in->t;
    qa.output = &out->t;
    qa.scale = &c.add("scale", kF32, scale_shape(qa.mode, qa.operand, batch, heads, n, dim), true)->t;
    if (qa.operand == FA4J_QUANT_OPERAND_K && chance(rng, 0.5)) qa.mean = &c.add("mean", kF32, {batch, heads, dim}, true)->t;
    c.shape = "quantize mode " + std::to_string(qa.mode) + " operand " + std::to_string(qa.operand) + " n" + std::to_string(n) +
              " d" + std::to_string(dim);
}

// ---- breaking a call ----

const int64_t kOddSizes[] = {-1, 0, 1, 2, 7, 9, 1000003, int64_t{1} << 31, int64_t{1} << 40, int64_t{1} << 62,
                             std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()};

void break_tensor(Call& c, Tensor& x, Rng& rng) {
    fa4j_tensor& t = x.t;
    std::string what;
    switch (pick(rng, 12)) {
        case 0: {
            const fa4j_dtype all[] = {kF32, kF16, kBF16, kI32, kI8, kI4, kE4M3, kE5M2,
                                      {FA4J_DTYPE_CODE_FLOAT, 64, 1}, {FA4J_DTYPE_CODE_UINT, 8, 1},
                                      {FA4J_DTYPE_CODE_FLOAT, 16, 2}, {7, 16, 1}, {FA4J_DTYPE_CODE_INT, 0, 1}};
            t.dtype = all[pick(rng, 13)];
            c.values_trusted = false;
            what = "dtype";
            break;
        }
        case 1:
            t.ndim = static_cast<int32_t>(pick(rng, kMaxRank + 1)) - (chance(rng, 0.2) ? 7 : 0);
            if (t.ndim > 0) t.ndim = std::min(t.ndim, kMaxRank);
            what = "ndim";
            break;
        case 2:
        case 3:
            if (t.ndim > 0) x.shape[pick(rng, t.ndim)] = chance(rng, 0.5) ? kOddSizes[pick(rng, 12)] : static_cast<int64_t>(static_cast<uint64_t>(x.shape[pick(rng, t.ndim)]) + static_cast<uint64_t>(pick(rng, 3)) - 1);
            what = "shape";
            break;
        case 4:
        case 5:
            if (t.ndim > 0) x.strides[pick(rng, t.ndim)] = chance(rng, 0.5) ? kOddSizes[pick(rng, 12)] : pick(rng, 5) - 1;
            c.values_trusted = false;
            what = "stride";
            break;
        case 6: {
            const uint64_t offsets[] = {1, 2, 3, 4, 64, uint64_t{1} << 40, uint64_t{1} << 63, ~uint64_t{0}};
            t.byte_offset = offsets[pick(rng, 8)];
            c.values_trusted = false;
            what = "byte_offset";
            break;
        }
        case 7:
            t.device = fa4j_device{chance(rng, 0.5) ? FA4J_DEVICE_CUDA : pick(rng, 16), pick(rng, 3) - 1};
            what = "device";
            break;
        case 8:
            t.shape = nullptr;
            what = "shape pointer";
            break;
        case 9:
            t.strides = nullptr;
            what = "strides pointer";
            break;
        case 10:
            t.dtype.lanes = static_cast<uint16_t>(pick(rng, 4));
            what = "lanes";
            break;
        default:
            if (x.metadata) {
                // Values the metadata must not hold: decreasing offsets, lengths beyond capacity,
                // pages out of range or shared.
                for (int32_t& v : x.values)
                    if (chance(rng, 0.3)) v = chance(rng, 0.5) ? v + pick(rng, 60) - 30 : static_cast<int32_t>(rng());
                what = "values";
            } else {
                t.data = nullptr;
                what = "data pointer";
            }
    }
    c.shape += " | " + x.name + " " + what;
}

void break_call(Call& c, Rng& rng) {
    fa4j_attention_args& a = c.args;
    std::vector<const fa4j_tensor**> slots = {&a.q, &a.k, &a.v, &a.out, &a.lse, &a.dout, &a.dq, &a.dk, &a.dv,
                                              &a.cu_seqlens_q, &a.cu_seqlens_k, &a.seqused_k, &a.alibi_slopes,
                                              &a.q_scale, &a.k_scale, &a.v_scale, &a.k_mean, &a.k_cache, &a.v_cache,
                                              &a.block_table, &a.cache_seqlens, &a.k_new, &a.v_new, &a.prefix_k, &a.prefix_v};
    if (c.is_quantize) slots = {&c.quantize.input, &c.quantize.output, &c.quantize.scale, &c.quantize.mean};
    const int n = 1 + pick(rng, 3);
    for (int m = 0; m < n; m++) {
        c.mutations++;
        const int kind = pick(rng, 10);
        if (kind < 6 && !c.owned.empty()) {
            break_tensor(c, *c.owned[static_cast<size_t>(pick(rng, static_cast<int>(c.owned.size())))], rng);
        } else if (kind == 6) {
            // A missing tensor, or one passed where another belongs (aliasing, outputs over inputs).
            const fa4j_tensor** slot = slots[static_cast<size_t>(pick(rng, static_cast<int>(slots.size())))];
            const fa4j_tensor* other = c.owned.empty() || chance(rng, 0.4) ? nullptr : &c.owned[static_cast<size_t>(pick(rng, static_cast<int>(c.owned.size())))]->t;
            *slot = other;
            c.values_trusted = false;
            c.shape += " | a slot swapped";
        } else if (c.is_quantize) {
            fa4j_quantize_args& q = c.quantize;
            const size_t sizes[] = {0, 8, sizeof q - 8, sizeof q};
            switch (pick(rng, 4)) {
                case 0: q.mode = pick(rng, 9) - 2; break;
                case 1: q.operand = pick(rng, 6) - 2; break;
                case 2: q.flags = static_cast<uint32_t>(rng()); break;
                default: q.struct_size = sizes[pick(rng, 4)];
            }
            c.shape += " | quantize args";
        } else {
            const float floats[] = {std::nanf(""), INFINITY, -INFINITY, 0.f, -1.f, 1e30f, 1e-30f, 3e26f};
            const int32_t ints[] = {-2, -1, 0, 1, 2, 5, 1000, 257, std::numeric_limits<int32_t>::max(), std::numeric_limits<int32_t>::min()};
            std::string what;
            switch (pick(rng, 12)) {
                case 0: a.softmax_scale = floats[pick(rng, 8)]; what = "scale"; break;
                case 1: a.softcap = floats[pick(rng, 8)]; what = "softcap"; break;
                case 2: a.window_left = ints[pick(rng, 10)]; what = "window_left"; break;
                case 3: a.window_right = ints[pick(rng, 10)]; what = "window_right"; break;
                case 4: a.num_threads = ints[pick(rng, 10)]; what = "num_threads"; break;
                case 5: a.direction = ints[pick(rng, 10)] % 6; what = "direction"; break;
                case 6: a.kernel_family = ints[pick(rng, 10)] % 5; what = "kernel_family"; break;
                case 7: a.max_seqlen_q = kOddSizes[pick(rng, 12)]; what = "max_seqlen_q"; break;
                case 8: a.quant_mode = ints[pick(rng, 10)] % 7; a.quant_flags = static_cast<uint32_t>(pick(rng, 8)); what = "quant"; break;
                case 9: a.num_splits = ints[pick(rng, 10)]; what = "num_splits"; break;
                case 10: a.merge_count = std::min(a.merge_count, ints[pick(rng, 4)]); what = "merge_count"; break;
                default: {
                    const size_t sizes[] = {0, 1, 8, offsetof(fa4j_attention_args, quant_mode), offsetof(fa4j_attention_args, k_cache),
                                            offsetof(fa4j_attention_args, deterministic), sizeof(fa4j_attention_args) + 64};
                    a.struct_size = sizes[pick(rng, 7)];
                    what = "struct_size";
                }
            }
            c.shape += " | " + what;
        }
    }
}

// ---- checking a call ----

float read_float(const unsigned char* p, fa4j_dtype d) {
    if (same(d, kF32)) {
        float f;
        std::memcpy(&f, p, 4);
        return f;
    }
    uint16_t h;
    std::memcpy(&h, p, 2);
    return same(d, kF16) ? decode_f16(h) : decode_bf16(h);
}

// Whether every element of a float tensor (as described) is finite, lse also allowing -infinity.
bool all_finite(const fa4j_tensor& t, bool lse) {
    if (!is_float(t.dtype) || t.ndim < 1 || t.ndim > kMaxRank || t.shape == nullptr || t.strides == nullptr) return true;
    int64_t index[kMaxRank] = {};
    Wide count = 1;  // walked only when small: a test must not loop over 2^60 indices of a stride-0 view
    for (int i = 0; i < t.ndim; i++) {
        if (t.shape[i] == 0) return true;
        count *= t.shape[i];
    }
    if (count > (int64_t{1} << 26)) return true;
    const auto* base = static_cast<const unsigned char*>(t.data) + t.byte_offset;
    while (true) {
        int64_t offset = 0;
        for (int i = 0; i < t.ndim; i++) offset += index[i] * t.strides[i];
        const float f = read_float(base + offset * (t.dtype.bits / 8), t.dtype);
        if (!std::isfinite(f) && !(lse && f == -INFINITY)) return false;
        int i = t.ndim - 1;
        while (i >= 0 && ++index[i] == t.shape[i]) index[i--] = 0;
        if (i < 0) return true;
    }
}

std::string message() {
    const char* m = nullptr;
    return fa4j_last_error_message(&m) == FA4J_OK && m != nullptr ? m : "(none)";
}

bool known_status(fa4j_status s) { return s >= FA4J_OK && s <= FA4J_ERROR_NO_DEVICE; }

struct Counts {
    long ok = 0, refused = 0, support_only = 0, skipped = 0, imported = 0, import_refused = 0;
};

Outcome run_call(Call& c, Rng& rng, bool gpu_present, Counts& counts) {
    Outcome o;
    std::vector<Tensor*> tensors;
    for (TensorPtr& x : c.owned) tensors.push_back(x.get());
    if (!place(tensors, rng)) {
        counts.skipped++;
        return o;
    }
    bool huge = false, cuda = false;
    for (Tensor* x : tensors) {
        huge |= x->huge;
        cuda |= x->t.device.device_type != FA4J_DEVICE_CPU;
    }
    // The arguments live in a zeroed block larger than the struct: struct_size may claim more.
    std::vector<unsigned char> block(sizeof(fa4j_attention_args) + 128, 0);
    std::memcpy(block.data(), &c.args, sizeof c.args);
    const auto* args = reinterpret_cast<const fa4j_attention_args*>(block.data());
    std::vector<std::vector<unsigned char>> before;
    for (Tensor* x : tensors) before.emplace_back(x->memory.get(), x->memory.get() + x->bytes);
    auto unchanged = [&](bool outputs_too) {
        for (size_t i = 0; i < tensors.size(); i++)
            if ((outputs_too || !tensors[i]->output) && std::memcmp(before[i].data(), tensors[i]->memory.get(), tensors[i]->bytes) != 0)
                return tensors[i]->name;
        return std::string();
    };

    fa4j_status support_status = FA4J_OK;
    std::string reason;
    if (!c.is_quantize) {
        std::vector<char> full(4096);
        int32_t answer = -1;
        const fa4j_status s = fa4j_attention_support(args, &answer, full.data(), full.size());
        if (s != FA4J_OK) {
            fail(o, "support query failed: " + std::to_string(s) + " " + message());
            return o;
        }
        support_status = static_cast<fa4j_status>(answer);
        reason = full.data();
        if (!known_status(support_status)) fail(o, "support answered status " + std::to_string(answer));
        if (support_status != FA4J_OK && reason.empty()) fail(o, "support gave no reason");
        // A short reason buffer: a NUL-terminated prefix, nothing past its capacity (ASan sees the rest).
        const size_t capacity = static_cast<size_t>(pick(rng, 12));
        std::unique_ptr<char[]> small(capacity == 0 ? nullptr : new char[capacity]);
        if (fa4j_attention_support(args, &answer, small.get(), capacity) != FA4J_OK || answer != support_status)
            fail(o, "support answers differently with a short reason buffer");
        else if (capacity > 0 && (std::strlen(small.get()) >= capacity || reason.compare(0, std::strlen(small.get()), small.get()) != 0))
            fail(o, "short reason is not a terminated prefix of the message");
        const std::string touched = unchanged(true);
        if (!touched.empty()) fail(o, "the support query wrote " + touched);
    }
    if (huge || (cuda && gpu_present)) {
        counts.support_only++;
        return o;
    }

    const fa4j_status status = c.is_quantize ? fa4j_quantize(&c.quantize, nullptr) : fa4j_attention(args, nullptr);
    const std::string said = status == FA4J_OK ? "" : message();
    o.detail = " -> " + std::to_string(status) + (said.empty() ? "" : ": " + said);
    if (!known_status(status)) fail(o, "unknown status");
    if (status == FA4J_ERROR_INTERNAL) fail(o, "internal error on caller input");
    if (status != FA4J_OK && (said.empty() || said == "(none)")) fail(o, "error without a message");
    if (!c.is_quantize && (status != support_status || (status != FA4J_OK && said != reason)))
        fail(o, "the support query said " + std::to_string(support_status) + ": " + reason);
    if (status != FA4J_OK) {
        counts.refused++;
        const std::string touched = unchanged(true);
        if (!touched.empty()) fail(o, "a refused call wrote " + touched);
        return o;
    }
    counts.ok++;
    const std::string touched = unchanged(false);
    if (!touched.empty() && c.mutations == 0) fail(o, "the call wrote its input " + touched);
    if (c.values_trusted) {
        // The outputs the call was given (a broken call may have dropped one).
        const fa4j_attention_args& a = c.args;
        const fa4j_tensor* given[] = {a.out, a.lse, a.dq, a.dk, a.dv, a.k_cache, a.v_cache, c.quantize.output, c.quantize.scale, c.quantize.mean};
        for (Tensor* x : tensors)
            if (x->output && std::find(std::begin(given), std::end(given), &x->t) != std::end(given) && !all_finite(x->t, x->name == "lse"))
                fail(o, x->name + " is not finite");
    }
    return o;
}

// ---- DLPack ----

int deleter_calls = 0;
void count_versioned(ManagedVersioned*) { deleter_calls++; }
void count_legacy(ManagedLegacy*) { deleter_calls++; }

// A producer's managed tensor, mostly well formed, broken like the calls above; imported, used through
// the buffer API, re-exported, released. The deleter must run exactly once, at the last release, and
// never when the import is refused.
Outcome dlpack_round(Rng& rng, std::string& what, Counts& counts) {
    Outcome o;
    const bool versioned = chance(rng, 0.6);
    Tensor x("dlpack", chance(rng, 0.8) ? float_dtype(rng) : kI4, {1 + pick(rng, 4), 2 * (1 + pick(rng, 5))});
    x.scramble(rng);
    Call c;  // for break_tensor's bookkeeping
    if (chance(rng, 0.6)) break_tensor(c, x, rng);
    std::vector<Tensor*> one{&x};
    if (!place(one, rng) || x.huge) x.t.data = x.memory.get();  // import reads no data: any address will do
    if (chance(rng, 0.15)) x.t.strides = nullptr;  // DLPack allows compact row-major without strides
    ManagedVersioned mv{{static_cast<uint32_t>(chance(rng, 0.9) ? 1 : pick(rng, 3)), 1}, nullptr,
                        chance(rng, 0.9) ? count_versioned : nullptr, static_cast<uint64_t>(pick(rng, 8)), x.t};
    ManagedLegacy ml{x.t, nullptr, chance(rng, 0.9) ? count_legacy : nullptr};
    void* managed = versioned ? static_cast<void*>(&mv) : static_cast<void*>(&ml);
    what = std::string("dlpack ") + (versioned ? "versioned" : "legacy") + c.shape;
    deleter_calls = 0;
    const fa4j_tensor* imported = nullptr;
    uint64_t flags = 0;
    fa4j_buffer owner = nullptr;
    const fa4j_status s = fa4j_dlpack_import(managed, versioned ? 1 : 0, &imported, &flags, &owner);
    o.detail = " -> " + std::to_string(s);
    if (!known_status(s) || s == FA4J_ERROR_INTERNAL) fail(o, "status " + std::to_string(s));
    (s == FA4J_OK ? counts.imported : counts.import_refused)++;
    if (s != FA4J_OK) {
        if (message() == "(none)") fail(o, "error without a message");
        if (deleter_calls != 0) fail(o, "a refused import called the deleter");
        return o;
    }
    void* data = nullptr;
    size_t bytes = 0;
    fa4j_device device{};
    if (fa4j_buffer_info(owner, &data, &bytes, &device) != FA4J_OK) fail(o, "buffer_info of the import's owner: " + message());
    if (imported == nullptr || imported->data != x.t.data) fail(o, "the imported tensor is not the producer's");
    // Re-export (as a consumer would pass it on), then let both go in either order.
    void* again = nullptr;
    const bool exported = imported != nullptr && fa4j_dlpack_export(owner, imported, versioned ? 1 : 0, 0, &again) == FA4J_OK;
    if (chance(rng, 0.5) && fa4j_buffer_retain(owner) == FA4J_OK) fa4j_buffer_release(owner, nullptr, 0);
    if (fa4j_buffer_release(owner, nullptr, 0) != FA4J_OK) fail(o, "release: " + message());
    if (exported) {
        if (deleter_calls != 0) fail(o, "the deleter ran while a re-export held the memory");
        if (versioned) {
            auto* m = static_cast<ManagedVersioned*>(again);
            m->deleter(m);
        } else {
            auto* m = static_cast<ManagedLegacy*>(again);
            m->deleter(m);
        }
    }
    const bool has_deleter = versioned ? mv.deleter != nullptr : ml.deleter != nullptr;
    if (deleter_calls != (has_deleter ? 1 : 0)) fail(o, "the deleter ran " + std::to_string(deleter_calls) + " times");
    return o;
}

Call random_call(Rng& rng) {
    Call c;
    c.args.struct_size = sizeof c.args;
    const int kind = pick(rng, 100);
    if (kind < 30) attention_call(c, rng, false);
    else if (kind < 50) attention_call(c, rng, true);
    else if (kind < 68) decode_call(c, rng);
    else if (kind < 80) merge_call(c, rng);
    else if (kind < 92) quantized_call(c, rng);
    else quantize_call(c, rng);
    if (chance(rng, 0.75)) break_call(c, rng);
    return c;
}

}  // namespace

int main(int argc, char** argv) {
    long iterations = 3000;
    double dlpack_share = 0.08;  // of the iterations: DLPack rounds (--dlpack-only: all)
    uint64_t seed = std::random_device{}();
    for (int i = 1; i < argc; i++) {
        if (std::strcmp(argv[i], "--iterations") == 0 && i + 1 < argc) iterations = std::strtol(argv[++i], nullptr, 10);
        else if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
        else if (std::strcmp(argv[i], "--dlpack-only") == 0) dlpack_share = 1.0;
        else {
            std::fprintf(stderr, "usage: %s [--iterations N] [--seed S] [--dlpack-only]\n", argv[0]);
            return 2;
        }
    }
    int32_t devices = 0;
    fa4j_cuda_device_count(&devices);
    const auto start = std::chrono::steady_clock::now();
    std::printf("seed %llu, %ld iterations\n", static_cast<unsigned long long>(seed), iterations);
    std::fflush(stdout);
    Rng rng(seed);
    Tally tally;
    Counts counts;
    const bool trace = std::getenv("FA4J_FUZZ_TRACE") != nullptr;  // each call before it runs (for a crash)
    for (long i = 0; i < iterations; i++) {
        const std::string at = "seed " + std::to_string(seed) + " iteration " + std::to_string(i) + " ";
        if (chance(rng, dlpack_share)) {
            std::string what;
            const Outcome o = dlpack_round(rng, what, counts);
            if (!o.ok) tally.report(at + what, o);
            continue;
        }
        Call c = random_call(rng);
        if (trace) {
            std::printf("iteration %ld: %s\n", i, c.shape.c_str());
            std::fflush(stdout);
        }
        const Outcome o = run_call(c, rng, devices > 0, counts);
        if (!o.ok) tally.report(at + c.shape, o);
    }
    std::printf("calls accepted %ld, refused %ld, support query only %ld, skipped %ld; DLPack imports %ld, refused %ld\n",
                counts.ok, counts.refused, counts.support_only, counts.skipped, counts.imported, counts.import_refused);
    Outcome all;
    all.detail = " " + std::to_string(iterations) + " calls";
    tally.report("every call", all);
    return tally.finish(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}
