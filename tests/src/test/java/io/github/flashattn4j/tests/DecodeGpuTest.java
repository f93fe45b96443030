package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.DecodeOptions;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Decode and merge on cuda:0: the CUDA twins of DecodeAttentionCpuTest (the same cases, the same float64
 * reference and tolerance) and of the CPU merge.
 */
class DecodeGpuTest extends GpuTest {

    /**
     * Decode on cuda:0, every case of the CPU test: where the build offers the decode kernel, out and lse within
     * the FlashAttention tolerance of the float64 reference (as on the CPU) and the caches appended exactly;
     * where it does not (a release build before the kernel has passed here), refused as Unsupported with the
     * support query's reason, the caches untouched. Forced split counts beyond the kernel's 16 are refused.
     */
    @ParameterizedTest(name = "{0}")
    @MethodSource("io.github.flashattn4j.tests.DecodeAttentionCpuTest#cases")
    void decodeMatchesTheReferenceOrIsRefused(DecodeAttentionCpuTest.Case c) {
        KvCacheFixture.Spec s = c.spec();
        long seed = Seeds.fresh();
        try (TensorScope scope = TensorScope.open()) {
            KvCacheFixture f = new KvCacheFixture(s, scope, seed);
            KvCacheFixture.OnDevice cuda = f.on(CUDA0, scope);
            DecodeOptions options = DecodeAttentionCpuTest.options(s, c.splits(), cuda.alibi());
            Tensor out = scope.track(Tensor.full(Float.NaN, c.outF32() ? DType.FLOAT32 : s.dtype(), CUDA0, f.q.shape()));
            Tensor lse = scope.track(Tensor.full(Float.NaN, DType.FLOAT32, CUDA0, s.batch(), s.headsQ(), s.seqQ()));
            Attention.Support support = Attention.checkDecode(cuda.q(), cuda.cache(), options);
            String what = c + " seed " + seed;
            if (!support.supported()) {
                assertTrue(support.reason().contains("has not run on a GPU yet") || (c.splits() > 16 && support.reason().contains("splits")),
                        what + ": " + support.reason());
                FlashAttnException e = assertThrows(FlashAttnException.Unsupported.class,
                        () -> Attention.decodeInto(cuda.q(), cuda.cache(), out, lse, options));
                assertEquals(support.reason(), e.getMessage());
                f.assertCaches(false, cuda.kCache(), cuda.vCache());
                return;
            }
            Attention.decodeInto(cuda.q(), cuda.cache(), out, lse, options);
            double scale = options.attention().softmaxScale(s.headDim());
            ReferenceAttention.Forward exact = f.reference(ReferenceAttention.exact(), scale);
            ReferenceAttention.Forward plain = f.reference(ReferenceAttention.plain(x -> Precision.round(x, s.dtype())), scale);
            ReferenceAttention.Forward f32 = f.reference(ReferenceAttention.plain(x -> (float) x), scale);
            try {
                String o = Precision.check("out", out.toFloatArray(), exact.out(), plain.out(), s.dtype());
                String l = Precision.check("lse", lse.toFloatArray(), exact.lse(), f32.lse(), DType.FLOAT32);
                f.assertCaches(s.appended() > 0, cuda.kCache(), cuda.vCache());
                System.out.println("cuda decode " + what + ": " + o + ", " + l);
            } catch (AssertionError e) {
                throw new AssertionError(what + ": " + e.getMessage(), e);
            }
        }
    }

    /**
     * Merge on cuda:0: where the build offers the merge kernel, its result is the CPU's (one definition,
     * core/lse_merge.hpp: equal up to the last bits of exp and log); where it does not (a release build before the
     * kernel has passed here), refused as Unsupported with the support query's reason, writing nothing. Parts of
     * three dtypes, a head dim that is not a multiple of the warp, and rows where some or every part attended
     * nothing (lse -inf).
     */
    @Test
    void mergeIsTheCpuMergeOrRefused() {
        long seed = Seeds.fresh();
        SplittableRandom random = new SplittableRandom(seed);
        int batch = 2, seqlen = 3, heads = 4, dim = 40;
        DType[] dtypes = {DType.FLOAT32, DType.BFLOAT16, DType.FLOAT16};
        try (TensorScope scope = TensorScope.open()) {
            List<AttentionOutput> cpuParts = new ArrayList<>(), cudaParts = new ArrayList<>();
            for (int s = 0; s < dtypes.length; s++) {
                float[] lse = new float[batch * heads * seqlen];
                for (int r = 0; r < lse.length; r++)
                    lse[r] = r % 7 == 0 || (s > 0 && r % 5 == 0) ? Float.NEGATIVE_INFINITY : (float) (6 * random.nextDouble() - 3);
                Tensor out = scope.randn(dtypes[s], Device.CPU, random.nextLong(), batch, seqlen, heads, dim);
                Tensor l = scope.fromArray(lse, DType.FLOAT32, Device.CPU, batch, heads, seqlen);
                cpuParts.add(new AttentionOutput(out, l));
                cudaParts.add(new AttentionOutput(scope.track(out.to(CUDA0)), scope.track(l.to(CUDA0))));
            }
            AttentionOutput expected = scope.track(Attention.merge(cpuParts));
            Tensor out = scope.track(Tensor.full(Float.NaN, DType.FLOAT32, CUDA0, batch, seqlen, heads, dim));
            Tensor lse = scope.track(Tensor.full(Float.NaN, DType.FLOAT32, CUDA0, batch, heads, seqlen));
            Attention.Support support = Attention.checkMerge(cudaParts);
            if (!support.supported()) {
                assertTrue(support.reason().contains("has not run on a GPU yet"), support.reason());
                FlashAttnException e = assertThrows(FlashAttnException.Unsupported.class, () -> Attention.mergeInto(cudaParts, out, lse));
                assertEquals(support.reason(), e.getMessage());
                for (float f : out.toFloatArray()) assertTrue(Float.isNaN(f), "a refused merge wrote out");
                return;
            }
            Attention.mergeInto(cudaParts, out, lse);
            float[] want = expected.out().toFloatArray(), got = out.toFloatArray();
            for (int i = 0; i < want.length; i++)
                assertEquals(want[i], got[i], 1e-5 * (1 + Math.abs(want[i])), "out[" + i + "], seed " + seed);
            float[] wantLse = expected.lse().toFloatArray(), gotLse = lse.toFloatArray();
            for (int i = 0; i < wantLse.length; i++) {
                if (wantLse[i] == Float.NEGATIVE_INFINITY) assertEquals(Float.NEGATIVE_INFINITY, gotLse[i], "lse[" + i + "]");
                else assertEquals(wantLse[i], gotLse[i], 1e-5 * (1 + Math.abs(wantLse[i])), "lse[" + i + "], seed " + seed);
            }
        }
    }
}
