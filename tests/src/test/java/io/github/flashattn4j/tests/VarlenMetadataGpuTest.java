package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.Cuda;
import io.github.flashattn4j.CudaStream;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.KernelFamily;
import io.github.flashattn4j.PackedSequences;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;

import static io.github.flashattn4j.DType.BFLOAT16;
import static io.github.flashattn4j.DType.FLOAT16;
import static io.github.flashattn4j.DType.FLOAT32;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Bad variable-length metadata on the device (cu_seqlens decreasing, negative, past the packed tensors'
 * rows, sequences longer than max_seqlen; seqused_k negative or above its sequence's keys), which the host
 * cannot check without a synchronisation: the kernels clamp it and raise a flag (see
 * native/src/backends/cuda/metadata_errors.hpp). For each, forward and backward, on the default stream or a
 * stream of its own, with kernel families AUTO, SM80 (and SM90 forward on Hopper):
 * <ul>
 *   <li>the call returns normally (nothing can be known before the kernels ran);</li>
 *   <li>nothing outside the output tensors is written: the outputs are views into larger tensors whose guard
 *       rows and columns (before, after, and a spare head between rows) hold a sentinel that must survive,
 *       and the inputs, offsets and used lengths must be unchanged;</li>
 *   <li>what the kernels wrote is finite (meaningless, but finite; lse may be -inf);</li>
 *   <li>the next synchronising call (device synchronize, stream synchronize, or a synchronous copy of an
 *       unrelated tensor) throws {@link FlashAttnException.InvalidArgument} naming the metadata, exactly once
 *       (also after two bad calls), and later calls are fine: the same call with good metadata matches the
 *       float64 reference.</li>
 * </ul>
 */
class VarlenMetadataGpuTest extends GpuTest {

    /** Sentinel of the guard regions: exactly representable in every dtype, and no attention result. */
    private static final float SENTINEL = -12288f;
    private static final int GUARD = 3;  // guard rows before and after the packed rows (and columns of lse)

    private static final int[] LENGTHS_Q = {20, 33, 7}, LENGTHS_K = {25, 40, 9};
    private static final int HQ = 4, HKV = 2, D = 64;

    /** Which synchronising call must report the bad metadata. */
    enum Sync { DEVICE, STREAM, COPY }

    /** Bad metadata: offsets, used lengths (null: none) and maximum lengths as the call gives them. */
    record Bad(String name, int[] cuQ, int[] cuK, int[] usedK, int maxQ, int maxK) {}

    record Case(Bad bad, boolean backward, Sync sync, KernelFamily family, DType dtype, boolean causal, boolean twice) {
        @Override
        public String toString() {
            return bad.name + (backward ? " backward" : " forward") + " " + dtype + (causal ? " causal" : "") + " " + family
                    + ", reported by " + sync + (twice ? ", two bad calls" : "");
        }
    }

    static Stream<Case> cases() {
        int[] cuQ = VarlenAttention.offsets(LENGTHS_Q), cuK = VarlenAttention.offsets(LENGTHS_K);
        int totalQ = cuQ[3], totalK = cuK[3], maxQ = 33, maxK = 40;
        List<Bad> bad = List.of(
                new Bad("cu_seqlens_q decreasing", new int[] {0, 30, 10, totalQ}, cuK, null, maxQ, maxK),
                new Bad("cu_seqlens_k decreasing", cuQ, new int[] {0, 25, 20, totalK}, null, maxQ, maxK),
                new Bad("cu_seqlens_q past the total", new int[] {0, 20, 53, totalQ + 500}, cuK, null, maxQ, maxK),
                new Bad("cu_seqlens_k past the total", cuQ, new int[] {0, 25, 65, 1 << 30}, null, maxQ, maxK),
                new Bad("cu_seqlens_q negative", new int[] {0, -20, 53, totalQ}, cuK, null, maxQ, maxK),
                new Bad("cu_seqlens_k at the int32 extremes", cuQ, new int[] {0, Integer.MAX_VALUE, Integer.MIN_VALUE, totalK}, null, maxQ, maxK),
                new Bad("a query sequence longer than max_seqlen_q", cuQ, cuK, null, 16, maxK),
                new Bad("a key sequence longer than max_seqlen_k", cuQ, cuK, null, maxQ, 8),
                new Bad("seqused_k above its sequence's keys", cuQ, cuK, new int[] {25, 41, 9}, maxQ, maxK),
                new Bad("seqused_k negative", cuQ, cuK, new int[] {-1, 40, 9}, maxQ, maxK),
                new Bad("seqused_k at the int32 maximum", cuQ, cuK, new int[] {Integer.MAX_VALUE, 0, 9}, maxQ, maxK));
        List<Case> cases = new ArrayList<>();
        int n = 0;
        for (Bad b : bad) {
            for (boolean backward : new boolean[] {false, true}) {
                KernelFamily family = switch (n % 3) {
                    case 0 -> KernelFamily.AUTO;
                    case 1 -> KernelFamily.SM80;
                    default -> backward ? KernelFamily.AUTO : KernelFamily.SM90;  // SM90: on Hopper only (see run)
                };
                cases.add(new Case(b, backward, Sync.values()[n % 3], family, n % 2 == 0 ? BFLOAT16 : FLOAT16, n % 4 < 2, n % 5 == 0));
                n++;
            }
        }
        return cases.stream();
    }

    /** A q-shaped ([rows + 2 GUARD, heads + 1, D]) buffer: 0 in the view's elements, the sentinel around them. */
    private static float[] guarded(int rows, int heads) {
        float[] a = new float[(rows + 2 * GUARD) * (heads + 1) * D];
        Arrays.fill(a, SENTINEL);
        for (int r = 0; r < rows; r++) Arrays.fill(a, ((r + GUARD) * (heads + 1)) * D, ((r + GUARD) * (heads + 1) + heads) * D, 0f);
        return a;
    }

    /** An lse-shaped ([heads + 1, rows + 2 GUARD]) buffer: 0 in the view's elements, the sentinel around them. */
    private static float[] guardedLse(int rows, int heads) {
        float[] a = new float[(heads + 1) * (rows + 2 * GUARD)];
        Arrays.fill(a, SENTINEL);
        for (int h = 0; h < heads; h++) Arrays.fill(a, h * (rows + 2 * GUARD) + GUARD, h * (rows + 2 * GUARD) + GUARD + rows, 0f);
        return a;
    }

    /** One output: the whole guarded buffer and the view the call writes. */
    private record Guarded(Tensor whole, Tensor view, float[] initial) {}

    private static Guarded rowsOutput(TensorScope scope, DType dtype, int rows, int heads) {
        float[] initial = guarded(rows, heads);
        Tensor whole = scope.fromArray(initial, dtype, CUDA0, rows + 2 * GUARD, heads + 1, D);
        return new Guarded(whole, scope.track(scope.track(whole.slice(0, GUARD, GUARD + rows)).slice(1, 0, heads)), initial);
    }

    private static Guarded lseOutput(TensorScope scope, int rows, int heads) {
        float[] initial = guardedLse(rows, heads);
        Tensor whole = scope.fromArray(initial, FLOAT32, CUDA0, heads + 1, rows + 2 * GUARD);
        return new Guarded(whole, scope.track(scope.track(whole.slice(0, 0, heads)).slice(1, GUARD, GUARD + rows)), initial);
    }

    /** Guards hold the sentinel exactly; what the call wrote is finite (lse: not NaN, not +inf). */
    private static void checkGuarded(String what, String name, Guarded g, boolean isLse) {
        float[] now = g.whole().toFloatArray();
        int written = 0;
        for (int i = 0; i < now.length; i++) {
            if (g.initial()[i] == SENTINEL) {
                if (now[i] != SENTINEL) fail(what + ": " + name + " was written outside its view (element " + i + " of the guarded buffer holds " + now[i] + ")");
            } else {
                float x = now[i];
                boolean ok = isLse ? !Float.isNaN(x) && x != Float.POSITIVE_INFINITY : Float.isFinite(x);
                if (!ok) fail(what + ": " + name + " holds " + x + " at element " + i + " (clamped metadata must give finite results)");
                if (x != 0f) written++;
            }
        }
        System.out.println(what + ": " + name + " guards intact, " + written + " elements written");
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void badMetadataIsClampedAndReportedOnceByTheNextSynchronisingCall(Case c) {
        KernelFamily family = c.family() == KernelFamily.SM90 && !BackendRuns.hopper() ? KernelFamily.AUTO : c.family();
        DType dtype = c.dtype();
        Bad bad = c.bad();
        int[] cuQ = VarlenAttention.offsets(LENGTHS_Q), cuK = VarlenAttention.offsets(LENGTHS_K);
        int batch = LENGTHS_Q.length, totalQ = cuQ[batch], totalK = cuK[batch];
        long seed = Seeds.fresh();
        String what = c + " seed " + seed;
        // Nothing may be pending from earlier tests: a report here would belong to someone else.
        assertDoesNotThrow(() -> Cuda.synchronize(0), "a metadata error was pending before the test");
        try (TensorScope scope = TensorScope.open(); CudaStream stream = c.sync() == Sync.STREAM ? CudaStream.create(CUDA0) : null) {
            Tensor q = scope.randn(dtype, CUDA0, seed, totalQ, HQ, D);
            Tensor k = scope.randn(dtype, CUDA0, seed + 1, totalK, HKV, D);
            Tensor v = scope.randn(dtype, CUDA0, seed + 2, totalK, HKV, D);
            Tensor dout = scope.randn(dtype, CUDA0, seed + 3, totalQ, HQ, D);
            Tensor probe = scope.zeros(FLOAT32, CUDA0, 4);
            AttentionOptions options = AttentionOptions.builder().causal(c.causal()).kernelFamily(family).build();
            PackedSequences goodQ = PackedSequences.of(q, scope.fromInts(cuQ, CUDA0, batch + 1), 33);
            PackedSequences goodK = PackedSequences.of(k, scope.fromInts(cuK, CUDA0, batch + 1), 40);
            Tensor badCuQ = scope.fromInts(bad.cuQ(), CUDA0, batch + 1), badCuK = scope.fromInts(bad.cuK(), CUDA0, batch + 1);
            PackedSequences badQ = PackedSequences.of(q, badCuQ, bad.maxQ());
            PackedSequences badK = PackedSequences.of(k, badCuK, bad.maxK());
            Tensor badUsed = null;
            if (bad.usedK() != null) {
                badUsed = scope.fromInts(bad.usedK(), CUDA0, batch);
                badK = badK.withUsedLengths(badUsed);
            }
            // The backward's out and lse come from the forward with good metadata.
            Tensor out = scope.track(Tensor.full(Float.NaN, dtype, CUDA0, totalQ, HQ, D));
            Tensor lse = scope.track(Tensor.full(Float.NaN, FLOAT32, CUDA0, HQ, totalQ));
            Attention.forwardInto(goodQ, goodK, v, out, lse, options);
            assertDoesNotThrow(() -> Cuda.synchronize(0), "good metadata was reported as bad");

            float[][] inputsBefore = {q.toFloatArray(), k.toFloatArray(), v.toFloatArray(), dout.toFloatArray(), out.toFloatArray(),
                                      lse.toFloatArray()};
            List<Guarded> outputs = new ArrayList<>();
            List<String> names;
            if (c.backward()) {
                outputs.add(rowsOutput(scope, dtype, totalQ, HQ));
                outputs.add(rowsOutput(scope, dtype, totalK, HKV));
                outputs.add(rowsOutput(scope, dtype, totalK, HKV));
                names = List.of("dq", "dk", "dv");
            } else {
                outputs.add(rowsOutput(scope, dtype, totalQ, HQ));
                outputs.add(lseOutput(scope, totalQ, HQ));
                names = List.of("out", "lse");
            }
            final PackedSequences bq = badQ, bk = badK;
            Runnable badCall = () -> {
                if (c.backward()) {
                    Tensor dq = outputs.get(0).view(), dk = outputs.get(1).view(), dv = outputs.get(2).view();
                    if (stream != null) Attention.backwardInto(dout, bq, bk, v, out, lse, dq, dk, dv, options, stream);
                    else Attention.backwardInto(dout, bq, bk, v, out, lse, dq, dk, dv, options);
                } else {
                    Tensor o = outputs.get(0).view(), l = outputs.get(1).view();
                    if (stream != null) Attention.forwardInto(bq, bk, v, o, l, options, stream);
                    else Attention.forwardInto(bq, bk, v, o, l, options);
                }
            };
            // The call returns normally: the metadata is on the device, unread.
            try {
                badCall.run();
                if (c.twice()) badCall.run();
            } catch (FlashAttnException e) {
                throw new AssertionError(what + ": the call must return normally (its metadata is not read on the host), but threw "
                        + e.status() + ": " + e.getMessage(), e);
            }

            // The next synchronising call reports it, once.
            FlashAttnException.InvalidArgument reported = assertThrows(FlashAttnException.InvalidArgument.class, () -> {
                switch (c.sync()) {
                    case DEVICE -> Cuda.synchronize(0);
                    case STREAM -> stream.synchronize();
                    case COPY -> probe.toFloatArray();
                }
            }, what + ": the next synchronising call must report the bad metadata");
            String message = reported.getMessage();
            assertTrue(message.contains("cu_seqlens") || message.contains("seqused_k") || message.contains("max_seqlen"),
                    () -> what + ": the message should name the metadata: " + message);
            assertDoesNotThrow(() -> Cuda.synchronize(0), what + ": reported more than once");
            if (stream != null) assertDoesNotThrow(stream::synchronize, what + ": reported more than once");
            assertArrayEquals(new float[4], probe.toFloatArray());

            // Nothing outside the outputs was written; what was written is finite.
            for (int i = 0; i < outputs.size(); i++) checkGuarded(what, names.get(i), outputs.get(i), names.get(i).equals("lse"));
            Tensor[] inputs = {q, k, v, dout, out, lse};
            String[] inputNames = {"q", "k", "v", "dout", "out", "lse"};
            for (int i = 0; i < inputs.length; i++) {
                assertArrayEquals(inputsBefore[i], inputs[i].toFloatArray(), what + ": the call wrote into its input " + inputNames[i]);
            }
            assertArrayEquals(bad.cuQ(), badCuQ.toIntArray(), what + ": cu_seqlens_q changed");
            assertArrayEquals(bad.cuK(), badCuK.toIntArray(), what + ": cu_seqlens_k changed");
            if (badUsed != null) assertArrayEquals(bad.usedK(), badUsed.toIntArray(), what + ": seqused_k changed");

            // Later calls are fine: the good call matches the reference, and nothing is reported.
            goodCallMatchesReference(what, scope, c, options, goodQ, goodK, v, dout, out, lse);
            assertDoesNotThrow(() -> Cuda.synchronize(0), what + ": a good call after the bad one was reported");
        }
    }

    private static void goodCallMatchesReference(String what, TensorScope scope, Case c, AttentionOptions options, PackedSequences q,
                                                 PackedSequences k, Tensor v, Tensor dout, Tensor out, Tensor lse) {
        DType dtype = c.dtype();
        int[] cuQ = VarlenAttention.offsets(LENGTHS_Q), cuK = VarlenAttention.offsets(LENGTHS_K);
        int totalQ = cuQ[cuQ.length - 1], totalK = cuK[cuK.length - 1];
        ReferenceAttention.Varlen vl = new ReferenceAttention.Varlen(cuQ, cuK, null, totalQ, totalK, HQ, HKV, D, c.causal(),
                (float) (1 / Math.sqrt(D)), Problem.Features.NONE);
        float[] qa = q.tokens().toFloatArray(), ka = k.tokens().toFloatArray(), va = v.toFloatArray(), da = dout.toFloatArray();
        ReferenceAttention exact = ReferenceAttention.exact();
        ReferenceAttention plain = ReferenceAttention.plain(x -> Precision.round(x, dtype));
        ReferenceAttention.Forward fe = exact.forward(vl, qa, ka, va), fp = plain.forward(vl, qa, ka, va);
        List<String> report = new ArrayList<>();
        if (c.backward()) {
            Tensor dq = scope.track(Tensor.full(Float.NaN, dtype, CUDA0, totalQ, HQ, D));
            Tensor dk = scope.track(Tensor.full(Float.NaN, dtype, CUDA0, totalK, HKV, D));
            Tensor dv = scope.track(Tensor.full(Float.NaN, dtype, CUDA0, totalK, HKV, D));
            Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, options);
            ReferenceAttention.Gradients ge = exact.backward(vl, qa, ka, va, fe.out(), da);
            ReferenceAttention.Gradients gp = plain.backward(vl, qa, ka, va, fp.out(), da);
            report.add(Precision.check("dq", dq.toFloatArray(), ge.dq(), gp.dq(), dtype));
            report.add(Precision.check("dk", dk.toFloatArray(), ge.dk(), gp.dk(), dtype));
            report.add(Precision.check("dv", dv.toFloatArray(), ge.dv(), gp.dv(), dtype));
        } else {
            Tensor o = scope.track(Tensor.full(Float.NaN, dtype, CUDA0, totalQ, HQ, D));
            Tensor l = scope.track(Tensor.full(Float.NaN, FLOAT32, CUDA0, HQ, totalQ));
            Attention.forwardInto(q, k, v, o, l, options);
            ReferenceAttention.Forward f32 = ReferenceAttention.plain(x -> (float) x).forward(vl, qa, ka, va);
            report.add(Precision.check("out", o.toFloatArray(), fe.out(), fp.out(), dtype));
            report.add(Precision.check("lse", l.toFloatArray(), fe.lse(), f32.lse(), FLOAT32));
        }
        System.out.println(what + ": the good call afterwards: " + String.join(", ", report));
    }
}
