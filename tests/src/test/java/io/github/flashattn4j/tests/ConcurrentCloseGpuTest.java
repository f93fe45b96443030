package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.Cuda;
import io.github.flashattn4j.CudaStream;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Closing CUDA tensors and streams while calls on other threads use them: close never fails, the running
 * calls finish correctly, and the last of them releases what was closed (device memory, the stream).
 */
class ConcurrentCloseGpuTest extends GpuTest {

    @Test
    void aStreamClosedWhileOtherThreadsCopyOnItIsDestroyedByTheLastOfThem() throws Exception {
        int threads = 4;
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, 1, 1, 2048, 16, 128);
            float[] expected = q.toFloatArray();
            for (int round = 0; round < 12; round++) {
                CudaStream stream = CudaStream.create(CUDA0);
                CountDownLatch go = new CountDownLatch(1);
                List<Future<Integer>> readers = new ArrayList<>();
                for (int t = 0; t < threads; t++) {
                    readers.add(pool.submit(() -> {
                        go.await();
                        int reads = 0;
                        try {
                            while (true) {
                                assertArrayEquals(expected, q.toFloatArray(stream));
                                reads++;
                            }
                        } catch (IllegalStateException closed) {
                            return reads;
                        }
                    }));
                }
                go.countDown();
                Thread.sleep(5 + round);
                assertDoesNotThrow(stream::close, "closing a stream other threads are copying on");
                assertTrue(stream.isClosed());
                assertThrows(IllegalStateException.class, stream::synchronize);
                for (Future<Integer> r : readers) r.get(60, TimeUnit.SECONDS);
            }
            // Every stream was destroyed by someone: new streams and the device still work.
            try (CudaStream fresh = CudaStream.create(CUDA0)) {
                assertArrayEquals(expected, q.toFloatArray(fresh));
            }
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void aTensorClosedWhileAnotherThreadCopiesFromItIsFreedWhenTheCopyReturns() throws Exception {
        long ballast = 256L << 20;  // bfloat16 elements beside the viewed part of each closed base: 512 MiB
        int elements = 8 << 20;
        ExecutorService worker = Executors.newSingleThreadExecutor();
        try {
            float[] values = gaussian(1, elements);
            float[] expected;
            try (Tensor reference = Tensor.fromArray(values, DType.BFLOAT16, CUDA0, elements)) {
                expected = reference.toFloatArray();
            }
            Cuda.synchronize(0);
            long usedBefore = Cuda.poolInfo(0).usedBytes();
            int rounds = 6;
            for (int round = 0; round < rounds; round++) {
                Tensor base = Tensor.empty(DType.BFLOAT16, CUDA0, elements + ballast);
                Tensor view = base.slice(0, 0, elements);
                view.copyFromArray(values);
                CountDownLatch started = new CountDownLatch(1);
                Future<Integer> reader = worker.submit(() -> {
                    started.countDown();
                    int reads = 0;
                    try {
                        while (true) {  // each read holds the memory for a synchronous 16 MiB copy
                            assertArrayEquals(expected, view.toFloatArray());
                            reads++;
                        }
                    } catch (IllegalStateException closed) {
                        return reads;
                    }
                });
                started.await();
                Thread.sleep(2 + round);
                assertDoesNotThrow(base::close);
                assertTrue(view.isClosed());
                reader.get(120, TimeUnit.SECONDS);  // rethrows a failed comparison
            }
            Cuda.synchronize(0);  // releases are stream-ordered: they complete with the streams' work
            long growth = Cuda.poolInfo(0).usedBytes() - usedBefore;
            assertTrue(growth < rounds * ballast, "device memory grew by " + growth + " bytes: closed bases were not freed");
        } finally {
            worker.shutdownNow();
        }
    }

    @Test
    void closingAStreamAndATensorUsedOnItWhileAnotherThreadCopiesOnItDoesNotDeadlock() throws Exception {
        // The copying thread holds leases on both; its release of the tensor, ordered after the stream's
        // work, must not wait for the stream's destruction, which waits for that thread's stream lease.
        ExecutorService worker = Executors.newSingleThreadExecutor();
        try (TensorScope scope = TensorScope.open()) {
            Tensor k = scope.randn(DType.BFLOAT16, CUDA0, 2, 1, 256, 4, 64);
            for (int round = 0; round < 8; round++) {
                CudaStream stream = CudaStream.create(CUDA0);
                Tensor q = Tensor.randn(DType.BFLOAT16, CUDA0, 1, 1, 4096, 32, 64);  // 16 MiB: each copy takes a while
                Tensor out = Tensor.empty(DType.BFLOAT16, CUDA0, 1, 4096, 32, 64);
                Tensor lse = scope.empty(DType.FLOAT32, CUDA0, 1, 32, 4096);
                // An attention call on the stream: q's release is now ordered after that stream's work.
                Attention.forwardInto(q, k, k, out, lse, AttentionOptions.defaults(), stream);
                float[] expected = q.toFloatArray(stream);
                CountDownLatch started = new CountDownLatch(1);
                Future<Integer> reader = worker.submit(() -> {
                    started.countDown();
                    int reads = 0;
                    try {
                        while (true) {
                            assertArrayEquals(expected, q.toFloatArray(stream));
                            reads++;
                        }
                    } catch (IllegalStateException closed) {
                        return reads;
                    }
                });
                started.await();
                Thread.sleep(3);
                stream.close();
                q.close();
                out.close();
                reader.get(60, TimeUnit.SECONDS);  // a deadlock shows as a timeout here
            }
        } finally {
            worker.shutdownNow();
        }
    }
}
