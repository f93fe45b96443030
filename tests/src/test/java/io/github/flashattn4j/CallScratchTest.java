package io.github.flashattn4j;

import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The per-thread argument scratch of native calls ({@link CallScratch}): reused by one platform thread's calls
 * one after another, never shared between threads, never handed to a call made on the same thread while it is
 * in use (a release action run when a call's leases end), and never kept by virtual threads.
 */
class CallScratchTest {

    private static final AttentionOptions OPTIONS = AttentionOptions.builder().numThreads(1).build();

    private static float[] gaussian(long seed, int n) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] values = new float[n];
        for (int i = 0; i < n; i++) values[i] = (float) random.nextGaussian();
        return values;
    }

    /** A small forward problem whose inputs come from {@code seed}; returns out. */
    private static float[] forward(long seed) {
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.fromArray(gaussian(seed, 2 * 3 * 2 * 8), DType.FLOAT32, Device.CPU, 2, 3, 2, 8);
            Tensor k = scope.fromArray(gaussian(seed + 1, 2 * 5 * 2 * 8), DType.FLOAT32, Device.CPU, 2, 5, 2, 8);
            Tensor v = scope.fromArray(gaussian(seed + 2, 2 * 5 * 2 * 8), DType.FLOAT32, Device.CPU, 2, 5, 2, 8);
            Tensor out = scope.empty(DType.FLOAT32, Device.CPU, 2, 3, 2, 8);
            Tensor lse = scope.empty(DType.FLOAT32, Device.CPU, 2, 2, 3);
            Attention.forwardInto(q, k, v, out, lse, OPTIONS);
            return out.toFloatArray();
        }
    }

    private static void fillPattern(MemorySegment segment, byte seed) {
        for (long i = 0; i < segment.byteSize(); i++) segment.set(ValueLayout.JAVA_BYTE, i, (byte) (seed + i));
    }

    private static boolean hasPattern(MemorySegment segment, byte seed) {
        for (long i = 0; i < segment.byteSize(); i++) {
            if (segment.get(ValueLayout.JAVA_BYTE, i) != (byte) (seed + i)) return false;
        }
        return true;
    }

    @Test
    void aPlatformThreadReusesOneBlockAndGetsZeroedMemory() {
        long first;
        try (CallScratch scratch = CallScratch.open()) {
            assertTrue(scratch.isReused());
            MemorySegment m = scratch.allocate(256, 8);
            first = m.address();
            fillPattern(m, (byte) 7);
        }
        try (CallScratch scratch = CallScratch.open()) {
            assertTrue(scratch.isReused());
            MemorySegment m = scratch.allocate(256, 8);
            assertEquals(first, m.address(), "the block is reused from its start");
            for (long i = 0; i < m.byteSize(); i++) assertEquals(0, m.get(ValueLayout.JAVA_BYTE, i), "byte " + i + " not zeroed");
            MemorySegment next = scratch.allocate(3, 1);
            MemorySegment aligned = scratch.allocate(16, 16);
            assertTrue(next.address() >= m.address() + 256, "allocations overlap");
            assertEquals(0, aligned.address() % 16);
            assertTrue(aligned.address() >= next.address() + 3, "allocations overlap");
        }
    }

    @Test
    void aScratchInUseIsNotHandedOutAgainOnItsThread() {
        try (CallScratch outer = CallScratch.open()) {
            MemorySegment held = outer.allocate(512, 8);
            fillPattern(held, (byte) 3);
            try (CallScratch inner = CallScratch.open()) {
                assertNotSame(outer, inner);
                assertFalse(inner.isReused(), "a re-entrant call must get memory of its own");
                MemorySegment mine = inner.allocate(512, 8);
                fillPattern(mine, (byte) 99);
                assertTrue(mine.address() + 512 <= held.address() || held.address() + 512 <= mine.address(), "shared memory");
            }
            assertTrue(hasPattern(held, (byte) 3), "the outer call's arguments were overwritten");
        }
        // Free again afterwards.
        try (CallScratch again = CallScratch.open()) {
            assertTrue(again.isReused());
        }
    }

    @Test
    void memoryOfItsOwnAndOverflowAreFreedOnClose() {
        MemorySegment overflow;
        MemorySegment own;
        try (CallScratch outer = CallScratch.open()) {
            overflow = outer.allocate(CallScratch.BLOCK_BYTES + 1, 8);  // does not fit the block
            fillPattern(overflow, (byte) 1);
            try (CallScratch inner = CallScratch.open()) {
                own = inner.allocate(64, 8);
                assertTrue(own.scope().isAlive());
            }
            assertFalse(own.scope().isAlive(), "a re-entrant call's memory must be freed when it ends");
            assertTrue(overflow.scope().isAlive());
        }
        assertFalse(overflow.scope().isAlive(), "overflow memory must be freed when the call ends");
    }

    @Test
    void aClosedScratchRefusesToAllocate() {
        CallScratch scratch = CallScratch.open();
        scratch.close();
        assertThrows(IllegalStateException.class, () -> scratch.allocate(8, 8));
        scratch.close();  // idempotent
    }

    @Test
    void threadsNeverShareABlock() throws Exception {
        int threads = 4;
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        try {
            CountDownLatch allOpen = new CountDownLatch(threads);
            List<Future<long[]>> blocks = new ArrayList<>();
            for (int t = 0; t < threads; t++) {
                byte seed = (byte) (t * 31);
                blocks.add(pool.submit(() -> {
                    try (CallScratch scratch = CallScratch.open()) {
                        assertTrue(scratch.isReused());
                        MemorySegment m = scratch.allocate(1024, 8);
                        fillPattern(m, seed);
                        allOpen.countDown();
                        assertTrue(allOpen.await(30, TimeUnit.SECONDS));  // every thread holds its scratch now
                        assertTrue(hasPattern(m, seed), "another thread wrote into this thread's scratch");
                        return new long[] {m.address(), m.address() + m.byteSize()};
                    }
                }));
            }
            List<long[]> ranges = new ArrayList<>();
            for (Future<long[]> f : blocks) ranges.add(f.get(60, TimeUnit.SECONDS));
            for (int i = 0; i < ranges.size(); i++) {
                for (int j = i + 1; j < ranges.size(); j++) {
                    long[] a = ranges.get(i), b = ranges.get(j);
                    assertTrue(a[1] <= b[0] || b[1] <= a[0], "threads " + i + " and " + j + " share scratch memory");
                }
            }
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void virtualThreadsKeepNoBlock() throws Exception {
        AtomicReference<Boolean> reused = new AtomicReference<>();
        Thread t = Thread.ofVirtual().start(() -> {
            try (CallScratch scratch = CallScratch.open()) {
                reused.set(scratch.isReused());
                scratch.allocate(64, 8);
            }
        });
        t.join(30_000);
        assertEquals(Boolean.FALSE, reused.get());
        // ... and attention runs there all the same.
        AtomicReference<float[]> result = new AtomicReference<>();
        Thread.ofVirtual().start(() -> result.set(forward(42))).join(30_000);
        assertArrayEquals(forward(42), result.get());
    }

    /**
     * The re-entrant case for real: a wrapped tensor's release action runs an attention call on the thread whose
     * lease ends last, which inside {@link Attention} is while that call's scratch is still open (its leases are
     * released before its scratch). The nested call must get memory of its own: the outer arguments stay intact
     * and both results are right.
     */
    @Test
    void aReleaseActionThatCallsAttentionDuringACallUsesMemoryOfItsOwn() {
        float[] expected = forward(7);
        AtomicReference<float[]> nested = new AtomicReference<>();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment data = arena.allocate(64 * Float.BYTES, 64);
            Tensor wrapped = Tensor.wrap(data, DType.FLOAT32, new long[] {64}, new long[] {1}, () -> nested.set(forward(7)));
            try (CallScratch outer = CallScratch.open()) {
                MemorySegment arguments = outer.allocate(CallScratch.BLOCK_BYTES / 2, 8);
                fillPattern(arguments, (byte) 5);
                Storage.Lease lease = wrapped.lease();
                wrapped.close();  // deferred: the lease is held
                assertNotNull(lease);
                lease.close();    // the last lease: the release action runs here, on this thread
                assertNotNull(nested.get(), "the release action did not run");
                assertTrue(hasPattern(arguments, (byte) 5), "the nested call overwrote the outer call's arguments");
            }
        }
        assertArrayEquals(expected, nested.get());
    }

    /** Many threads calling at once, each on its own inputs, get exactly what one thread alone gets. */
    @Test
    void concurrentCallsGetTheirOwnResults() throws Exception {
        int threads = 6, calls = 300;
        float[][] expected = new float[threads][];
        for (int t = 0; t < threads; t++) expected[t] = forward(1000 + t);
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        try {
            CountDownLatch go = new CountDownLatch(1);
            List<Future<?>> runs = new ArrayList<>();
            for (int t = 0; t < threads; t++) {
                int id = t;
                runs.add(pool.submit(() -> {
                    go.await();
                    for (int i = 0; i < calls; i++) assertArrayEquals(expected[id], forward(1000 + id), "thread " + id + " call " + i);
                    return null;
                }));
            }
            go.countDown();
            for (Future<?> f : runs) f.get(120, TimeUnit.SECONDS);
        } finally {
            pool.shutdownNow();
        }
        assertNotEquals(expected[0][0], expected[1][0]);  // the threads really computed different things
    }

    @Test
    void callsOnOneThreadLeaveTheScratchFree() {
        forward(1);
        try (CallScratch scratch = CallScratch.open()) {
            assertTrue(scratch.isReused(), "a finished call left its scratch marked in use");
        }
        // A refused call too (the native call throws between open and close).
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.zeros(DType.FLOAT32, Device.CPU, 1, 2, 1, 8);
            Tensor k = scope.zeros(DType.FLOAT32, Device.CPU, 1, 2, 2, 8);  // 2 kv heads for 1 q head
            Tensor out = scope.empty(DType.FLOAT32, Device.CPU, 1, 2, 1, 8);
            Tensor lse = scope.empty(DType.FLOAT32, Device.CPU, 1, 1, 2);
            assertThrows(FlashAttnException.InvalidArgument.class, () -> Attention.forwardInto(q, k, k, out, lse, OPTIONS));
            assertThrows(FlashAttnException.InvalidArgument.class, () -> Attention.forward(q, k, k, OPTIONS));
        }
        try (CallScratch scratch = CallScratch.open()) {
            assertTrue(scratch.isReused(), "a failed call left its scratch marked in use");
        }
    }
}
