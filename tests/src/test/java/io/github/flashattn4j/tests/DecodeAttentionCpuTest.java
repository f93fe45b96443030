package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.DecodeOptions;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

import static io.github.flashattn4j.DType.BFLOAT16;
import static io.github.flashattn4j.DType.FLOAT16;
import static io.github.flashattn4j.DType.FLOAT32;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * KV-cache attention ({@link Attention#decode}) on the CPU against the float64 reference computed sequence by
 * sequence: dense and paged caches (pages of 8, 16 and 256), appends (and the cache contents after them),
 * ragged cache lengths including 0 and 1, GQA ratios 1 to 8, causal among several new tokens (speculative
 * decoding, chunked prefill), float32, float16 and bfloat16, forced split counts, softcap, windows and ALiBi,
 * float32 outputs, allocated and caller-provided outputs.
 */
class DecodeAttentionCpuTest {

    private static final Problem.Features NONE = Problem.Features.NONE;
    private static final int[] RAGGED = {0, 1, 37, 130, 5, 64};

    /** A case: the problem, forced splits (0: heuristic), float32 out, and whether the call allocates. */
    record Case(KvCacheFixture.Spec spec, int splits, boolean outF32, boolean allocating) {
        @Override
        public String toString() {
            return spec + (splits > 0 ? " splits" + splits : "") + (outF32 ? " out-f32" : "") + (allocating ? " allocated" : "");
        }
    }

    static Stream<Case> cases() {
        List<Case> cases = new ArrayList<>();
        for (DType dtype : new DType[] {FLOAT32, FLOAT16, BFLOAT16}) {
            // One new token per sequence, appended, causal: the decode step.
            cases.add(new Case(new KvCacheFixture.Spec(dtype, RAGGED, 1, 8, 2, 64, 0, 160, 1, -1, true, NONE), 0, false, dtype == FLOAT16));
            // Attending a cache without appending.
            cases.add(new Case(new KvCacheFixture.Spec(dtype, RAGGED, 1, 4, 4, 32, 0, 130, 0, -1, false, NONE), 0, false, false));
            for (int page : new int[] {8, 16, 256}) {
                // Four new tokens causal among themselves (speculative decoding), paged.
                int capacity = page * ((140 + page - 1) / page);
                cases.add(new Case(new KvCacheFixture.Spec(dtype, RAGGED, 4, 8, 2, 64, page, capacity, 4, -1, true, NONE), 0, false,
                        page == 256));
            }
        }
        for (int group = 1; group <= 8; group++) {
            cases.add(new Case(new KvCacheFixture.Spec(BFLOAT16, new int[] {300, 17, 1, 0}, 2, 2 * group, 2, 32, 16, 320, 2, -1,
                    true, NONE), 0, false, false));
        }
        // Chunked prefill: 40 new tokens with a cache, more packed rows than one task tile (group 8 x 40).
        cases.add(new Case(new KvCacheFixture.Spec(FLOAT16, new int[] {90, 0}, 40, 16, 2, 64, 16, 144, 40, -1, true, NONE), 0,
                false, false));
        // Forced splits, including more splits than keys.
        for (int splits : new int[] {1, 2, 3, 5, 8, 64}) {
            cases.add(new Case(new KvCacheFixture.Spec(FLOAT32, new int[] {700, 3, 1, 0, 257}, 2, 4, 1, 64, 16, 720, 2, -1, true,
                    NONE), splits, false, false));
        }
        cases.add(new Case(new KvCacheFixture.Spec(BFLOAT16, new int[] {1000, 12}, 1, 8, 4, 128, 0, 1024, 1, -1, true, NONE), 0,
                true, false));
        // Features: softcap, a causal local window, ALiBi per sequence and head.
        double[] slopes = new double[4 * 4];
        for (int i = 0; i < slopes.length; i++) slopes[i] = (float) (0.02 * (1 + i % 5));
        cases.add(new Case(new KvCacheFixture.Spec(FLOAT32, new int[] {50, 0, 200, 1}, 3, 4, 2, 32, 16, 208, 3, -1, true,
                new Problem.Features(2.0, 20, AttentionOptions.UNBOUNDED, slopes)), 3, false, false));
        cases.add(new Case(new KvCacheFixture.Spec(BFLOAT16, new int[] {33, 120}, 2, 4, 4, 64, 0, 128, 0, -1, false,
                new Problem.Features(0, 7, 0, null)), 0, false, false));
        return cases.stream();
    }

    static DecodeOptions options(KvCacheFixture.Spec s, int splits, Tensor alibi) {
        Problem.Features f = s.features();
        AttentionOptions.Builder b = AttentionOptions.builder().causal(s.causal()).window(f.windowLeft(), f.windowRight())
                .softcap((float) f.softcap());
        if (alibi != null) b.alibiSlopes(alibi);
        return DecodeOptions.of(b.build()).withNumSplits(splits);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void matchesFloat64ReferencePerSequence(Case c) {
        KvCacheFixture.Spec s = c.spec();
        long seed = Seeds.fresh();
        try (TensorScope scope = TensorScope.open()) {
            KvCacheFixture f = new KvCacheFixture(s, scope, seed);
            DecodeOptions options = options(s, c.splits(), f.alibi);
            Tensor out, lse;
            if (c.allocating()) {
                AttentionOutput o = scope.track(Attention.decode(f.q, f.cache(), options));
                out = o.out();
                lse = o.lse();
            } else {
                out = scope.track(Tensor.full(Float.NaN, c.outF32() ? FLOAT32 : s.dtype(), Device.CPU, f.q.shape()));
                lse = scope.track(Tensor.full(Float.NaN, FLOAT32, Device.CPU, s.batch(), s.headsQ(), s.seqQ()));
                Attention.decodeInto(f.q, f.cache(), out, lse, options);
            }
            assertArrayEquals(f.q.shape(), out.shape());
            assertArrayEquals(new long[] {s.batch(), s.headsQ(), s.seqQ()}, lse.shape());
            double scale = options.attention().softmaxScale(s.headDim());
            ReferenceAttention.Forward exact = f.reference(ReferenceAttention.exact(), scale);
            ReferenceAttention.Forward plain = f.reference(ReferenceAttention.plain(x -> Precision.round(x, s.dtype())), scale);
            ReferenceAttention.Forward f32 = f.reference(ReferenceAttention.plain(x -> (float) x), scale);
            String what = c + " seed " + seed;
            try {
                String o = Precision.check("out", out.toFloatArray(), exact.out(), plain.out(), s.dtype());
                String l = Precision.check("lse", lse.toFloatArray(), exact.lse(), f32.lse(), FLOAT32);
                if (s.appended() > 0) f.assertCachesAppended();
                else f.assertCachesUntouched();
                System.out.println("cpu decode " + what + ": " + o + ", " + l);
            } catch (AssertionError e) {
                throw new AssertionError(what + ": " + e.getMessage(), e);
            }
        }
    }

    /** Forced split counts agree with each other (and with the heuristic's) far below the tolerance. */
    @Test
    void splitCountsAgree() {
        KvCacheFixture.Spec s = new KvCacheFixture.Spec(FLOAT32, new int[] {2000, 513, 64, 0}, 1, 8, 2, 64, 16, 2016, 0, -1, true, NONE);
        long seed = Seeds.fresh();
        try (TensorScope scope = TensorScope.open()) {
            KvCacheFixture f = new KvCacheFixture(s, scope, seed);
            float[] first = null;
            for (int splits : new int[] {1, 0, 2, 3, 4, 7, 16, 256}) {
                AttentionOutput o = scope.track(Attention.decode(f.q, f.cache(), options(s, splits, null)));
                float[] out = o.out().toFloatArray();
                if (first == null) first = out;
                double diff = Precision.maxError(out, KvCacheFixture.toDouble(first));
                assertTrue(diff <= 1e-5, "splits " + splits + " differ from 1 split by " + diff + " (seed " + seed + ")");
            }
        }
    }

    /** An append of one token to a sequence then visible to the next call: a two-step decode loop. */
    @Test
    void appendedKeysAreAttendedNextStep() {
        KvCacheFixture.Spec s = new KvCacheFixture.Spec(BFLOAT16, new int[] {10, 0}, 1, 4, 2, 32, 16, 32, 1, -1, true, NONE);
        try (TensorScope scope = TensorScope.open()) {
            KvCacheFixture f = new KvCacheFixture(s, scope, Seeds.fresh());
            AttentionOutput first = scope.track(Attention.decode(f.q, f.cache(), options(s, 0, null)));
            // The same query, now without the append but with lengths advanced: the same keys, so the same result.
            Tensor advanced = scope.fromInts(new int[] {11, 1}, Device.CPU, 2);
            AttentionOutput second = scope.track(Attention.decode(f.q, io.github.flashattn4j.KvCache.paged(f.kCache, f.vCache,
                    f.blockTable, advanced), options(s, 0, null)));
            assertArrayEquals(first.out().toFloatArray(), second.out().toFloatArray());
            assertArrayEquals(first.lse().toFloatArray(), second.lse().toFloatArray());
        }
    }

    /** An append without queries (seqlen_q 0) writes the cache and attends nothing. */
    @Test
    void appendOnly() {
        KvCacheFixture.Spec s = new KvCacheFixture.Spec(FLOAT16, new int[] {3, 17}, 0, 2, 2, 16, 8, 32, 5, -1, true, NONE);
        try (TensorScope scope = TensorScope.open()) {
            KvCacheFixture f = new KvCacheFixture(s, scope, Seeds.fresh());
            Tensor out = scope.empty(FLOAT16, Device.CPU, 2, 0, 2, 16);
            Attention.decodeInto(f.q, f.cache(), out, null, DecodeOptions.defaults());
            f.assertCachesAppended();
            assertEquals(0, out.numel());
        }
    }
}
