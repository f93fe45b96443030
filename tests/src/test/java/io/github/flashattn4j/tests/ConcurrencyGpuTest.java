package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.CudaStream;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;

import static io.github.flashattn4j.DType.BFLOAT16;
import static io.github.flashattn4j.DType.FLOAT16;
import static io.github.flashattn4j.DType.FLOAT32;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Many threads on one GPU at once. Eight threads, each with its own {@link CudaStream}, run attention forward
 * and backward on shared inputs and must get what the same calls give one after another on the default
 * stream: out and lse bit for bit (the forward kernels have no atomics), dq, dk and dv within one rounding of
 * the dtype (dq is accumulated with atomics, in an order that varies from run to run). Threads that close
 * their own tensors and streams with work still queued disturb the threads that keep working on theirs.
 * Closing a tensor or a stream that other threads are using right now is refused with
 * {@link IllegalStateException}, as documented, and once closed it refuses every call the same way: no crash,
 * no CUDA error, no other exception.
 */
class ConcurrencyGpuTest extends GpuTest {

    private static final int THREADS = 8;
    private static final long TIMEOUT_SECONDS = 300;

    /** One problem, its inputs on cuda:0 (shared read-only by every thread) and its serial results. */
    private record Fixture(DType dtype, Problem problem, AttentionOptions options, Tensor q, Tensor k, Tensor v,
                           Tensor dout, float[][] expected) {

        static Fixture create(TensorScope scope, DType dtype, Problem p, long seed) {
            AttentionOptions options = AttentionOptions.builder().causal(p.causal()).softmaxScale((float) p.scale()).build();
            Tensor q = scope.randn(dtype, CUDA0, seed, p.qShape());
            Tensor k = scope.randn(dtype, CUDA0, seed + 1, p.kShape());
            Tensor v = scope.randn(dtype, CUDA0, seed + 2, p.kShape());
            Tensor dout = scope.randn(dtype, CUDA0, seed + 3, p.qShape());
            try (AttentionOutput o = Attention.forward(q, k, v, options);
                 AttentionGradients g = Attention.backward(dout, q, k, v, o.out(), o.lse(), options)) {
                float[][] expected = {o.out().toFloatArray(), o.lse().toFloatArray(), g.dq().toFloatArray(),
                                      g.dk().toFloatArray(), g.dv().toFloatArray()};
                return new Fixture(dtype, p, options, q, k, v, dout, expected);
            }
        }

        /** Forward and backward on {@code stream}, into fresh tensors (allocating overloads or NaN-filled *Into). */
        float[][] run(CudaStream stream, boolean allocating) {
            try (TensorScope step = TensorScope.open()) {
                Tensor out, lse, dq, dk, dv;
                if (allocating) {
                    AttentionOutput o = step.track(Attention.forward(q, k, v, options, stream));
                    out = o.out();
                    lse = o.lse();
                    AttentionGradients g = step.track(Attention.backward(dout, q, k, v, out, lse, options, stream));
                    dq = g.dq();
                    dk = g.dk();
                    dv = g.dv();
                } else {
                    out = step.track(Tensor.full(Float.NaN, dtype, CUDA0, problem.qShape()));
                    lse = step.track(Tensor.full(Float.NaN, FLOAT32, CUDA0, problem.lseShape()));
                    dq = step.track(Tensor.full(Float.NaN, dtype, CUDA0, problem.qShape()));
                    dk = step.track(Tensor.full(Float.NaN, dtype, CUDA0, problem.kShape()));
                    dv = step.track(Tensor.full(Float.NaN, dtype, CUDA0, problem.kShape()));
                    Attention.forwardInto(q, k, v, out, lse, options, stream);
                    Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, options, stream);
                }
                return new float[][] {out.toFloatArray(stream), lse.toFloatArray(stream), dq.toFloatArray(stream),
                                      dk.toFloatArray(stream), dv.toFloatArray(stream)};
            }
        }

        void check(float[][] actual, String where) {
            String prefix = dtype + " " + problem + " " + where + ": ";
            assertArrayEquals(expected[0], actual[0], () -> prefix + "out differs from the serial run's");
            assertArrayEquals(expected[1], actual[1], () -> prefix + "lse differs from the serial run's");
            String[] names = {"dq", "dk", "dv"};
            for (int i = 0; i < names.length; i++) closeTo(prefix + names[i], expected[2 + i], actual[2 + i], dtype);
        }
    }

    /**
     * Each element within one rounding of the dtype at its magnitude (a different order of fp32 additions
     * can round to the neighbouring value) plus 1e-3 of the largest magnitude (for sums that cancel);
     * NaN fails.
     */
    private static void closeTo(String what, float[] expected, float[] actual, DType dtype) {
        assertEquals(expected.length, actual.length, what);
        double relative = dtype == BFLOAT16 ? 0x1p-7 : 0x1p-10;
        double floor = 1e-3 * maxAbs(expected);
        for (int i = 0; i < expected.length; i++) {
            double e = expected[i], a = actual[i];
            if (!(Math.abs(a - e) <= relative * Math.abs(e) + floor)) {
                fail(what + "[" + i + "] = " + a + ", the serial run gave " + e);
            }
        }
    }

    private static List<Fixture> fixtures(TensorScope scope) {
        return List.of(
                Fixture.create(scope, BFLOAT16, Problem.of(1, 256, 256, 8, 2, 64, true), 100),    // GQA, causal
                Fixture.create(scope, FLOAT16, Problem.of(2, 200, 200, 4, 4, 128, false), 200),
                Fixture.create(scope, BFLOAT16, Problem.of(1, 130, 333, 8, 1, 128, true), 300),   // MQA, Nq < Nk
                Fixture.create(scope, FLOAT16, Problem.of(2, 333, 128, 4, 2, 64, true), 400));    // Nq > Nk
    }

    /** Runs every task on its own thread, all released at once; rethrows the first failure. */
    private static <T> List<T> runTogether(List<Callable<T>> tasks) throws InterruptedException {
        ExecutorService pool = Executors.newFixedThreadPool(tasks.size());
        CountDownLatch start = new CountDownLatch(1);
        try {
            List<Future<T>> futures = new ArrayList<>();
            for (Callable<T> task : tasks) {
                futures.add(pool.submit(() -> {
                    start.await();
                    return task.call();
                }));
            }
            start.countDown();
            List<T> results = new ArrayList<>();
            for (Future<T> f : futures) {
                try {
                    results.add(f.get(TIMEOUT_SECONDS, TimeUnit.SECONDS));
                } catch (ExecutionException e) {
                    if (e.getCause() instanceof AssertionError a) throw a;
                    throw new AssertionError("a thread failed: " + e.getCause(), e.getCause());
                } catch (TimeoutException e) {
                    throw new AssertionError("a thread did not finish within " + TIMEOUT_SECONDS + " s (deadlock?)", e);
                }
            }
            return results;
        } finally {
            pool.shutdownNow();
            assertTrue(pool.awaitTermination(TIMEOUT_SECONDS, TimeUnit.SECONDS), "threads still running");
        }
    }

    @Test
    void eightThreadsWithAStreamEachGetTheSerialResults() throws InterruptedException {
        try (TensorScope scope = TensorScope.open()) {
            List<Fixture> fixtures = fixtures(scope);
            int rounds = 4;
            List<Callable<Integer>> tasks = new ArrayList<>();
            for (int t = 0; t < THREADS; t++) {
                int thread = t;
                tasks.add(() -> {
                    int calls = 0;
                    try (CudaStream stream = CudaStream.create(CUDA0)) {
                        for (int round = 0; round < rounds; round++) {
                            for (int i = 0; i < fixtures.size(); i++) {
                                // Threads start on different problems, so different kernels overlap.
                                Fixture f = fixtures.get((thread + i) % fixtures.size());
                                boolean allocating = (round + thread) % 2 == 0;
                                f.check(f.run(stream, allocating), "thread " + thread + " round " + round);
                                calls++;
                            }
                        }
                    }
                    return calls;
                });
            }
            int calls = runTogether(tasks).stream().mapToInt(Integer::intValue).sum();
            assertEquals(THREADS * rounds * fixtures.size(), calls);
            System.out.printf("concurrency: %d threads, %d forward+backward pairs, all equal to the serial results%n",
                    THREADS, calls);
        }
    }

    @Test
    void threadsClosingTheirOwnTensorsAndStreamsDisturbNobody() throws InterruptedException {
        try (TensorScope scope = TensorScope.open()) {
            List<Fixture> fixtures = fixtures(scope);
            int iterations = 24;
            List<Callable<Integer>> tasks = new ArrayList<>();
            // Half the threads keep one stream and check every result.
            for (int t = 0; t < THREADS / 2; t++) {
                int thread = t;
                tasks.add(() -> {
                    try (CudaStream stream = CudaStream.create(CUDA0)) {
                        for (int i = 0; i < iterations; i++) {
                            Fixture f = fixtures.get((thread + i) % fixtures.size());
                            f.check(f.run(stream, i % 2 == 0), "steady thread " + thread + " iteration " + i);
                        }
                    }
                    return iterations;
                });
            }
            // The other half make their own inputs and a stream, queue work, and close it all while the work
            // may still be running, in three different orders.
            for (int t = 0; t < THREADS / 2; t++) {
                int thread = t;
                tasks.add(() -> {
                    for (int i = 0; i < iterations; i++) {
                        Fixture f = fixtures.get((thread + i) % fixtures.size());
                        CudaStream stream = CudaStream.create(CUDA0);
                        Tensor q = f.q().to(CUDA0), k = f.k().to(CUDA0), v = f.v().to(CUDA0), dout = f.dout().to(CUDA0);
                        AttentionOutput o = Attention.forward(q, k, v, f.options(), stream);
                        AttentionGradients g = Attention.backward(dout, q, k, v, o.out(), o.lse(), f.options(), stream);
                        switch (i % 3) {
                            case 0 -> {  // everything at once, newest first, the stream last
                                g.close();
                                o.close();
                                for (Tensor x : new Tensor[] {dout, v, k, q}) x.close();
                                stream.close();
                            }
                            case 1 -> {  // the stream first (it waits for its work), then the tensors
                                stream.close();
                                for (Tensor x : new Tensor[] {q, k, v, dout}) x.close();
                                g.close();
                                o.close();
                            }
                            default -> {  // the inputs first; the results must still come out right
                                for (Tensor x : new Tensor[] {q, k, v, dout}) x.close();
                                assertArrayEquals(f.expected()[0], o.out().toFloatArray(stream),
                                        "out after its inputs were closed, churning thread " + thread);
                                closeTo("dk after its inputs were closed", f.expected()[3], g.dk().toFloatArray(stream), f.dtype());
                                g.close();
                                o.close();
                                stream.close();
                            }
                        }
                    }
                    return iterations;
                });
            }
            int total = runTogether(tasks).stream().mapToInt(Integer::intValue).sum();
            assertEquals(THREADS * iterations, total);
        }
    }

    @Test
    void closingATensorOthersAreUsingIsRefusedThenFinal() throws InterruptedException {
        try (TensorScope scope = TensorScope.open()) {
            Fixture f = fixtures(scope).get(0);
            Tensor shared = scope.track(f.q().to(CUDA0));
            Race race = new Race();
            List<Callable<Void>> tasks = new ArrayList<>();
            for (int t = 0; t < THREADS - 1; t++) {
                int thread = t;
                tasks.add(() -> {
                    try (TensorScope mine = TensorScope.open(); CudaStream stream = CudaStream.create(CUDA0)) {
                        Tensor out = mine.empty(f.dtype(), CUDA0, f.problem().qShape());
                        Tensor lse = mine.empty(FLOAT32, CUDA0, f.problem().lseShape());
                        race.untilRefusedAfterClose(shared::isClosed, () -> {
                            out.fill(Float.NaN);
                            Attention.forwardInto(shared, f.k(), f.v(), out, lse, f.options(), stream);
                            // The forward ran before the close or the close waited for it: either way complete.
                            assertArrayEquals(f.expected()[0], out.toFloatArray(stream), "out, thread " + thread);
                        });
                    }
                    return null;
                });
            }
            tasks.add(() -> {
                race.close(shared::close);
                return null;
            });
            runTogether(tasks);
            race.report("tensor");
            assertTrue(shared.isClosed());
            assertThrows(IllegalStateException.class, () -> Attention.forward(shared, f.k(), f.v(), f.options()));
        }
    }

    @Test
    void closingAStreamOthersAreUsingIsRefusedThenFinal() throws InterruptedException {
        try (TensorScope scope = TensorScope.open()) {
            Fixture f = fixtures(scope).get(2);
            CudaStream shared = CudaStream.create(CUDA0);
            Race race = new Race();
            List<Callable<Void>> tasks = new ArrayList<>();
            for (int t = 0; t < THREADS - 1; t++) {
                int thread = t;
                tasks.add(() -> {
                    try (TensorScope mine = TensorScope.open()) {
                        Tensor out = mine.empty(f.dtype(), CUDA0, f.problem().qShape());
                        Tensor lse = mine.empty(FLOAT32, CUDA0, f.problem().lseShape());
                        race.untilRefusedAfterClose(shared::isClosed, () -> {
                            out.fill(Float.NaN);
                            Attention.forwardInto(f.q(), f.k(), f.v(), out, lse, f.options(), shared);
                            float[] result;
                            try {
                                result = out.toFloatArray(shared);
                            } catch (IllegalStateException closedMeanwhile) {
                                // Once close() has returned, the stream's work is done and the default stream
                                // (which does not wait for a non-blocking stream) sees the result.
                                assertTrue(shared.isClosed(), () -> "refused although open: " + closedMeanwhile);
                                race.awaitClosed();
                                result = out.toFloatArray();
                            }
                            assertArrayEquals(f.expected()[0], result, "out, thread " + thread);
                        });
                    }
                    return null;
                });
            }
            tasks.add(() -> {
                race.close(shared::close);
                return null;
            });
            runTogether(tasks);
            race.report("stream");
            assertTrue(shared.isClosed());
            assertThrows(IllegalStateException.class, shared::synchronize);
        }
    }

    /**
     * Threads calling while one thread closes what they use. Calls before the close must succeed; the close
     * is refused (IllegalStateException) while a call holds the resource and is retried; every call after
     * it must be refused with IllegalStateException. Anything else fails the test.
     */
    private static final class Race {

        /** One call of a racing thread. */
        @FunctionalInterface
        interface Attempt {
            void run() throws InterruptedException;
        }

        private static final int CALLS_BEFORE_CLOSE = 4 * THREADS;
        private static final int REFUSALS_AFTER_CLOSE = 3;

        private final AtomicInteger succeeded = new AtomicInteger();
        private final AtomicInteger refused = new AtomicInteger();
        private final AtomicInteger closeRefused = new AtomicInteger();
        private final AtomicBoolean closed = new AtomicBoolean();
        private final CountDownLatch enoughCalls = new CountDownLatch(CALLS_BEFORE_CLOSE);

        /** Repeats {@code call} until it has been refused a few times after the close. */
        void untilRefusedAfterClose(BooleanSupplier isClosed, Attempt call) throws InterruptedException {
            int refusalsAfterClose = 0;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_SECONDS / 2);
            while (refusalsAfterClose < REFUSALS_AFTER_CLOSE) {
                if (System.nanoTime() > deadline) throw new AssertionError("the resource was never closed");
                boolean closedBefore = closed.get();
                try {
                    call.run();
                    assertTrue(!closedBefore, "a call succeeded after the close had finished");
                    succeeded.incrementAndGet();
                    enoughCalls.countDown();
                } catch (IllegalStateException e) {
                    // Refused: legitimate only once the close has begun (a call racing the close is refused
                    // by the closed flag, which is set before close() returns).
                    assertTrue(isClosed.getAsBoolean(), () -> "refused while the resource is open: " + e);
                    refused.incrementAndGet();
                    if (closed.get()) refusalsAfterClose++;
                    Thread.sleep(1);
                }
            }
        }

        /** Closes once enough calls have succeeded, retrying while a call holds the resource. */
        void close(Runnable close) throws InterruptedException {
            assertTrue(enoughCalls.await(TIMEOUT_SECONDS / 2, TimeUnit.SECONDS), "the calling threads made no progress");
            while (true) {
                try {
                    close.run();
                    break;
                } catch (IllegalStateException busy) {
                    closeRefused.incrementAndGet();
                    Thread.onSpinWait();
                }
            }
            closed.set(true);
        }

        /** Waits until {@link #close} has returned. */
        void awaitClosed() throws InterruptedException {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_SECONDS / 2);
            while (!closed.get()) {
                if (System.nanoTime() > deadline) throw new AssertionError("close() did not return");
                Thread.sleep(1);
            }
        }

        void report(String what) {
            System.out.printf("concurrent close of a %s: %d calls succeeded before it, %d refused after it; the close "
                    + "was refused %d times while a call held the %s%n", what, succeeded.get(), refused.get(),
                    closeRefused.get(), what);
            assertTrue(succeeded.get() >= CALLS_BEFORE_CLOSE, "calls before the close");
            assertTrue(refused.get() >= (THREADS - 1) * REFUSALS_AFTER_CLOSE, "refusals after the close");
        }
    }
}
