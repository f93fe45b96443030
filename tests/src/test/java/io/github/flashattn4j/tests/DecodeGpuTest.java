package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.DecodeOptions;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.KvCache;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * Decode and merge on cuda:0 until their kernels exist: refused as {@link FlashAttnException.Unsupported} with
 * the support query's message, before anything is written (the caches keep their contents). When the kernels
 * arrive, this becomes the CUDA twin of DecodeAttentionCpuTest.
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

            Tensor out = scope.randn(DType.FLOAT32, CUDA0, 6, 2, 1, 8, 64), lse = scope.randn(DType.FLOAT32, CUDA0, 7, 2, 8, 1);
            List<AttentionOutput> parts = List.of(new AttentionOutput(out, lse));
            Attention.Support merge = Attention.checkMerge(parts);
            assertFalse(merge.supported());
            FlashAttnException m = assertThrows(FlashAttnException.Unsupported.class, () -> Attention.merge(parts));
            assertEquals(merge.reason(), m.getMessage());
        }
    }
}
