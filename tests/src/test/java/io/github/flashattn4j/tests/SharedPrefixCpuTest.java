package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.DecodeOptions;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.KvCache;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.List;
import java.util.stream.Stream;

import static io.github.flashattn4j.DType.BFLOAT16;
import static io.github.flashattn4j.DType.FLOAT16;
import static io.github.flashattn4j.DType.FLOAT32;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Shared prefixes (cascade attention): many sequences attending one prefix stored once, then their own caches,
 * against the float64 reference of the plain concatenated attention (prefix + own keys, causal bottom-right);
 * and the same result built by hand from the primitives: the prefix attended by all queries as one sequence,
 * each suffix by decode, merged by {@link Attention#merge}.
 */
class SharedPrefixCpuTest {

    static Stream<KvCacheFixture.Spec> cases() {
        Problem.Features none = Problem.Features.NONE;
        return Stream.of(
                new KvCacheFixture.Spec(FLOAT32, new int[] {0, 1, 40, 9, 63}, 1, 8, 2, 64, 16, 64, 1, 300, true, none),
                new KvCacheFixture.Spec(BFLOAT16, new int[] {0, 1, 40, 9, 63}, 1, 8, 2, 64, 16, 64, 1, 300, true, none),
                new KvCacheFixture.Spec(FLOAT16, new int[] {5, 60}, 3, 12, 4, 32, 0, 64, 3, 130, true, new Problem.Features(5.0, -1, -1, null)),
                new KvCacheFixture.Spec(BFLOAT16, new int[] {20, 20, 20}, 1, 4, 1, 128, 256, 256, 1, 1000, true, none),
                new KvCacheFixture.Spec(FLOAT32, new int[] {3, 0}, 1, 4, 1, 32, 0, 8, 1, 0, false, none));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void matchesConcatenatedAttention(KvCacheFixture.Spec s) {
        long seed = Seeds.fresh();
        try (TensorScope scope = TensorScope.open()) {
            KvCacheFixture f = new KvCacheFixture(s, scope, seed);
            DecodeOptions options = DecodeAttentionCpuTest.options(s, 0, null);
            AttentionOutput o = scope.track(Attention.decode(f.q, f.cache(), options));
            double scale = options.attention().softmaxScale(s.headDim());
            ReferenceAttention.Forward exact = f.reference(ReferenceAttention.exact(), scale);
            ReferenceAttention.Forward plain = f.reference(ReferenceAttention.plain(x -> Precision.round(x, s.dtype())), scale);
            ReferenceAttention.Forward f32 = f.reference(ReferenceAttention.plain(x -> (float) x), scale);
            String what = s + " seed " + seed;
            try {
                String out = Precision.check("out", o.out().toFloatArray(), exact.out(), plain.out(), s.dtype());
                String lse = Precision.check("lse", o.lse().toFloatArray(), exact.lse(), f32.lse(), FLOAT32);
                f.assertCachesAppended();
                System.out.println("cpu shared prefix " + what + ": " + out + ", " + lse);
            } catch (AssertionError e) {
                throw new AssertionError(what + ": " + e.getMessage(), e);
            }
        }
    }

    /**
     * The cascade by hand: the queries of all sequences as one sequence against the prefix (not causal: the
     * prefix precedes every new token), each sequence against its own keys (decode, causal), merged by lse,
     * with float32 partial results; equal to the one call within float32 rounding.
     */
    @Test
    void primitivesComposeToTheSameResult() {
        KvCacheFixture.Spec s = new KvCacheFixture.Spec(BFLOAT16, new int[] {7, 30, 1}, 2, 8, 2, 64, 16, 48, 2, 200, true,
                Problem.Features.NONE);
        long seed = Seeds.fresh();
        try (TensorScope scope = TensorScope.open()) {
            KvCacheFixture f = new KvCacheFixture(s, scope, seed);
            DecodeOptions causal = DecodeAttentionCpuTest.options(s, 0, null);
            AttentionOutput whole = scope.track(Attention.decode(f.q, f.cache(), causal));

            // Prefix: q as [1, B * Nq, Hq, d] against the prefix as [1, P, Hkv, d], a plain forward.
            int b = s.batch(), n = s.seqQ();
            Tensor qAll = f.q.reshape(1, (long) b * n, s.headsQ(), s.headDim());
            Tensor pk = f.prefixK.reshape(1, s.prefix(), s.headsKv(), s.headDim());
            Tensor pv = f.prefixV.reshape(1, s.prefix(), s.headsKv(), s.headDim());
            Tensor prefixOut = scope.empty(FLOAT32, Device.CPU, 1, (long) b * n, s.headsQ(), s.headDim());
            Tensor prefixOutQ = scope.empty(s.dtype(), Device.CPU, 1, (long) b * n, s.headsQ(), s.headDim());
            Tensor prefixLse = scope.empty(FLOAT32, Device.CPU, 1, s.headsQ(), (long) b * n);
            Attention.forwardInto(qAll, pk, pv, prefixOutQ, prefixLse, AttentionOptions.defaults());
            prefixOut.copyFrom(prefixOutQ);
            // Suffix: decode of the own keys only (the caches were appended to by the call above: no append now).
            Tensor lengths = scope.fromInts(new int[] {8 + 1, 31 + 1, 2 + 1}, Device.CPU, 3);
            KvCache own = KvCache.paged(f.kCache, f.vCache, f.blockTable, lengths);
            Tensor suffixOut = scope.empty(FLOAT32, Device.CPU, f.q.shape());
            Tensor suffixLse = scope.empty(FLOAT32, Device.CPU, b, s.headsQ(), n);
            Attention.decodeInto(f.q, own, suffixOut, suffixLse, causal);
            // The prefix's [1, Hq, B·Nq] lse as [B, Hq, Nq]: a copy per sequence.
            Tensor prefixLseB = scope.empty(FLOAT32, Device.CPU, b, s.headsQ(), n);
            for (int i = 0; i < b; i++) prefixLseB.select(0, i).copyFrom(prefixLse.select(0, 0).slice(1, (long) i * n, (long) (i + 1) * n));
            AttentionOutput merged = scope.track(Attention.merge(List.of(
                    new AttentionOutput(prefixOut.reshape(b, n, s.headsQ(), s.headDim()), prefixLseB),
                    new AttentionOutput(suffixOut, suffixLse))));
            double diff = Precision.maxError(merged.out().toFloatArray(), KvCacheFixture.toDouble(whole.out().toFloatArray()));
            // The prefix part went through bfloat16 here (the plain forward's output): a few bf16 roundings apart.
            assertTrue(diff <= 0.03, "the cascade by hand differs by " + diff + " (seed " + seed + ")");
            double lseDiff = Precision.maxError(merged.lse().toFloatArray(), KvCacheFixture.toDouble(whole.lse().toFloatArray()));
            assertTrue(lseDiff <= 1e-4, "lse differs by " + lseDiff);
        }
    }

    /** Windows and ALiBi with a prefix are refused as unsupported, with a support query saying the same. */
    @Test
    void windowAndAlibiRefused() {
        KvCacheFixture.Spec s = new KvCacheFixture.Spec(FLOAT32, new int[] {4}, 1, 2, 1, 16, 0, 8, 1, 10, true, Problem.Features.NONE);
        try (TensorScope scope = TensorScope.open()) {
            KvCacheFixture f = new KvCacheFixture(s, scope, Seeds.fresh());
            DecodeOptions windowed = DecodeOptions.of(AttentionOptions.builder().causal(true).window(4, 0).build());
            Attention.Support support = Attention.checkDecode(f.q, f.cache(), windowed);
            assertFalse(support.supported());
            FlashAttnException.Unsupported e = assertThrows(FlashAttnException.Unsupported.class,
                    () -> Attention.decode(f.q, f.cache(), windowed));
            assertTrue(e.getMessage().equals(support.reason()), e.getMessage() + " vs " + support.reason());
            Tensor slopes = scope.fromArray(new float[] {0.1f, 0.2f}, DType.FLOAT32, Device.CPU, 2);
            DecodeOptions alibi = DecodeOptions.of(AttentionOptions.builder().alibiSlopes(slopes).build());
            assertThrows(FlashAttnException.Unsupported.class, () -> Attention.decode(f.q, f.cache(), alibi));
            f.assertCachesUntouched();
        }
    }
}
