// Checks KV-cache attention (FA4J_ATTENTION_DECODE) and the merge of partial results (FA4J_ATTENTION_MERGE)
// through the C ABI on the CPU: out and lse against the float64 reference computed sequence by sequence
// (dense and paged caches, page sizes 8, 16 and 256, ragged cache lengths including 0 and 1, appends, causal
// among several new tokens, GQA ratios 1 to 8, forced split counts, score features, a shared prefix against
// the concatenated attention), the cache contents after an append (exactly the new rows written, nothing
// else), merges (empty key sets included), and refusals of bad metadata before anything is written, with
// the capability query giving the call's status and message.
#include <flashattn4j.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "support/abi_values.hpp"
#include "support/reference_attention.hpp"
#include "support/strided_tensor.hpp"
#include "support/tensor_layouts.hpp"
#include "support/test_report.hpp"
#include "support/tolerance.hpp"

namespace {

using namespace fa4j_test;


// A host int32 tensor (block tables, cache lengths), contiguous.
struct Ints {
    std::vector<int32_t> values;
    std::vector<int64_t> shape, strides;
    fa4j_tensor t{};

    Ints(std::vector<int32_t> v, std::vector<int64_t> s) : values(std::move(v)), shape(std::move(s)) {
        strides.assign(shape.size(), 1);
        for (int d = static_cast<int>(shape.size()) - 2; d >= 0; d--) strides[d] = strides[d + 1] * shape[d + 1];
        t = fa4j_tensor{values.data(), kCpu, static_cast<int32_t>(shape.size()), fa4j_dtype{FA4J_DTYPE_CODE_INT, 32, 1},
                        shape.data(), strides.data(), 0};
    }
    Ints(const Ints&) = delete;
    Ints& operator=(const Ints&) = delete;
};

// [n0, n1, n2] float tensor (the shared prefix).
View make3(Dt dt, int64_t n0, int64_t n1, int64_t n2) {
    View v;
    v.buffer = new_buffer(dt, n0 * n1 * n2);
    v.ndim = 3;
    v.shape[0] = n0;
    v.shape[1] = n1;
    v.shape[2] = n2;
    v.strides[0] = n1 * n2;
    v.strides[1] = n2;
    v.strides[2] = 1;
    return v;
}

void fill_normal(View& view, std::mt19937& rng, Dt dt) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t n = 0; n < view.count(); ++n) view.set(n, round_to(dt, normal(rng)));
}

// Buffer element of (i0, i1, i2, c) of a rank-4 view.
size_t at4(const View& v, int64_t i0, int64_t i1, int64_t i2, int64_t c) {
    return static_cast<size_t>(v.offset + i0 * v.strides[0] + i1 * v.strides[1] + i2 * v.strides[2] + c * v.strides[3]);
}

float element_value(const View& v, size_t e) {
    View probe = v;
    probe.ndim = 1;
    probe.shape[0] = 1;
    probe.strides[0] = 1;
    probe.offset = static_cast<int64_t>(e);
    return probe.get(0);
}

struct DecodeCase {
    Dt dt;
    int64_t Nq, Hq, Hkv, D;
    std::vector<int32_t> lengths;  // cache_seqlens before the call; the batch is their count
    int64_t nnew = 0;              // appended tokens (0: no append)
    bool causal = false;
    int64_t page_size = 0;  // 0: dense
    int64_t capacity = 0;   // dense: cache positions; paged: max_pages * page_size
    int64_t prefix = -1;    // shared prefix length; -1: none
    bool out_f32 = false;
    int32_t splits = 0;
    float softcap = 0;
    int64_t window_left = -1, window_right = -1;
    bool alibi = false;
    bool padded = false;  // q and out with padded strides

    int64_t batch() const { return static_cast<int64_t>(lengths.size()); }
    std::string name() const {
        std::string s = std::string(dt_name(dt)) + " B" + std::to_string(batch()) + " Nq" + std::to_string(Nq) + " H" +
                        std::to_string(Hq) + "/" + std::to_string(Hkv) + " d" + std::to_string(D) + " L[";
        for (size_t b = 0; b < lengths.size(); ++b) s += (b ? "," : "") + std::to_string(lengths[b]);
        s += "]";
        if (nnew > 0) s += " append" + std::to_string(nnew);
        if (causal) s += " causal";
        s += page_size > 0 ? " paged" + std::to_string(page_size) : " dense";
        if (prefix >= 0) s += " prefix" + std::to_string(prefix);
        if (out_f32) s += " out-f32";
        if (splits > 0) s += " splits" + std::to_string(splits);
        if (softcap > 0) s += " softcap";
        if (window_left >= 0 || window_right >= 0) s += " window(" + std::to_string(window_left) + "," + std::to_string(window_right) + ")";
        if (alibi) s += " alibi";
        if (padded) s += " padded";
        return s;
    }
};

// Everything one decode call uses, with the caches filled up to each sequence's length (poison beyond).
struct DecodeTensors {
    View q, k_cache, v_cache, k_new, v_new, prefix_k, prefix_v, out, lse, alibi;
    std::vector<int32_t> table;  // [batch, max_pages], -1 past the used pages
    int64_t max_pages = 0, num_pages = 0;
};

// Position p of sequence b: the buffer element of (.., head h, 0) in a cache view.
size_t cache_element(const DecodeCase& c, const DecodeTensors& t, const View& cache, int64_t b, int64_t p, int64_t h) {
    if (c.page_size == 0) return at4(cache, b, p, h, 0);
    const int64_t page = t.table[static_cast<size_t>(b * t.max_pages + p / c.page_size)];
    return at4(cache, page, p % c.page_size, h, 0);
}

DecodeTensors make_tensors(const DecodeCase& c, std::mt19937& rng) {
    DecodeTensors t;
    const int64_t B = c.batch();
    const Layout layout = c.padded ? Layout::PaddedUnaligned : Layout::Contiguous;
    t.q = make_seq(c.dt, layout, B, c.Nq, c.Hq, c.D);
    fill_normal(t.q, rng, c.dt);
    t.out = make_seq(c.out_f32 ? Dt::F32 : c.dt, layout, B, c.Nq, c.Hq, c.D);
    t.lse = make_lse(c.padded ? Layout::Padded : Layout::Contiguous, B, c.Hq, c.Nq);
    if (c.page_size == 0) {
        t.k_cache = make_seq(c.dt, Layout::Contiguous, B, c.capacity, c.Hkv, c.D);
        t.v_cache = make_seq(c.dt, Layout::Padded, B, c.capacity, c.Hkv, c.D);
    } else {
        t.max_pages = c.capacity / c.page_size;
        // Every sequence's pages, shuffled over a pool with spare pages; entries past the used ones are -1.
        int64_t used = 0;
        for (int64_t b = 0; b < B; ++b) used += (c.lengths[static_cast<size_t>(b)] + c.nnew + c.page_size - 1) / c.page_size;
        t.num_pages = used + 3;
        std::vector<int32_t> pool(static_cast<size_t>(t.num_pages));
        std::iota(pool.begin(), pool.end(), 0);
        std::shuffle(pool.begin(), pool.end(), rng);
        t.table.assign(static_cast<size_t>(B * t.max_pages), -1);
        size_t next = 0;
        for (int64_t b = 0; b < B; ++b) {
            const int64_t pages = (c.lengths[static_cast<size_t>(b)] + c.nnew + c.page_size - 1) / c.page_size;
            for (int64_t l = 0; l < pages; ++l) t.table[static_cast<size_t>(b * t.max_pages + l)] = pool[next++];
        }
        t.k_cache = make_seq(c.dt, Layout::Contiguous, t.num_pages, c.page_size, c.Hkv, c.D);
        t.v_cache = make_seq(c.dt, Layout::Padded, t.num_pages, c.page_size, c.Hkv, c.D);
    }
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t p = 0; p < c.lengths[static_cast<size_t>(b)]; ++p)
            for (int64_t h = 0; h < c.Hkv; ++h)
                for (View* cache : {&t.k_cache, &t.v_cache}) {
                    const size_t e = cache_element(c, t, *cache, b, p, h);
                    View row = *cache;
                    row.ndim = 1;
                    row.shape[0] = c.D;
                    row.strides[0] = 1;
                    row.offset = static_cast<int64_t>(e);
                    for (int64_t x = 0; x < c.D; ++x) row.set(x, round_to(c.dt, normal(rng)));
                }
    if (c.nnew > 0) {
        t.k_new = make_seq(c.dt, Layout::Contiguous, B, c.nnew, c.Hkv, c.D);
        t.v_new = make_seq(c.dt, Layout::HeadMajor, B, c.nnew, c.Hkv, c.D);
        fill_normal(t.k_new, rng, c.dt);
        fill_normal(t.v_new, rng, c.dt);
    }
    if (c.prefix >= 0) {
        t.prefix_k = make3(c.dt, c.prefix, c.Hkv, c.D);
        t.prefix_v = make3(c.dt, c.prefix, c.Hkv, c.D);
        fill_normal(t.prefix_k, rng, c.dt);
        fill_normal(t.prefix_v, rng, c.dt);
    }
    if (c.alibi) {
        t.alibi.buffer = new_buffer(Dt::F32, B * c.Hq);
        t.alibi.ndim = 2;
        t.alibi.shape[0] = B;
        t.alibi.shape[1] = c.Hq;
        t.alibi.strides[0] = c.Hq;
        t.alibi.strides[1] = 1;
        std::uniform_real_distribution<float> slope(0.01f, 0.5f);
        for (int64_t n = 0; n < B * c.Hq; ++n) t.alibi.set(n, slope(rng));
    }
    return t;
}

fa4j_attention_args decode_args(const DecodeCase& c, DecodeTensors& t, Ints& table, Ints& lengths) {
    fa4j_attention_args a{};
    a.struct_size = sizeof a;
    a.direction = FA4J_ATTENTION_DECODE;
    a.q = t.q.host_tensor();
    a.k_cache = t.k_cache.host_tensor();
    a.v_cache = t.v_cache.host_tensor();
    if (c.page_size > 0) a.block_table = &table.t;
    a.cache_seqlens = &lengths.t;
    if (c.nnew > 0) {
        a.k_new = t.k_new.host_tensor();
        a.v_new = t.v_new.host_tensor();
    }
    if (c.prefix >= 0) {
        a.prefix_k = t.prefix_k.host_tensor();
        a.prefix_v = t.prefix_v.host_tensor();
    }
    if (c.alibi) a.alibi_slopes = t.alibi.host_tensor();
    a.out = t.out.host_tensor();
    a.lse = t.lse.host_tensor();
    a.softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.D)));
    a.causal = c.causal ? 1 : 0;
    a.softcap = c.softcap;
    a.window_left = static_cast<int32_t>(c.window_left);
    a.window_right = static_cast<int32_t>(c.window_right);
    a.num_splits = c.splits;
    return a;
}

// The keys and values sequence b attends, [nk, Hkv, D] row-major: the prefix, its cache before the call,
// then the new ones.
void sequence_keys(const DecodeCase& c, const DecodeTensors& t, const View& cache, const View& fresh, const View& prefix,
                   int64_t b, std::vector<float>& out) {
    out.clear();
    const int64_t length = c.lengths[static_cast<size_t>(b)];
    for (int64_t p = 0; p < std::max<int64_t>(c.prefix, 0); ++p)
        for (int64_t h = 0; h < c.Hkv; ++h)
            for (int64_t x = 0; x < c.D; ++x) out.push_back(prefix.get((p * c.Hkv + h) * c.D + x));
    for (int64_t p = 0; p < length; ++p)
        for (int64_t h = 0; h < c.Hkv; ++h) {
            const size_t e = cache_element(c, t, cache, b, p, h);
            for (int64_t x = 0; x < c.D; ++x) out.push_back(element_value(cache, e + static_cast<size_t>(x)));
        }
    for (int64_t p = 0; p < c.nnew; ++p)
        for (int64_t h = 0; h < c.Hkv; ++h)
            for (int64_t x = 0; x < c.D; ++x) out.push_back(fresh.get(((b * c.nnew + p) * c.Hkv + h) * c.D + x));
}

// Runs one case and checks out, lse and the caches.
Outcome run_case(const DecodeCase& c, uint32_t seed) {
    Outcome o;
    std::mt19937 rng(seed);
    DecodeTensors t = make_tensors(c, rng);
    const int64_t B = c.batch();
    Ints table(t.table.empty() ? std::vector<int32_t>{0} : t.table, {B, std::max<int64_t>(t.max_pages, 1)});
    Ints lengths(c.lengths, {B});
    // The reference's keys come from the caches before the call (the appended rows from k_new).
    std::vector<unsigned char> k_before = t.k_cache.buffer->bytes, v_before = t.v_cache.buffer->bytes;
    std::vector<std::vector<float>> keys(static_cast<size_t>(B)), values(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
        sequence_keys(c, t, t.k_cache, t.k_new, t.prefix_k, b, keys[static_cast<size_t>(b)]);
        sequence_keys(c, t, t.v_cache, t.v_new, t.prefix_v, b, values[static_cast<size_t>(b)]);
    }
    fa4j_attention_args a = decode_args(c, t, table, lengths);
    if (!call_ok(o, fa4j_attention(&a, nullptr), "decode")) return o;

    // Reference, sequence by sequence (a batch of one: its own key count).
    const size_t q_row = static_cast<size_t>(c.Hq * c.D);
    std::vector<double> ref_out(static_cast<size_t>(B * c.Nq) * q_row), ref_lse(static_cast<size_t>(B * c.Hq * c.Nq));
    std::vector<float> plain_out(ref_out.size()), plain_lse(ref_lse.size());
    const std::vector<float> q = t.q.values();
    for (int64_t b = 0; b < B; ++b) {
        Inputs in;
        const int64_t nk = static_cast<int64_t>(keys[static_cast<size_t>(b)].size()) / (c.Hkv * c.D);
        in.s = Shape{1, c.Nq, nk, c.Hq, c.Hkv, c.D};
        in.scale = a.softmax_scale;
        in.causal = c.causal;
        in.q.assign(q.begin() + static_cast<std::ptrdiff_t>(b * c.Nq * q_row), q.begin() + static_cast<std::ptrdiff_t>((b + 1) * c.Nq * q_row));
        in.k = keys[static_cast<size_t>(b)];
        in.v = values[static_cast<size_t>(b)];
        in.softcap = c.softcap;
        in.window_left = c.window_left;
        in.window_right = c.window_right;
        if (c.alibi) {
            const std::vector<float> slopes = t.alibi.values();
            in.alibi.assign(slopes.begin() + static_cast<std::ptrdiff_t>(b * c.Hq), slopes.begin() + static_cast<std::ptrdiff_t>((b + 1) * c.Hq));
        }
        const Results<double> ref = naive_attention<double>(in, c.dt, false, Pass::Forward);
        const Results<float> plain = naive_attention<float>(in, c.dt, true, Pass::Forward);
        std::copy(ref.out.begin(), ref.out.end(), ref_out.begin() + static_cast<std::ptrdiff_t>(b * c.Nq) * static_cast<std::ptrdiff_t>(q_row));
        std::copy(plain.out.begin(), plain.out.end(), plain_out.begin() + static_cast<std::ptrdiff_t>(b * c.Nq) * static_cast<std::ptrdiff_t>(q_row));
        std::copy(ref.lse.begin(), ref.lse.end(), ref_lse.begin() + b * c.Hq * c.Nq);
        std::copy(plain.lse.begin(), plain.lse.end(), plain_lse.begin() + b * c.Hq * c.Nq);
    }
    check_tolerance(o, "out", t.out, ref_out, plain_out, c.dt);
    check_tolerance(o, "lse", t.lse, ref_lse, plain_lse, c.dt);

    // The caches: exactly the appended rows changed, bit for bit k_new's and v_new's.
    for (int pass = 0; pass < 2; ++pass) {
        const View& cache = pass == 0 ? t.k_cache : t.v_cache;
        const View& fresh = pass == 0 ? t.k_new : t.v_new;
        std::vector<unsigned char> expected = pass == 0 ? k_before : v_before;
        const size_t size = dt_size(c.dt);
        for (int64_t b = 0; b < B && c.nnew > 0; ++b)
            for (int64_t p = 0; p < c.nnew; ++p)
                for (int64_t h = 0; h < c.Hkv; ++h) {
                    const size_t to = cache_element(c, t, cache, b, c.lengths[static_cast<size_t>(b)] + p, h);
                    const size_t from = at4(fresh, b, p, h, 0);
                    std::memcpy(&expected[to * size], &fresh.buffer->bytes[from * size], static_cast<size_t>(c.D) * size);
                }
        if (expected != cache.buffer->bytes) fail(o, std::string(pass == 0 ? "k_cache" : "v_cache") + " holds other bytes than the append's");
    }
    return o;
}

// The cases: dense and paged, ragged lengths with 0 and 1, appends, causal, GQA 1..8, splits, features.
std::vector<DecodeCase> cases() {
    std::vector<DecodeCase> all;
    const std::vector<int32_t> ragged{0, 1, 37, 130, 5};
    for (Dt dt : {Dt::F32, Dt::F16, Dt::BF16}) {
        DecodeCase dense{dt, 1, 8, 2, 64, ragged};
        dense.capacity = 160;
        all.push_back(dense);
        DecodeCase append = dense;
        append.nnew = 1;
        append.causal = true;
        all.push_back(append);
        DecodeCase spec = dense;  // speculative decoding: 4 new tokens, causal among themselves
        spec.Nq = 4;
        spec.nnew = 4;
        spec.causal = true;
        spec.padded = true;
        all.push_back(spec);
        for (int64_t ps : {8, 16, 256}) {
            DecodeCase paged = spec;
            paged.page_size = ps;
            paged.capacity = ps * ((140 + ps - 1) / ps);
            paged.padded = false;
            all.push_back(paged);
        }
    }
    for (int64_t group : {1, 2, 3, 4, 5, 8}) {
        DecodeCase gqa{Dt::BF16, 3, 2 * group, 2, 32, {300, 17, 64}};
        gqa.nnew = 3;
        gqa.causal = true;
        gqa.page_size = 16;
        gqa.capacity = 320;
        all.push_back(gqa);
    }
    // Many packed rows (group 8 x 20 tokens > one tile), chunked prefill.
    DecodeCase chunk{Dt::F16, 20, 16, 2, 64, {90, 0}};
    chunk.nnew = 20;
    chunk.causal = true;
    chunk.page_size = 8;
    chunk.capacity = 120;
    all.push_back(chunk);
    // Forced splits, including more splits than keys.
    for (int32_t splits : {1, 2, 3, 5, 8, 64}) {
        DecodeCase split{Dt::F32, 2, 4, 1, 64, {700, 3, 1, 0, 257}};
        split.nnew = 2;
        split.causal = true;
        split.page_size = 16;
        split.capacity = 720;
        split.splits = splits;
        all.push_back(split);
    }
    DecodeCase f32out{Dt::BF16, 1, 8, 4, 128, {1000, 12}};
    f32out.capacity = 1024;
    f32out.nnew = 1;
    f32out.out_f32 = true;
    all.push_back(f32out);
    // Score features: softcap, a window, ALiBi per sequence and head.
    DecodeCase features{Dt::F32, 3, 4, 2, 32, {50, 0, 200, 1}};
    features.nnew = 3;
    features.causal = true;
    features.page_size = 16;
    features.capacity = 208;
    features.softcap = 2.0f;
    features.window_left = 20;
    features.alibi = true;
    features.splits = 3;
    all.push_back(features);
    DecodeCase window{Dt::BF16, 2, 4, 4, 64, {33, 120}};
    window.capacity = 128;
    window.window_left = 7;
    window.window_right = 0;
    all.push_back(window);
    // Shared prefix (cascade): with a paged and a dense suffix, empty suffixes, an empty prefix, splits.
    for (Dt dt : {Dt::F32, Dt::BF16}) {
        DecodeCase prefix{dt, 1, 8, 2, 64, {0, 1, 40, 9}};
        prefix.nnew = 1;
        prefix.causal = true;
        prefix.page_size = 16;
        prefix.capacity = 64;
        prefix.prefix = 300;
        all.push_back(prefix);
    }
    DecodeCase prefix_spec{Dt::F16, 3, 12, 4, 32, {5, 60}};
    prefix_spec.nnew = 3;
    prefix_spec.causal = true;
    prefix_spec.capacity = 64;
    prefix_spec.prefix = 130;
    prefix_spec.softcap = 5.0f;
    prefix_spec.splits = 4;
    all.push_back(prefix_spec);
    DecodeCase empty_prefix{Dt::F32, 1, 4, 1, 32, {3, 0}};
    empty_prefix.nnew = 1;
    empty_prefix.capacity = 8;
    empty_prefix.prefix = 0;
    all.push_back(empty_prefix);
    return all;
}

// Forced split counts agree with one another (and the heuristic) far below the tolerance.
Outcome splits_agree() {
    Outcome o;
    DecodeCase c{Dt::F32, 1, 8, 2, 64, {2000, 513, 64}};
    c.nnew = 1;
    c.causal = true;
    c.page_size = 16;
    c.capacity = 2016;
    std::vector<float> first;
    double worst = 0;
    for (int32_t splits : {1, 0, 2, 3, 4, 7, 16}) {
        c.splits = splits;
        std::mt19937 rng(11);
        DecodeTensors t = make_tensors(c, rng);
        Ints table(t.table, {c.batch(), t.max_pages});
        Ints lengths(c.lengths, {c.batch()});
        fa4j_attention_args a = decode_args(c, t, table, lengths);
        if (!call_ok(o, fa4j_attention(&a, nullptr), "decode")) return o;
        const std::vector<float> out = t.out.values();
        if (first.empty()) first = out;
        for (size_t n = 0; n < out.size(); ++n) worst = std::max(worst, static_cast<double>(std::fabs(out[n] - first[n])));
    }
    char text[64];
    std::snprintf(text, sizeof text, " largest difference to 1 split %.1e", worst);
    o.detail += text;
    if (!(worst <= 1e-6)) fail(o, "split counts disagree");
    return o;
}

// Merge: partial results of a forward over disjoint key sets give the forward over all keys; key sets
// without keys weigh nothing; rows without any key give out 0, lse -inf.
Outcome merge() {
    Outcome o;
    std::mt19937 rng(5);
    const int64_t B = 2, N = 3, H = 4, D = 16, K = 50;
    View q = make_seq(Dt::F32, Layout::Contiguous, B, N, H, D), k = make_seq(Dt::F32, Layout::Contiguous, B, K, H, D),
         v = make_seq(Dt::F32, Layout::Contiguous, B, K, H, D);
    fill_normal(q, rng, Dt::F32);
    fill_normal(k, rng, Dt::F32);
    fill_normal(v, rng, Dt::F32);
    auto forward = [&](int64_t j0, int64_t j1, View& out, View& lse) {
        View ks = k, vs = v;
        ks.shape[1] = vs.shape[1] = j1 - j0;
        ks.offset = vs.offset = j0 * H * D;
        out = make_seq(Dt::F32, Layout::Contiguous, B, N, H, D);
        lse = make_lse(Layout::Contiguous, B, H, N);
        fa4j_attention_params params{sizeof params, 0.25f, 0, 0, 0};
        return fa4j_attention_forward(&params, q.host_tensor(), ks.host_tensor(), vs.host_tensor(), out.host_tensor(),
                                      lse.host_tensor(), nullptr);
    };
    View full_out, full_lse, o1, l1, o2, l2, o3, l3;
    if (!call_ok(o, forward(0, K, full_out, full_lse), "full forward") || !call_ok(o, forward(0, 20, o1, l1), "part 1") ||
        !call_ok(o, forward(20, 20, o2, l2), "part 2 (no keys)") || !call_ok(o, forward(20, K, o3, l3), "part 3"))
        return o;
    const fa4j_tensor* outs[3] = {o1.host_tensor(), o2.host_tensor(), o3.host_tensor()};
    const fa4j_tensor* lses[3] = {l1.host_tensor(), l2.host_tensor(), l3.host_tensor()};
    View merged = make_seq(Dt::BF16, Layout::Padded, B, N, H, D), merged_lse = make_lse(Layout::HeadMajor, B, H, N);
    fa4j_attention_args a{};
    a.struct_size = sizeof a;
    a.direction = FA4J_ATTENTION_MERGE;
    a.merge_out = outs;
    a.merge_lse = lses;
    a.merge_count = 3;
    a.out = merged.host_tensor();
    a.lse = merged_lse.host_tensor();
    int32_t status = -1;
    char reason[256];
    if (fa4j_attention_support(&a, &status, reason, sizeof reason) != FA4J_OK || status != FA4J_OK) fail(o, std::string("query: ") + reason);
    if (!call_ok(o, fa4j_attention(&a, nullptr), "merge")) return o;
    // Within one bfloat16 rounding of the full forward's float32 out, and float32 roundings of its lse.
    double worst = 0, worst_lse = 0;
    for (int64_t n = 0; n < full_out.count(); ++n) {
        const double full = full_out.get(n);
        worst = std::max(worst, std::fabs(merged.get(n) - full) / (std::fabs(full) * 0x1p-8 + 1e-6));
    }
    for (int64_t n = 0; n < full_lse.count(); ++n)
        worst_lse = std::max(worst_lse, std::fabs(static_cast<double>(merged_lse.get(n)) - full_lse.get(n)));
    o.detail += " out " + std::to_string(worst) + " bf16 half-ulps, lse " + std::to_string(worst_lse);
    if (!(worst <= 1.01 && worst_lse <= 1e-5)) fail(o, "merge differs from the attention over all keys");

    // Only empty key sets: out 0, lse -inf.
    const fa4j_tensor* none_out[2] = {o2.host_tensor(), o2.host_tensor()};
    const fa4j_tensor* none_lse[2] = {l2.host_tensor(), l2.host_tensor()};
    View zero = make_seq(Dt::F16, Layout::Contiguous, B, N, H, D), zero_lse = make_lse(Layout::Contiguous, B, H, N);
    a.merge_out = none_out;
    a.merge_lse = none_lse;
    a.merge_count = 2;
    a.out = zero.host_tensor();
    a.lse = zero_lse.host_tensor();
    if (!call_ok(o, fa4j_attention(&a, nullptr), "merge of empty sets")) return o;
    for (int64_t n = 0; n < zero.count(); ++n)
        if (zero.get(n) != 0.0f) fail(o, "out of empty sets is not 0");
    for (int64_t n = 0; n < zero_lse.count(); ++n)
        if (zero_lse.get(n) != -INFINITY) fail(o, "lse of empty sets is not -inf");
    // Refused: out overlapping an input, and a field of another direction.
    a.out = o1.host_tensor();
    a.merge_out = outs;
    a.merge_lse = lses;
    a.lse = nullptr;
    a.merge_count = 3;
    o.detail += " in place";
    expect_refusal(o, fa4j_attention(&a, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    a.out = zero.host_tensor();
    a.q = q.host_tensor();
    o.detail += " q given";
    expect_refusal(o, fa4j_attention(&a, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    return o;
}

// Bad metadata and arguments are refused before anything is written, the query agreeing with the call.
Outcome refusals() {
    Outcome o;
    DecodeCase c{Dt::F16, 2, 4, 2, 32, {20, 7}};
    c.nnew = 2;
    c.causal = true;
    c.page_size = 16;
    c.capacity = 32;
    std::mt19937 rng(9);
    DecodeTensors t = make_tensors(c, rng);
    const std::vector<unsigned char> k_before = t.k_cache.buffer->bytes, v_before = t.v_cache.buffer->bytes;
    const std::vector<unsigned char> out_before = t.out.buffer->bytes;
    auto refuse = [&](const std::string& what, fa4j_status expected, auto&& edit) {
        Ints table(t.table, {c.batch(), t.max_pages});
        Ints lengths(c.lengths, {c.batch()});
        fa4j_attention_args a = decode_args(c, t, table, lengths);
        edit(a, table, lengths);
        int32_t answered = -1;
        char reason[512];
        if (fa4j_attention_support(&a, &answered, reason, sizeof reason) != FA4J_OK) fail(o, "query failed");
        o.detail += " [" + what + "]";
        const fa4j_status status = fa4j_attention(&a, nullptr);
        expect_refusal(o, status, expected);
        if (answered != status || last_error_message() != reason) fail(o, what + ": the query's answer differs from the call's");
        if (t.k_cache.buffer->bytes != k_before || t.v_cache.buffer->bytes != v_before || t.out.buffer->bytes != out_before)
            fail(o, what + ": something was written");
    };
    using A = fa4j_attention_args;
    refuse("block table entry out of range", FA4J_ERROR_INVALID_ARGUMENT,
           [&](A&, Ints& table, Ints&) { table.values[1] = static_cast<int32_t>(t.num_pages); });
    refuse("negative block table entry", FA4J_ERROR_INVALID_ARGUMENT, [&](A&, Ints& table, Ints&) { table.values[0] = -1; });
    refuse("cache_seqlens past capacity", FA4J_ERROR_INVALID_ARGUMENT, [&](A&, Ints&, Ints& lengths) { lengths.values[1] = 33; });
    refuse("negative cache_seqlens", FA4J_ERROR_INVALID_ARGUMENT, [&](A&, Ints&, Ints& lengths) { lengths.values[1] = -1; });
    refuse("append past capacity", FA4J_ERROR_INVALID_ARGUMENT, [&](A&, Ints&, Ints& lengths) { lengths.values[0] = 31; });
    refuse("a written page shared", FA4J_ERROR_INVALID_ARGUMENT, [&](A&, Ints& table, Ints&) {
        table.values[static_cast<size_t>(t.max_pages)] = table.values[1];  // sequence 1's page 0 is sequence 0's page 1
    });
    refuse("k given", FA4J_ERROR_INVALID_ARGUMENT, [&](A& a, Ints&, Ints&) { a.k = a.k_cache; });
    refuse("k_new without v_new", FA4J_ERROR_INVALID_ARGUMENT, [&](A& a, Ints&, Ints&) { a.v_new = nullptr; });
    refuse("page size 12", FA4J_ERROR_UNSUPPORTED, [&](A& a, Ints&, Ints&) {
        static int64_t shape[4];
        static fa4j_tensor k12, v12;
        k12 = *a.k_cache;
        v12 = *a.v_cache;
        shape[0] = 2;
        shape[1] = 12;
        shape[2] = c.Hkv;
        shape[3] = c.D;
        k12.shape = v12.shape = shape;
        a.k_cache = &k12;
        a.v_cache = &v12;
    });
    refuse("num_splits too large", FA4J_ERROR_INVALID_ARGUMENT, [&](A& a, Ints&, Ints&) { a.num_splits = FA4J_DECODE_MAX_SPLITS + 1; });
    refuse("out overlaps k_cache", FA4J_ERROR_INVALID_ARGUMENT, [&](A& a, Ints&, Ints&) {
        static fa4j_tensor alias;
        alias = *a.out;
        alias.data = a.k_cache->data;
        alias.byte_offset = 0;
        a.out = &alias;
    });
    refuse("lse of the wrong shape", FA4J_ERROR_INVALID_ARGUMENT, [&](A& a, Ints&, Ints&) {
        static int64_t shape[3];
        static fa4j_tensor bad;
        bad = *a.lse;
        shape[0] = c.batch();
        shape[1] = c.Hq + 1;
        shape[2] = c.Nq;
        bad.shape = shape;
        a.lse = &bad;
    });
    refuse("prefix with a window", FA4J_ERROR_UNSUPPORTED, [&](A& a, Ints&, Ints&) {
        static View pk, pv;
        pk = make3(c.dt, 5, c.Hkv, c.D);
        pv = make3(c.dt, 5, c.Hkv, c.D);
        a.prefix_k = pk.host_tensor();
        a.prefix_v = pv.host_tensor();
        a.window_left = 3;
    });
    // CUDA tensors where no device exists (the descriptors point at host memory: on a machine with a GPU the
    // call could reach the kernel, so the case runs only without one).
    int32_t devices = 0;
    const bool no_device = fa4j_cuda_device_count(&devices) == FA4J_OK && devices == 0;
    if (no_device) refuse("CUDA tensors without a device", FA4J_ERROR_NO_DEVICE, [&](A& a, Ints& table, Ints& lengths) {
        static fa4j_tensor moved[8];
        const fa4j_tensor** fields[8] = {&a.q, &a.k_cache, &a.v_cache, &a.block_table, &a.cache_seqlens, &a.k_new, &a.v_new, &a.out};
        for (int n = 0; n < 8; ++n) {
            moved[n] = **fields[n];
            moved[n].device = fa4j_device{FA4J_DEVICE_CUDA, 0};
            *fields[n] = &moved[n];
        }
        (void)table;
        (void)lengths;
        a.lse = nullptr;
    });
    // An older caller's struct, which has no KV cache block: its fields read as NULL.
    refuse("struct without the KV cache block", FA4J_ERROR_INVALID_ARGUMENT,
           [&](A& a, Ints&, Ints&) { a.struct_size = offsetof(fa4j_attention_args, num_threads) + sizeof(int32_t); });
    // The KV cache block is refused by the other directions.
    {
        Ints lengths(c.lengths, {c.batch()});
        fa4j_attention_args a{};
        a.struct_size = sizeof a;
        a.direction = FA4J_ATTENTION_FORWARD;
        a.q = t.q.host_tensor();
        a.k = t.k_new.host_tensor();
        a.v = t.v_new.host_tensor();
        a.out = t.out.host_tensor();
        a.lse = t.lse.host_tensor();
        a.softmax_scale = 0.1f;
        a.window_left = a.window_right = FA4J_WINDOW_UNBOUNDED;
        a.cache_seqlens = &lengths.t;
        o.detail += " [forward with cache_seqlens]";
        expect_refusal(o, fa4j_attention(&a, nullptr), FA4J_ERROR_INVALID_ARGUMENT);
    }
    return o;
}

}  // namespace

int main() {
    const auto start = std::chrono::steady_clock::now();
    Tally tally;
    uint32_t seed = 100;
    for (const DecodeCase& c : cases()) tally.report(c.name(), run_case(c, seed++));
    tally.report("forced splits agree", splits_agree());
    tally.report("merge", merge());
    tally.report("refusals", refusals());
    return tally.finish(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}
