package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Closing tensors and scopes while other threads compute with them: close never fails, a call that had
 * started finishes with correct results, later calls throw {@link IllegalStateException}, and the memory
 * is freed once the running call has returned.
 */
class ConcurrentCloseTest {

    private static final AttentionOptions OPTIONS = AttentionOptions.defaults();

    private static float[] gaussian(long seed, int n) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] values = new float[n];
        for (int i = 0; i < n; i++) values[i] = (float) random.nextGaussian();
        return values;
    }

    private static long residentBytes() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmRSS:")) return Long.parseLong(line.replaceAll("\\D", "")) * 1024;
            }
        } catch (IOException e) {
            return -1;
        }
        return -1;
    }

    /**
     * Whether an {@link IllegalStateException} is the library's "closed" refusal, not the JDK's
     * "Already closed" from touching memory freed under a running access (which deferral must prevent).
     */
    private static boolean isOurs(IllegalStateException e) {
        return e.getMessage() != null && e.getMessage().contains("closed") && !e.getMessage().startsWith("Already closed");
    }

    /** Outcome of one attention call on another thread: when it started and ended, or how it failed. */
    private record Call(long startNanos, long endNanos, Throwable failure) {}

    @Test
    void closingTheBaseOfAViewDuringACallDefersTheFreeUntilTheCallReturns() throws Exception {
        long rssBefore = residentBytes();
        Assumptions.assumeTrue(rssBefore > 0, "no /proc/self/status on this OS");
        // Each base holds q and 48 MiB of ballast, above glibc's largest mmap threshold, so its free shows in
        // the resident set at once. References to every closed base stay alive: the Cleaner cannot be what
        // frees them, and a base never freed would keep its 48 MiB resident.
        int iterations = 24;
        long ballast = 12L << 20;
        int seq = 512, heads = 4, dim = 64, qElements = seq * heads * dim;
        List<Tensor> closedBases = new ArrayList<>();
        ExecutorService worker = Executors.newSingleThreadExecutor();
        int overlapped = 0, refused = 0;
        try (TensorScope scope = TensorScope.open()) {
            Tensor k = scope.randn(DType.FLOAT32, Device.CPU, 2, 1, seq, heads, dim);
            Tensor v = scope.randn(DType.FLOAT32, Device.CPU, 3, 1, seq, heads, dim);
            Tensor expectedOut;
            float[] qValues = gaussian(1, qElements);
            try (Tensor q = Tensor.fromArray(qValues, DType.FLOAT32, Device.CPU, 1, seq, heads, dim)) {
                expectedOut = scope.track(Attention.forward(q, k, v, OPTIONS).out());
            }
            float[] expected = expectedOut.toFloatArray();
            for (int i = 0; i < iterations; i++) {
                Tensor base = Tensor.empty(DType.FLOAT32, Device.CPU, qElements + ballast);
                base.asSegment().fill((byte) 1);  // resident: large host buffers are zeroed lazily, page by page
                closedBases.add(base);
                Tensor q = base.slice(0, 0, qElements).reshape(1, seq, heads, dim);
                q.copyFromArray(qValues);
                Tensor out = scope.empty(DType.FLOAT32, Device.CPU, 1, seq, heads, dim);
                Tensor lse = scope.empty(DType.FLOAT32, Device.CPU, 1, heads, seq);
                CountDownLatch started = new CountDownLatch(1);
                Future<Call> call = worker.submit(() -> {
                    started.countDown();
                    long start = System.nanoTime();
                    try {
                        Attention.forwardInto(q, k, v, out, lse, OPTIONS);
                        return new Call(start, System.nanoTime(), null);
                    } catch (RuntimeException e) {
                        return new Call(start, System.nanoTime(), e);
                    }
                });
                started.await();
                Thread.sleep(i % 4);  // close at various points of the call (which takes tens of ms)
                long closedAt = System.nanoTime();
                assertDoesNotThrow(base::close);
                assertTrue(q.isClosed() && base.isClosed());
                assertThrows(IllegalStateException.class, q::toFloatArray);
                assertThrows(IllegalStateException.class, () -> Attention.forward(q, k, v, OPTIONS));
                Call result = call.get(60, TimeUnit.SECONDS);
                if (result.failure() == null) {
                    // The call ran on memory that stayed valid to its end: bit-identical to the reference run.
                    assertArrayEquals(expected, out.toFloatArray(), "out of a call whose input was closed meanwhile");
                    if (closedAt < result.endNanos()) overlapped++;
                } else if (result.failure() instanceof IllegalStateException e && isOurs(e)) {
                    refused++;  // closed before the call leased it
                } else {
                    fail("a call racing a close failed with an undocumented exception", result.failure());
                }
            }
        } finally {
            worker.shutdownNow();
        }
        long growth = residentBytes() - rssBefore;
        System.out.printf("concurrent close: %d of %d closes landed during the call, %d before it; RSS grew by %.1f MiB%n",
                overlapped, iterations, refused, growth / 1048576.0);
        assertTrue(overlapped > 0, "no close landed while a call was running: the test exercised nothing");
        long leakIfNotFreed = iterations * ballast * Float.BYTES;
        assertTrue(growth < leakIfNotFreed / 3, "resident memory grew by " + growth + " bytes: closed bases were not freed");
        assertTrue(closedBases.stream().allMatch(Tensor::isClosed));
    }

    @Test
    void aScopeClosedWhileManyThreadsComputeWithItsTensorsClosesEverything() throws Exception {
        int threads = 6;
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        try {
            for (int round = 0; round < 5; round++) {
                TensorScope scope = TensorScope.open();
                Tensor qkv = scope.randn(DType.BFLOAT16, Device.CPU, round, 1, 128, 8, 64);
                Tensor q = qkv.slice(2, 0, 4), k = qkv.slice(2, 4, 6), v = qkv.slice(2, 6, 8);
                List<Tensor> outputs = new ArrayList<>();
                for (int t = 0; t < threads; t++) {
                    outputs.add(scope.empty(DType.BFLOAT16, Device.CPU, 1, 128, 4, 64));
                    outputs.add(scope.empty(DType.FLOAT32, Device.CPU, 1, 4, 128));
                }
                AtomicInteger calls = new AtomicInteger();
                CountDownLatch running = new CountDownLatch(threads);
                List<Future<Throwable>> workers = new ArrayList<>();
                for (int t = 0; t < threads; t++) {
                    Tensor out = outputs.get(2 * t), lse = outputs.get(2 * t + 1);
                    boolean reader = t % 2 == 1;
                    workers.add(pool.submit(() -> {
                        running.countDown();
                        try {
                            while (true) {  // until the scope is closed under it
                                if (reader) {
                                    for (float f : qkv.toFloatArray()) if (!Float.isFinite(f)) return new AssertionError("read freed memory");
                                } else {
                                    Attention.forwardInto(q, k, v, out, lse, OPTIONS);
                                }
                                calls.incrementAndGet();
                            }
                        } catch (IllegalStateException e) {
                            return isOurs(e) ? null : e;
                        } catch (Throwable e) {
                            return e;
                        }
                    }));
                }
                running.await();
                while (calls.get() < threads) Thread.onSpinWait();
                assertDoesNotThrow(scope::close, "closing a scope whose tensors are in use");
                for (Future<Throwable> w : workers) {
                    Throwable failure = w.get(60, TimeUnit.SECONDS);
                    if (failure != null) fail("a worker failed with something other than IllegalStateException", failure);
                }
                assertTrue(qkv.isClosed() && q.isClosed() && outputs.stream().allMatch(Tensor::isClosed));
                assertThrows(IllegalStateException.class, () -> Attention.forward(q, k, v, OPTIONS));
            }
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void readersRacingACloseSeeTheDataOrIllegalState() throws Exception {
        int threads = 8;
        // Small arrays: reads of a megabyte or more would be humongous objects for G1 and inflate the heap
        // for the tests that run after this one in the JVM (HostMemoryLeakTest reads the resident set).
        int rows = 128, cols = 256;
        float[] values = gaussian(7, rows * cols);
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        try {
            for (int round = 0; round < 40; round++) {
                Tensor t = Tensor.fromArray(values, DType.FLOAT32, Device.CPU, rows * cols);
                Tensor view = t.reshape(rows, cols).transpose(0, 1);
                CountDownLatch go = new CountDownLatch(1);
                List<Future<Integer>> readers = new ArrayList<>();
                for (int r = 0; r < threads; r++) {
                    boolean strided = r % 2 == 0;
                    readers.add(pool.submit(() -> {
                        go.await();
                        int reads = 0;
                        try {
                            while (true) {
                                float[] got = strided ? view.toFloatArray() : t.toFloatArray();
                                if (!strided) assertArrayEquals(values, got);
                                else if (got[1] != values[cols]) fail("strided read of freed memory");
                                reads++;
                            }
                        } catch (IllegalStateException e) {
                            if (!isOurs(e)) throw e;
                            return reads;
                        }
                    }));
                }
                go.countDown();
                Thread.sleep(round % 3);
                t.close();
                for (Future<Integer> r : readers) r.get(60, TimeUnit.SECONDS);  // rethrows a failed assertion
                assertTrue(t.isClosed() && view.isClosed());
            }
        } finally {
            pool.shutdownNow();
        }
    }
}
