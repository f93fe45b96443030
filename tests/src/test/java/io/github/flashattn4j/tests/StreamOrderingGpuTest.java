package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.Cuda;
import io.github.flashattn4j.CudaStream;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Asynchronous work on CUDA streams: attention queued on a stream and read back on the same stream without
 * an explicit synchronize; tensors and streams closed while work that uses them is still queued (the
 * memory is then reused at once, so a premature free would show up as wrong results); several threads with
 * a stream each. Problems are large enough (milliseconds of GPU work per call, several calls queued) that
 * a missing ordering would be visible: outputs are NaN-poisoned beforehand, and the forward kernel is
 * deterministic, so its results must match the default stream's bit for bit.
 */
class StreamOrderingGpuTest extends GpuTest {

    private static final DType DTYPE = DType.BFLOAT16;
    private static final AttentionOptions OPTIONS = AttentionOptions.defaults();
    /** Calls queued back to back, so that the work outlasts the Java code that follows it. */
    private static final int REPEATS = 3;

    /** Inputs on cuda:0 and the results of the default stream, which the other orderings must reproduce. */
    private record Fixture(long[] qShape, long[] kShape, long[] lseShape, Tensor q, Tensor k, Tensor v, Tensor dout,
                           float[] out, float[] lse, float[] dq, float[] dk, float[] dv) {

        static Fixture create(TensorScope scope, int batch, int seq, int heads, int kvHeads, int dim) {
            long[] qShape = {batch, seq, heads, dim}, kShape = {batch, seq, kvHeads, dim}, lseShape = {batch, heads, seq};
            Tensor q = scope.fromArray(pattern(1, qShape), DTYPE, CUDA0, qShape);
            Tensor k = scope.fromArray(pattern(2, kShape), DTYPE, CUDA0, kShape);
            Tensor v = scope.fromArray(pattern(3, kShape), DTYPE, CUDA0, kShape);
            Tensor dout = scope.fromArray(pattern(4, qShape), DTYPE, CUDA0, qShape);
            try (AttentionOutput o = Attention.forward(q, k, v, OPTIONS);
                 AttentionGradients g = Attention.backward(dout, q, k, v, o.out(), o.lse(), OPTIONS)) {
                return new Fixture(qShape, kShape, lseShape, q, k, v, dout, o.out().toFloatArray(), o.lse().toFloatArray(),
                        g.dq().toFloatArray(), g.dk().toFloatArray(), g.dv().toFloatArray());
            }
        }

        Tensor poisoned(TensorScope scope, long[] shape, DType dtype) {
            return scope.track(Tensor.full(Float.NaN, dtype, CUDA0, shape));
        }

        void checkForward(float[] out, float[] lse) {
            assertArrayEquals(this.out, out, "out differs from the default stream's");
            assertArrayEquals(this.lse, lse, "lse differs from the default stream's");
        }

        /** dq is accumulated with atomics, so gradients are compared with a tolerance; NaN (poison) fails. */
        void checkBackward(float[] dq, float[] dk, float[] dv) {
            closeTo("dq", this.dq, dq);
            closeTo("dk", this.dk, dk);
            closeTo("dv", this.dv, dv);
        }
    }

    /** Cheap deterministic values in [-2, 2) (a linear congruential generator), for large inputs. */
    private static float[] pattern(long seed, long[] shape) {
        long n = 1;
        for (long s : shape) n *= s;
        float[] values = new float[Math.toIntExact(n)];
        long x = seed * 0x9E3779B97F4A7C15L;
        for (int i = 0; i < values.length; i++) {
            x = x * 6364136223846793005L + 1442695040888963407L;
            values[i] = ((x >>> 40) / (float) (1 << 24)) * 4f - 2f;
        }
        return values;
    }

    private static void closeTo(String name, float[] expected, float[] actual) {
        double difference = maxDifference(expected, actual);
        double bound = 0.02 * maxAbs(expected) + 1e-3;
        assertTrue(difference <= bound, () -> name + ": max difference " + difference + " to the default stream's exceeds " + bound);
    }

    @Test
    void attentionThenCopyOnTheSameStreamNeedsNoSynchronize() {
        try (TensorScope scope = TensorScope.open(); CudaStream stream = CudaStream.create(CUDA0)) {
            Fixture f = Fixture.create(scope, 2, 4096, 16, 8, 128);
            Tensor out = f.poisoned(scope, f.qShape(), DTYPE), lse = f.poisoned(scope, f.lseShape(), DType.FLOAT32);
            for (int i = 0; i < REPEATS; i++) Attention.forwardInto(f.q(), f.k(), f.v(), out, lse, OPTIONS, stream);
            f.checkForward(out.toFloatArray(stream), lse.toFloatArray(stream));

            Tensor dq = f.poisoned(scope, f.qShape(), DTYPE), dk = f.poisoned(scope, f.kShape(), DTYPE),
                    dv = f.poisoned(scope, f.kShape(), DTYPE);
            out.fill(Float.NaN);
            // Forward and backward queued back to back on the stream; the backward reads what the forward writes.
            Attention.forwardInto(f.q(), f.k(), f.v(), out, lse, OPTIONS, stream);
            Attention.backwardInto(f.dout(), f.q(), f.k(), f.v(), out, lse, dq, dk, dv, OPTIONS, stream);
            f.checkBackward(dq.toFloatArray(stream), dk.toFloatArray(stream), dv.toFloatArray(stream));

            // The other copies on the stream: to the host, and device to device.
            out.fill(Float.NaN);
            Attention.forwardInto(f.q(), f.k(), f.v(), out, lse, OPTIONS, stream);
            Tensor host = scope.track(out.to(Device.CPU, stream));
            Tensor copy = scope.empty(DTYPE, CUDA0, f.qShape());
            Attention.forwardInto(f.q(), f.k(), f.v(), out, lse, OPTIONS, stream);
            copy.copyFrom(out, stream);
            assertArrayEquals(f.out(), host.toFloatArray());
            assertArrayEquals(f.out(), copy.toFloatArray());
        }
    }

    @Test
    void synchronizeThenReadOnTheDefaultStream() {
        try (TensorScope scope = TensorScope.open(); CudaStream stream = CudaStream.create(CUDA0)) {
            Fixture f = Fixture.create(scope, 2, 4096, 16, 8, 128);
            Tensor out = f.poisoned(scope, f.qShape(), DTYPE), lse = f.poisoned(scope, f.lseShape(), DType.FLOAT32);
            for (int i = 0; i < REPEATS; i++) Attention.forwardInto(f.q(), f.k(), f.v(), out, lse, OPTIONS, stream);
            stream.synchronize();
            f.checkForward(out.toFloatArray(), lse.toFloatArray());
        }
    }

    @Test
    void closingInputsWithQueuedWorkIsSafe() {
        try (TensorScope scope = TensorScope.open(); CudaStream stream = CudaStream.create(CUDA0)) {
            Fixture f = Fixture.create(scope, 2, 4096, 16, 8, 128);
            Tensor out = f.poisoned(scope, f.qShape(), DTYPE), lse = f.poisoned(scope, f.lseShape(), DType.FLOAT32);
            Tensor q = f.q().to(CUDA0), k = f.k().to(CUDA0), v = f.v().to(CUDA0);
            for (int i = 0; i < REPEATS; i++) Attention.forwardInto(q, k, v, out, lse, OPTIONS, stream);
            q.close();  // waits for the queued forwards before the memory is released
            k.close();
            v.close();
            // Memory just released is handed out again first: overwrite it while the forward could still run.
            for (long[] shape : new long[][] {f.qShape(), f.kShape(), f.kShape()}) {
                scope.track(Tensor.full(Float.NaN, DTYPE, CUDA0, shape));
            }
            f.checkForward(out.toFloatArray(stream), lse.toFloatArray(stream));
        }
    }

    @Test
    void closingOutputsWithQueuedWorkIsSafe() {
        try (TensorScope scope = TensorScope.open(); CudaStream stream = CudaStream.create(CUDA0)) {
            Fixture f = Fixture.create(scope, 2, 4096, 16, 8, 128);
            Tensor out = Tensor.empty(DTYPE, CUDA0, f.qShape()), lse = Tensor.empty(DType.FLOAT32, CUDA0, f.lseShape());
            for (int i = 0; i < REPEATS; i++) Attention.forwardInto(f.q(), f.k(), f.v(), out, lse, OPTIONS, stream);
            out.close();
            lse.close();
            // If the forward were still running, it would write into these (likely the same addresses).
            Tensor sevens = scope.track(Tensor.full(7f, DTYPE, CUDA0, f.qShape()));
            Tensor eights = scope.track(Tensor.full(8f, DType.FLOAT32, CUDA0, f.lseShape()));
            stream.synchronize();
            Cuda.synchronize(0);
            for (float x : sevens.toFloatArray()) assertEquals(7f, x);
            for (float x : eights.toFloatArray()) assertEquals(8f, x);
        }
    }

    @Test
    void closingAStreamWithQueuedWorkWaitsForIt() {
        try (TensorScope scope = TensorScope.open()) {
            Fixture f = Fixture.create(scope, 2, 4096, 16, 8, 128);
            Tensor out = f.poisoned(scope, f.qShape(), DTYPE), lse = f.poisoned(scope, f.lseShape(), DType.FLOAT32);
            CudaStream stream = CudaStream.create(CUDA0);
            for (int i = 0; i < REPEATS; i++) Attention.forwardInto(f.q(), f.k(), f.v(), out, lse, OPTIONS, stream);
            stream.close();
            assertTrue(stream.isClosed());
            // The default stream does not wait for a non-blocking stream: only close() made this safe.
            f.checkForward(out.toFloatArray(), lse.toFloatArray());

            // Backward work (and its per-stream workspace, released when the stream is destroyed).
            Tensor dq = f.poisoned(scope, f.qShape(), DTYPE), dk = f.poisoned(scope, f.kShape(), DTYPE),
                    dv = f.poisoned(scope, f.kShape(), DTYPE);
            CudaStream second = CudaStream.create(CUDA0);
            for (int i = 0; i < REPEATS; i++) {
                Attention.backwardInto(f.dout(), f.q(), f.k(), f.v(), out, lse, dq, dk, dv, OPTIONS, second);
            }
            second.close();
            f.checkBackward(dq.toFloatArray(), dk.toFloatArray(), dv.toFloatArray());
        }
    }

    @Test
    void aScopeMayCloseEverythingWhileWorkIsQueued() {
        float[] expected;
        try (TensorScope setup = TensorScope.open()) {
            expected = Fixture.create(setup, 1, 2048, 8, 8, 64).out();
        }
        for (int round = 0; round < 3; round++) {
            try (TensorScope scope = TensorScope.open()) {
                CudaStream stream = scope.track(CudaStream.create(CUDA0));
                long[] shape = {1, 2048, 8, 64};
                Tensor q = scope.fromArray(pattern(1, shape), DTYPE, CUDA0, shape);
                Tensor k = scope.fromArray(pattern(2, shape), DTYPE, CUDA0, shape);
                Tensor v = scope.fromArray(pattern(3, shape), DTYPE, CUDA0, shape);
                Tensor dout = scope.fromArray(pattern(4, shape), DTYPE, CUDA0, shape);
                AttentionOutput o = scope.track(Attention.forward(q, k, v, OPTIONS, stream));
                scope.track(Attention.backward(dout, q, k, v, o.out(), o.lse(), OPTIONS, stream));
                if (round == 2) assertArrayEquals(expected, o.out().toFloatArray(stream));
            }  // outputs, inputs and finally the stream are closed with the backward possibly still running
        }
        assertDoesNotThrow(() -> Cuda.synchronize(0));
    }

    @Test
    void aStreamPerThread() throws InterruptedException {
        try (TensorScope scope = TensorScope.open()) {
            Fixture f = Fixture.create(scope, 2, 1024, 16, 4, 128);
            int threads = 4;
            ExecutorService pool = Executors.newFixedThreadPool(threads);
            try {
                List<Future<?>> results = new ArrayList<>();
                for (int t = 0; t < threads; t++) {
                    results.add(pool.submit(() -> {
                        try (TensorScope mine = TensorScope.open(); CudaStream stream = CudaStream.create(CUDA0)) {
                            Tensor out = f.poisoned(mine, f.qShape(), DTYPE), lse = f.poisoned(mine, f.lseShape(), DType.FLOAT32);
                            Tensor dq = f.poisoned(mine, f.qShape(), DTYPE), dk = f.poisoned(mine, f.kShape(), DTYPE),
                                    dv = f.poisoned(mine, f.kShape(), DTYPE);
                            for (int i = 0; i < 5; i++) {
                                out.fill(Float.NaN);
                                dq.fill(Float.NaN);
                                Attention.forwardInto(f.q(), f.k(), f.v(), out, lse, OPTIONS, stream);
                                Attention.backwardInto(f.dout(), f.q(), f.k(), f.v(), out, lse, dq, dk, dv, OPTIONS, stream);
                                f.checkForward(out.toFloatArray(stream), lse.toFloatArray(stream));
                                f.checkBackward(dq.toFloatArray(stream), dk.toFloatArray(stream), dv.toFloatArray(stream));
                            }
                        }
                        return null;
                    }));
                }
                for (Future<?> r : results) {
                    try {
                        r.get();
                    } catch (ExecutionException e) {
                        if (e.getCause() instanceof AssertionError a) throw a;
                        throw new AssertionError(e.getCause());
                    }
                }
            } finally {
                pool.shutdownNow();
            }
        }
    }
}
