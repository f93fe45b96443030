package io.github.flashattn4j.tests;

import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.DecodeOptions;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.KvCache;
import io.github.flashattn4j.OutOfPagesException;
import io.github.flashattn4j.PageAllocator;
import io.github.flashattn4j.PagedKvCache;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@link PagedKvCache} and {@link PageAllocator}: a decode loop through the cache (prompts appended, steps
 * appended and attended, sequences freed and new ones started in the middle, the batch changing) matches the
 * float64 reference of each sequence's whole history; pages are handed out and returned exactly; running out
 * of pages or sequence length is refused with the documented exception and changes nothing; closing frees
 * everything.
 */
class PagedKvCacheTest {

    private static final int KV_HEADS = 2, HEADS = 4, DIM = 32, PAGE = 16;

    @Test
    void freeListAllocator() {
        PageAllocator a = PageAllocator.freeList(4);
        Set<Integer> pages = new HashSet<>();
        for (int i = 0; i < 4; i++) pages.add(a.allocate());
        assertEquals(Set.of(0, 1, 2, 3), pages);
        assertEquals(0, a.available());
        OutOfPagesException e = assertThrows(OutOfPagesException.class, a::allocate);
        assertEquals(1, e.requested());
        assertEquals(0, e.available());
        a.free(2);
        assertEquals(2, a.allocate(), "the page freed last is handed out first");
        a.free(1);
        assertThrows(IllegalArgumentException.class, () -> a.free(1), "double free");
        assertThrows(IllegalArgumentException.class, () -> a.free(4));
        assertEquals(1, a.available());
    }

    /** What the test remembers of a sequence: its keys and values, [length, heads_kv, head_dim] each. */
    private static final class History {
        final List<float[]> keys = new ArrayList<>(), values = new ArrayList<>();

        int length() {
            return keys.size();
        }

        float[] flat(List<float[]> rows) {
            float[] all = new float[rows.size() * KV_HEADS * DIM];
            for (int i = 0; i < rows.size(); i++) System.arraycopy(rows.get(i), 0, all, i * KV_HEADS * DIM, KV_HEADS * DIM);
            return all;
        }
    }

    /** Rows [batch entry b, t] of a [B, T, H, D] array, one float[H·D] per t. */
    private static void record(History h, float[] k, float[] v, int b, int tokens) {
        int row = KV_HEADS * DIM;
        for (int t = 0; t < tokens; t++) {
            h.keys.add(Arrays.copyOfRange(k, (b * tokens + t) * row, (b * tokens + t + 1) * row));
            h.values.add(Arrays.copyOfRange(v, (b * tokens + t) * row, (b * tokens + t + 1) * row));
        }
    }

    @Test
    void decodeLoopMatchesTheReference() {
        long seed = Seeds.fresh();
        SplittableRandom random = new SplittableRandom(seed);
        DType dtype = DType.BFLOAT16;
        DecodeOptions options = DecodeOptions.of(AttentionOptions.builder().causal(true).build());
        try (TensorScope scope = TensorScope.open();
             PagedKvCache cache = PagedKvCache.builder().dtype(dtype).kvHeads(KV_HEADS).headDim(DIM).pageSize(PAGE).numPages(64)
                     .maxSequences(4).maxSequenceLength(200).build()) {
            History[] histories = new History[4];
            List<Integer> live = new ArrayList<>();
            for (int prompt : new int[] {5, 33, 0}) {
                int id = cache.newSequence();
                histories[id] = new History();
                live.add(id);
                if (prompt == 0) continue;
                Tensor k = scope.randn(dtype, Device.CPU, random.nextLong(), 1, prompt, KV_HEADS, DIM);
                Tensor v = scope.randn(dtype, Device.CPU, random.nextLong(), 1, prompt, KV_HEADS, DIM);
                cache.append(new int[] {id}, k, v);
                record(histories[id], k.toFloatArray(), v.toFloatArray(), 0, prompt);
            }
            for (int step = 0; step < 24; step++) {
                if (step == 10) {  // one sequence ends, another starts (reusing an id and its pages)
                    int done = live.remove(0);
                    cache.freeSequence(done);
                    int id = cache.newSequence();
                    histories[id] = new History();
                    live.add(id);
                }
                int tokens = step % 5 == 4 ? 3 : 1;  // now and then several tokens: speculative decoding
                int[] ids = live.stream().mapToInt(Integer::intValue).toArray();
                int b = ids.length;
                Tensor q = scope.randn(dtype, Device.CPU, random.nextLong(), b, tokens, HEADS, DIM);
                Tensor kNew = scope.randn(dtype, Device.CPU, random.nextLong(), b, tokens, KV_HEADS, DIM);
                Tensor vNew = scope.randn(dtype, Device.CPU, random.nextLong(), b, tokens, KV_HEADS, DIM);
                Tensor out = scope.empty(dtype, Device.CPU, b, tokens, HEADS, DIM);
                Tensor lse = scope.empty(DType.FLOAT32, Device.CPU, b, HEADS, tokens);
                cache.decodeInto(ids, q, kNew, vNew, out, lse, options);
                float[] ka = kNew.toFloatArray(), va = vNew.toFloatArray(), qa = q.toFloatArray();
                for (int i = 0; i < b; i++) record(histories[ids[i]], ka, va, i, tokens);
                // The reference of every sequence of the batch over its whole history.
                int qRow = HEADS * DIM;
                double[] exact = new double[b * tokens * qRow], plain = new double[exact.length];
                for (int i = 0; i < b; i++) {
                    History h = histories[ids[i]];
                    assertEquals(h.length(), cache.length(ids[i]));
                    Problem p = new Problem(1, tokens, h.length(), HEADS, KV_HEADS, DIM, true, 1 / Math.sqrt(DIM));
                    float[] qi = Arrays.copyOfRange(qa, i * tokens * qRow, (i + 1) * tokens * qRow);
                    float[] kh = h.flat(h.keys), vh = h.flat(h.values);
                    System.arraycopy(ReferenceAttention.exact().forward(p, qi, kh, vh).out(), 0, exact, i * tokens * qRow, tokens * qRow);
                    System.arraycopy(ReferenceAttention.plain(x -> Precision.round(x, dtype)).forward(p, qi, kh, vh).out(), 0, plain,
                            i * tokens * qRow, tokens * qRow);
                }
                try {
                    Precision.check("out", out.toFloatArray(), exact, plain, dtype);
                } catch (AssertionError e) {
                    throw new AssertionError("step " + step + " seed " + seed + ": " + e.getMessage(), e);
                }
            }
            int pagesHeld = 0;
            for (int id : live) {
                assertEquals((cache.length(id) + PAGE - 1) / PAGE, cache.pageCount(id));
                pagesHeld += cache.pageCount(id);
            }
            assertEquals(64 - pagesHeld, cache.freePages(), "pages are either held by a live sequence or free");
            for (int id : live) cache.freeSequence(id);
            assertEquals(64, cache.freePages());
        }
    }

    @Test
    void runningOutOfPagesChangesNothing() {
        try (TensorScope scope = TensorScope.open();
             PagedKvCache cache = PagedKvCache.builder().dtype(DType.FLOAT32).kvHeads(1).headDim(8).pageSize(8).numPages(3)
                     .maxSequences(2).maxSequenceLength(64).build()) {
            int a = cache.newSequence(), b = cache.newSequence();
            cache.append(new int[] {a}, scope.zeros(DType.FLOAT32, Device.CPU, 1, 9, 1, 8), scope.zeros(DType.FLOAT32, Device.CPU, 1, 9, 1, 8));
            assertEquals(2, cache.pageCount(a));
            assertEquals(1, cache.freePages());
            // 9 more tokens: b needs 2 pages, a one more (18 positions): 3 > 1 free.
            OutOfPagesException e = assertThrows(OutOfPagesException.class, () -> cache.prepare(new int[] {a, b}, 9));
            assertEquals(3, e.requested());
            assertEquals(1, e.available());
            assertEquals(1, cache.freePages());
            assertEquals(2, cache.pageCount(a));
            assertEquals(0, cache.pageCount(b));
            assertEquals(9, cache.length(a));
            // Past the sequence length: the native library's exception type for an append past capacity.
            assertThrows(FlashAttnException.InvalidArgument.class, () -> cache.prepare(new int[] {b}, 65));
            assertThrows(IllegalArgumentException.class, () -> cache.prepare(new int[] {a, a}, 1));
            assertThrows(IllegalArgumentException.class, () -> cache.prepare(new int[] {7}, 1));
            assertThrows(IllegalStateException.class, cache::newSequence, "both sequence ids in use");
            cache.freeSequence(a);
            assertEquals(3, cache.freePages());
            assertThrows(IllegalArgumentException.class, () -> cache.length(a), "a freed sequence is gone");
        }
    }

    @Test
    void closeFreesTheTensorsAndIsIdempotent() {
        PagedKvCache cache = PagedKvCache.builder().dtype(DType.FLOAT16).kvHeads(2).headDim(16).pageSize(8).numPages(4)
                .maxSequences(2).maxSequenceLength(16).build();
        int id = cache.newSequence();
        KvCache view = cache.prepare(new int[] {id}, 3);
        Tensor k = cache.kPages();
        cache.close();
        cache.close();
        assertTrue(k.isClosed());
        assertTrue(cache.vPages().isClosed());
        assertTrue(view.blockTable().orElseThrow().isClosed(), "the tables' views are closed with the cache");
        assertTrue(view.cacheSeqlens().isClosed());
        assertThrows(IllegalStateException.class, cache::newSequence);
        assertThrows(IllegalStateException.class, () -> cache.prepare(new int[] {id}, 1));
        assertFalse(cache.toString().isEmpty());
    }

    @Test
    void builderRefusesBadSettings() {
        assertThrows(IllegalArgumentException.class, () -> PagedKvCache.builder().dtype(DType.FLOAT32).kvHeads(1).headDim(8)
                .pageSize(12).numPages(4).maxSequences(1).maxSequenceLength(8).build());
        assertThrows(IllegalArgumentException.class, () -> PagedKvCache.builder().dtype(DType.INT32).kvHeads(1).headDim(8)
                .pageSize(8).numPages(4).maxSequences(1).maxSequenceLength(8).build());
        assertThrows(IllegalArgumentException.class, () -> PagedKvCache.builder().dtype(DType.FLOAT32).kvHeads(1).headDim(8)
                .pageSize(8).maxSequences(1).maxSequenceLength(8).build(), "no page count");
        try (PagedKvCache c = PagedKvCache.builder().dtype(DType.FLOAT32).kvHeads(1).headDim(8).pageSize(8)
                .allocator(PageAllocator.freeList(5)).maxSequences(1).maxSequenceLength(8).build()) {
            assertEquals(5, c.freePages());
            assertEquals(5, c.kPages().size(0));
        }
    }
}
