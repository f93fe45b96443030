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

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Decode and merge on cuda:0. Decode until its kernels exist: refused as {@link FlashAttnException.Unsupported}
 * with the support query's message, before anything is written (the caches keep their contents); when they
 * arrive, this becomes the CUDA twin of DecodeAttentionCpuTest. Merge: the CUDA kernel against the CPU's.
 */
class DecodeGpuTest extends GpuTest {

    @Test
    void decodeAndMergeAreRefusedAsUnsupportedWithoutWriting() {
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, 1, 2, 1, 8, 64);
            Tensor kPages = scope.randn(DType.BFLOAT16, CUDA0, 2, 4, 16, 2, 64);
            Tensor vPages = scope.randn(DType.BFLOAT16, CUDA0, 3, 4, 16, 2, 64);
            Tensor kNew = scope.randn(DType.BFLOAT16, CUDA0, 4, 2, 1, 2, 64);
            Tensor vNew = scope.randn(DType.BFLOAT16, CUDA0, 5, 2, 1, 2, 64);
            KvCache cache = KvCache.paged(kPages, vPages, scope.fromInts(new int[] {0, 1, 2, 3}, CUDA0, 2, 2),
                    scope.fromInts(new int[] {20, 5}, CUDA0, 2)).withAppend(kNew, vNew);
            DecodeOptions options = DecodeOptions.of(AttentionOptions.builder().causal(true).build());
            float[] before = kPages.toFloatArray();
            Attention.Support support = Attention.checkDecode(q, cache, options);
            assertFalse(support.supported());
            FlashAttnException e = assertThrows(FlashAttnException.Unsupported.class, () -> Attention.decode(q, cache, options));
            assertEquals(support.reason(), e.getMessage());
            assertArrayEquals(before, kPages.toFloatArray());
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
