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

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Bad input to decode and merge becomes the documented typed exception before anything is written: block
 * table entries out of range, cache lengths past the capacity, appends past it, pages an append would write
 * that another sequence reads, mismatched shapes and dtypes; the support query gives the call's message; the
 * caches and outputs are unchanged afterwards and the library still works.
 */
class DecodeBadInputTest {

    private static final DecodeOptions CAUSAL = DecodeOptions.of(AttentionOptions.builder().causal(true).build());

    /** Two sequences of 20 and 7 positions in pages of 16 (capacity 32), appending 2 tokens each. */
    private static final class Valid implements AutoCloseable {
        final TensorScope scope = TensorScope.open();
        final Tensor q = scope.randn(DType.BFLOAT16, Device.CPU, 1, 2, 2, 4, 32);
        final Tensor kPages = scope.randn(DType.BFLOAT16, Device.CPU, 2, 5, 16, 2, 32);
        final Tensor vPages = scope.randn(DType.BFLOAT16, Device.CPU, 3, 5, 16, 2, 32);
        final Tensor kNew = scope.randn(DType.BFLOAT16, Device.CPU, 4, 2, 2, 2, 32);
        final Tensor vNew = scope.randn(DType.BFLOAT16, Device.CPU, 5, 2, 2, 2, 32);
        final Tensor out = scope.track(Tensor.full(Float.NaN, DType.BFLOAT16, Device.CPU, 2, 2, 4, 32));
        final Tensor lse = scope.track(Tensor.full(Float.NaN, DType.FLOAT32, Device.CPU, 2, 4, 2));
        final float[] kBefore = kPages.toFloatArray(), vBefore = vPages.toFloatArray();

        KvCache cache(int[] table, int[] lengths) {
            return KvCache.paged(kPages, vPages, scope.fromInts(table, Device.CPU, 2, 2), scope.fromInts(lengths, Device.CPU, 2))
                    .withAppend(kNew, vNew);
        }

        KvCache good() {
            return cache(new int[] {3, 0, 4, -1}, new int[] {20, 7});
        }

        /** The call is refused with {@code type}, the query says so with the same message, nothing is written. */
        <E extends FlashAttnException> E refused(Class<E> type, KvCache cache, DecodeOptions options) {
            Attention.Support support = Attention.checkDecode(q, cache, options);
            assertFalse(support.supported());
            E e = assertThrows(type, () -> Attention.decodeInto(q, cache, out, lse, options));
            assertEquals(support.reason(), e.getMessage());
            assertUnchanged();
            return e;
        }

        void assertUnchanged() {
            assertTrue(java.util.Arrays.equals(kBefore, kPages.toFloatArray()), "k pages written");
            assertTrue(java.util.Arrays.equals(vBefore, vPages.toFloatArray()), "v pages written");
            for (float f : out.toFloatArray()) assertTrue(Float.isNaN(f), "out written");
        }

        /** A valid call still works afterwards. */
        void stillWorks() {
            Attention.decodeInto(q, good(), out, lse, CAUSAL);
            for (float f : out.toFloatArray()) assertTrue(Float.isFinite(f));
        }

        @Override
        public void close() {
            scope.close();
        }
    }

    @Test
    void blockTableEntryOutOfRange() {
        try (Valid v = new Valid()) {
            FlashAttnException e = v.refused(FlashAttnException.InvalidArgument.class, v.cache(new int[] {3, 5, 4, -1}, new int[] {20, 7}), CAUSAL);
            assertTrue(e.getMessage().contains("block_table[0, 1] = 5"), e.getMessage());
            v.refused(FlashAttnException.InvalidArgument.class, v.cache(new int[] {3, 0, -1, -1}, new int[] {20, 7}), CAUSAL);
            v.stillWorks();
        }
    }

    @Test
    void cacheLengthPastCapacity() {
        try (Valid v = new Valid()) {
            FlashAttnException e = v.refused(FlashAttnException.InvalidArgument.class, v.cache(new int[] {3, 0, 4, 1}, new int[] {20, 33}), CAUSAL);
            assertTrue(e.getMessage().contains("cache_seqlens[1] = 33"), e.getMessage());
            v.refused(FlashAttnException.InvalidArgument.class, v.cache(new int[] {3, 0, 4, 1}, new int[] {-1, 7}), CAUSAL);
            v.stillWorks();
        }
    }

    @Test
    void appendPastCapacity() {
        try (Valid v = new Valid()) {
            FlashAttnException e = v.refused(FlashAttnException.InvalidArgument.class, v.cache(new int[] {3, 0, 4, 1}, new int[] {31, 7}), CAUSAL);
            assertTrue(e.getMessage().contains("past the cache's capacity"), e.getMessage());
            v.stillWorks();
        }
    }

    @Test
    void pageWrittenByAnAppendAndReadElsewhere() {
        try (Valid v = new Valid()) {
            // Sequence 0 appends at positions 20, 21: page 0 of the table row [3, 0]; sequence 1 reads page 0 too.
            v.refused(FlashAttnException.InvalidArgument.class, v.cache(new int[] {3, 0, 0, -1}, new int[] {20, 7}), CAUSAL);
            v.stillWorks();
        }
    }

    @Test
    void mismatchedShapesDtypesAndArguments() {
        try (Valid v = new Valid()) {
            Tensor kNewF32 = v.scope.randn(DType.FLOAT32, Device.CPU, 6, 2, 2, 2, 32);
            Tensor table = v.scope.fromInts(new int[] {3, 0, 4, -1}, Device.CPU, 2, 2);
            Tensor lengths = v.scope.fromInts(new int[] {20, 7}, Device.CPU, 2);
            v.refused(FlashAttnException.InvalidArgument.class, KvCache.paged(v.kPages, v.vPages, table, lengths).withAppend(kNewF32, v.vNew), CAUSAL);
            Tensor shortTable = v.scope.fromInts(new int[] {3, 0}, Device.CPU, 1, 2);
            v.refused(FlashAttnException.InvalidArgument.class, KvCache.paged(v.kPages, v.vPages, shortTable, lengths), CAUSAL);
            Tensor floatLengths = v.scope.fromArray(new float[] {20, 7}, DType.FLOAT32, Device.CPU, 2);
            v.refused(FlashAttnException.InvalidArgument.class, KvCache.paged(v.kPages, v.vPages, table, floatLengths), CAUSAL);
            // Page size 12: unsupported (pages hold multiples of 8 positions).
            Tensor k12 = v.scope.randn(DType.BFLOAT16, Device.CPU, 7, 5, 12, 2, 32), v12 = v.scope.randn(DType.BFLOAT16, Device.CPU, 8, 5, 12, 2, 32);
            v.refused(FlashAttnException.Unsupported.class, KvCache.paged(k12, v12, table, lengths), CAUSAL);
            // int32 queries: not an attention dtype.
            Tensor intQ = v.scope.fromInts(new int[2 * 2 * 4 * 32], Device.CPU, 2, 2, 4, 32);
            assertThrows(FlashAttnException.Unsupported.class, () -> Attention.decode(intQ, v.good(), CAUSAL));
            assertThrows(NullPointerException.class, () -> Attention.decode(v.q, null, CAUSAL));
            assertThrows(NullPointerException.class, () -> Attention.decode(v.q, v.good(), null));
            assertThrows(IllegalArgumentException.class, () -> DecodeOptions.defaults().withNumSplits(-1));
            assertThrows(IllegalArgumentException.class, () -> DecodeOptions.defaults().withNumSplits(DecodeOptions.MAX_SPLITS + 1));
            v.assertUnchanged();
            v.stillWorks();
        }
    }

    @Test
    void closedCacheTensorRefused() {
        try (Valid v = new Valid()) {
            KvCache cache = v.good();
            cache.cacheSeqlens().close();
            assertThrows(IllegalStateException.class, () -> Attention.decodeInto(v.q, cache, v.out, v.lse, CAUSAL));
            v.assertUnchanged();
        }
    }

    @Test
    void mergeRefusals() {
        try (TensorScope scope = TensorScope.open()) {
            Tensor out = scope.randn(DType.FLOAT32, Device.CPU, 1, 1, 3, 2, 8), lse = scope.randn(DType.FLOAT32, Device.CPU, 2, 1, 2, 3);
            AttentionOutput part = new AttentionOutput(out, lse);
            assertThrows(IllegalArgumentException.class, () -> Attention.merge(List.of()));
            assertThrows(NullPointerException.class, () -> Attention.merge(null));
            // In place: out is one of the parts.
            FlashAttnException e = assertThrows(FlashAttnException.InvalidArgument.class, () -> Attention.mergeInto(List.of(part, part), out, null));
            assertTrue(e.getMessage().contains("shares memory"), e.getMessage());
            Tensor wrongLse = scope.randn(DType.FLOAT32, Device.CPU, 3, 1, 3, 2);
            AttentionOutput bad = new AttentionOutput(out, wrongLse);
            Attention.Support support = Attention.checkMerge(List.of(part, bad));
            assertFalse(support.supported());
            FlashAttnException shape = assertThrows(FlashAttnException.InvalidArgument.class, () -> Attention.merge(List.of(part, bad)));
            assertEquals(support.reason(), shape.getMessage());
        }
    }

    /** DecodeOptions.MAX_SPLITS is the header's FA4J_DECODE_MAX_SPLITS. */
    @Test
    void maxSplitsMatchesTheHeader() throws Exception {
        String header = Files.readString(Path.of(System.getProperty("fa4j.header")));
        assertTrue(header.contains("#define FA4J_DECODE_MAX_SPLITS " + DecodeOptions.MAX_SPLITS), "FA4J_DECODE_MAX_SPLITS differs");
    }
}
