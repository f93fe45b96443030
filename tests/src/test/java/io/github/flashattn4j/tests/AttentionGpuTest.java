package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.CudaStream;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

import static io.github.flashattn4j.DType.BFLOAT16;
import static io.github.flashattn4j.DType.FLOAT16;
import static io.github.flashattn4j.DType.FLOAT32;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Attention forward and backward on cuda:0 against the float64 reference, with FlashAttention's tolerance
 * rule (error(kernel vs fp64) ≤ 2 · error(plain vs fp64) + ε; NaN never passes), outputs poisoned with NaN
 * before every run, and against the CPU backend on the same inputs. bfloat16 and float16; head dims 64 and
 * 128; ragged lengths 17, 333, 1000; causal with seqlen_q ≠ seqlen_k both ways (rows that attend nothing
 * included); GQA group sizes 1, 2 and 8; contiguous, packed-QKV and head-major layouts; the allocating API;
 * and the stream overloads.
 */
class AttentionGpuTest extends GpuTest {

    /** How the tensors are laid out and which entry points run. */
    enum Layout {
        /** Each its own contiguous [B, N, H, D] tensor; forwardInto/backwardInto on the default stream. */
        CONTIGUOUS,
        /** Views of one [B, N, Hq + 2·Hkv, D] tensor, as a fused QKV projection makes them (needs Nq = Nk). */
        PACKED_QKV,
        /** [B, H, N, D] tensors transposed to [B, N, H, D], inputs and outputs. */
        HEAD_MAJOR,
        /** Outputs allocated by the library (forward/backward without "Into"), default stream. */
        ALLOCATED,
        /** The overloads taking a CudaStream: forward allocating, backwardInto; results read on the stream. */
        STREAM
    }

    record Case(DType dtype, Problem problem, Layout layout) {
        @Override
        public String toString() {
            return dtype + " " + problem + " " + layout;
        }
    }

    static Stream<Case> cases() {
        List<Case> cases = new ArrayList<>();
        // Ragged lengths, both head dims, both dtypes, GQA 1/2/8, causal or not.
        cases.add(new Case(BFLOAT16, Problem.of(1, 17, 17, 2, 2, 64, false), Layout.CONTIGUOUS));
        cases.add(new Case(FLOAT16, Problem.of(1, 17, 17, 4, 2, 128, true), Layout.CONTIGUOUS));
        cases.add(new Case(FLOAT16, Problem.of(1, 333, 333, 4, 2, 64, false), Layout.CONTIGUOUS));
        cases.add(new Case(BFLOAT16, Problem.of(2, 333, 333, 8, 1, 128, true), Layout.CONTIGUOUS));
        cases.add(new Case(BFLOAT16, Problem.of(1, 1000, 1000, 2, 1, 64, true), Layout.CONTIGUOUS));
        cases.add(new Case(FLOAT16, Problem.of(1, 1000, 1000, 2, 2, 128, false), Layout.CONTIGUOUS));
        // Causal with seqlen_q != seqlen_k: Nq < Nk, and Nq > Nk (the first Nq - Nk rows attend nothing).
        cases.add(new Case(BFLOAT16, Problem.of(2, 17, 333, 8, 1, 64, true), Layout.CONTIGUOUS));
        cases.add(new Case(FLOAT16, Problem.of(1, 333, 17, 4, 2, 128, true), Layout.CONTIGUOUS));
        cases.add(new Case(FLOAT16, Problem.of(1, 333, 1000, 8, 1, 64, true), Layout.CONTIGUOUS));
        cases.add(new Case(BFLOAT16, Problem.of(1, 1000, 333, 4, 2, 128, true), Layout.CONTIGUOUS));
        // Strided layouts.
        cases.add(new Case(BFLOAT16, Problem.of(2, 333, 333, 8, 2, 64, true), Layout.PACKED_QKV));
        cases.add(new Case(FLOAT16, Problem.of(1, 333, 333, 4, 2, 128, false), Layout.HEAD_MAJOR));
        cases.add(new Case(BFLOAT16, Problem.of(2, 17, 1000, 8, 2, 64, true), Layout.HEAD_MAJOR));
        // The allocating API and the stream overloads.
        cases.add(new Case(BFLOAT16, Problem.of(1, 100, 160, 8, 8, 64, true), Layout.ALLOCATED));
        cases.add(new Case(FLOAT16, Problem.of(2, 333, 1000, 4, 2, 64, true), Layout.STREAM));
        cases.add(new Case(BFLOAT16, Problem.of(1, 17, 1000, 2, 1, 128, false), Layout.STREAM));
        return cases.stream();
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void matchesFloat64ReferenceAndTheCpuBackend(Case c) {
        Problem p = c.problem();
        DType dtype = c.dtype();
        AttentionOptions options = AttentionOptions.builder().causal(p.causal()).softmaxScale((float) p.scale()).build();
        long seed = 7000L * p.seqQ() + 37L * p.seqK() + p.headDim() + c.layout().ordinal();
        try (TensorScope scope = TensorScope.open();
             CudaStream stream = c.layout() == Layout.STREAM ? CudaStream.create(CUDA0) : null) {
            Tensor[] qkv = inputs(scope, c, seed);
            Tensor q = qkv[0], k = qkv[1], v = qkv[2];
            Tensor dout = scope.randn(dtype, CUDA0, seed + 3, p.qShape());
            Tensor out, lse, dq, dk, dv;
            switch (c.layout()) {
                case ALLOCATED -> {
                    AttentionOutput o = scope.track(Attention.forward(q, k, v, options));
                    out = o.out();
                    lse = o.lse();
                    AttentionGradients g = scope.track(Attention.backward(dout, q, k, v, out, lse, options));
                    dq = g.dq();
                    dk = g.dk();
                    dv = g.dv();
                }
                case STREAM -> {
                    AttentionOutput o = scope.track(Attention.forward(q, k, v, options, stream));
                    out = o.out();
                    lse = o.lse();
                    Tensor[] grads = poisonedOutputs(scope, c);
                    dq = grads[1];
                    dk = grads[2];
                    dv = grads[3];
                    Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, options, stream);
                }
                default -> {
                    Tensor[] outputs = poisonedOutputs(scope, c);
                    out = outputs[0];
                    lse = scope.track(Tensor.full(Float.NaN, FLOAT32, CUDA0, p.lseShape()));
                    dq = outputs[1];
                    dk = outputs[2];
                    dv = outputs[3];
                    Attention.forwardInto(q, k, v, out, lse, options);
                    Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, options);
                }
            }
            // Results of stream work are read on the stream; the others on the default stream, after the work.
            float[][] gpu = stream != null
                    ? new float[][] {out.toFloatArray(stream), lse.toFloatArray(stream), dq.toFloatArray(stream),
                                     dk.toFloatArray(stream), dv.toFloatArray(stream)}
                    : new float[][] {out.toFloatArray(), lse.toFloatArray(), dq.toFloatArray(), dk.toFloatArray(),
                                     dv.toFloatArray()};

            float[] qa = q.toFloatArray(), ka = k.toFloatArray(), va = v.toFloatArray(), da = dout.toFloatArray();
            ReferenceAttention exact = ReferenceAttention.exact();
            ReferenceAttention plain = ReferenceAttention.plain(x -> Precision.round(x, dtype));
            ReferenceAttention.Forward fe = exact.forward(p, qa, ka, va), fp = plain.forward(p, qa, ka, va);
            ReferenceAttention.Forward f32 = ReferenceAttention.plain(x -> (float) x).forward(p, qa, ka, va);
            ReferenceAttention.Gradients ge = exact.backward(p, qa, ka, va, fe.out(), da);
            ReferenceAttention.Gradients gp = plain.backward(p, qa, ka, va, fp.out(), da);

            List<String> report = new ArrayList<>();
            report.add(Precision.check("out", gpu[0], fe.out(), fp.out(), dtype));
            // lse is float32 whatever the dtype: its plain baseline is the float32 computation.
            report.add(Precision.check("lse", gpu[1], fe.lse(), f32.lse(), FLOAT32));
            report.add(Precision.check("dq", gpu[2], ge.dq(), gp.dq(), dtype));
            report.add(Precision.check("dk", gpu[3], ge.dk(), gp.dk(), dtype));
            report.add(Precision.check("dv", gpu[4], ge.dv(), gp.dv(), dtype));

            // The CPU backend on the same (already rounded) inputs: each backend is within its bound of fp64,
            // so they must agree within the sum of both bounds; the report shows how close they really are.
            float[][] cpu = cpuBackend(scope, p, dtype, options, qa, ka, va, da);
            double[][] exacts = {fe.out(), fe.lse(), ge.dq(), ge.dk(), ge.dv()};
            double[][] plains = {fp.out(), f32.lse(), gp.dq(), gp.dk(), gp.dv()};
            String[] names = {"out", "lse", "dq", "dk", "dv"};
            List<String> agreement = new ArrayList<>();
            for (int i = 0; i < names.length; i++) {
                DType t = i == 1 ? FLOAT32 : dtype;
                double bound = 2 * (2 * Precision.maxError(plains[i], exacts[i]) + Precision.epsilon(exacts[i], t));
                double difference = maxDifference(gpu[i], cpu[i]);
                String name = names[i];
                assertTrue(difference <= bound, () -> name + ": max |cuda - cpu| = " + difference + " exceeds " + bound);
                agreement.add(String.format("%s %.3e", name, difference));
            }
            System.out.println("cuda attention " + c + ": " + String.join(", ", report) + "; |cuda - cpu|: "
                    + String.join(", ", agreement));
        }
    }

    /** out, lse, dq, dk, dv from the CPU backend for the given host inputs. */
    private static float[][] cpuBackend(TensorScope scope, Problem p, DType dtype, AttentionOptions options, float[] q,
                                        float[] k, float[] v, float[] dout) {
        Tensor hq = scope.fromArray(q, dtype, Device.CPU, p.qShape());
        Tensor hk = scope.fromArray(k, dtype, Device.CPU, p.kShape());
        Tensor hv = scope.fromArray(v, dtype, Device.CPU, p.kShape());
        Tensor hd = scope.fromArray(dout, dtype, Device.CPU, p.qShape());
        AttentionOutput o = scope.track(Attention.forward(hq, hk, hv, options));
        AttentionGradients g = scope.track(Attention.backward(hd, hq, hk, hv, o.out(), o.lse(), options));
        return new float[][] {o.out().toFloatArray(), o.lse().toFloatArray(), g.dq().toFloatArray(),
                              g.dk().toFloatArray(), g.dv().toFloatArray()};
    }

    /** Fresh random q, k, v on cuda:0 in the case's layout. */
    private static Tensor[] inputs(TensorScope scope, Case c, long seed) {
        Problem p = c.problem();
        DType dtype = c.dtype();
        switch (c.layout()) {
            case PACKED_QKV -> {
                int heads = p.headsQ() + 2 * p.headsKv();
                Tensor packed = scope.randn(dtype, CUDA0, seed, p.batch(), p.seqQ(), heads, p.headDim());
                return new Tensor[] {
                    scope.track(packed.slice(2, 0, p.headsQ())),
                    scope.track(packed.slice(2, p.headsQ(), p.headsQ() + p.headsKv())),
                    scope.track(packed.slice(2, p.headsQ() + p.headsKv(), heads))};
            }
            case HEAD_MAJOR -> {
                return new Tensor[] {
                    scope.track(scope.randn(dtype, CUDA0, seed, p.batch(), p.headsQ(), p.seqQ(), p.headDim()).transpose(1, 2)),
                    scope.track(scope.randn(dtype, CUDA0, seed + 1, p.batch(), p.headsKv(), p.seqK(), p.headDim()).transpose(1, 2)),
                    scope.track(scope.randn(dtype, CUDA0, seed + 2, p.batch(), p.headsKv(), p.seqK(), p.headDim()).transpose(1, 2))};
            }
            default -> {
                return new Tensor[] {
                    scope.randn(dtype, CUDA0, seed, p.qShape()),
                    scope.randn(dtype, CUDA0, seed + 1, p.kShape()),
                    scope.randn(dtype, CUDA0, seed + 2, p.kShape())};
            }
        }
    }

    /** NaN-filled out, dq, dk, dv on cuda:0 in the case's layout (packed/head-major mirror the inputs). */
    private static Tensor[] poisonedOutputs(TensorScope scope, Case c) {
        Problem p = c.problem();
        DType dtype = c.dtype();
        switch (c.layout()) {
            case PACKED_QKV -> {
                int heads = p.headsQ() + 2 * p.headsKv();
                Tensor packed = scope.track(Tensor.full(Float.NaN, dtype, CUDA0, p.batch(), p.seqQ(), heads, p.headDim()));
                return new Tensor[] {scope.track(Tensor.full(Float.NaN, dtype, CUDA0, p.qShape())),
                    scope.track(packed.slice(2, 0, p.headsQ())),
                    scope.track(packed.slice(2, p.headsQ(), p.headsQ() + p.headsKv())),
                    scope.track(packed.slice(2, p.headsQ() + p.headsKv(), heads))};
            }
            case HEAD_MAJOR -> {
                return new Tensor[] {
                    headMajorNaN(scope, dtype, p.batch(), p.headsQ(), p.seqQ(), p.headDim()),
                    headMajorNaN(scope, dtype, p.batch(), p.headsQ(), p.seqQ(), p.headDim()),
                    headMajorNaN(scope, dtype, p.batch(), p.headsKv(), p.seqK(), p.headDim()),
                    headMajorNaN(scope, dtype, p.batch(), p.headsKv(), p.seqK(), p.headDim())};
            }
            default -> {
                return new Tensor[] {
                    scope.track(Tensor.full(Float.NaN, dtype, CUDA0, p.qShape())),
                    scope.track(Tensor.full(Float.NaN, dtype, CUDA0, p.qShape())),
                    scope.track(Tensor.full(Float.NaN, dtype, CUDA0, p.kShape())),
                    scope.track(Tensor.full(Float.NaN, dtype, CUDA0, p.kShape()))};
            }
        }
    }

    private static Tensor headMajorNaN(TensorScope scope, DType dtype, int batch, int heads, int seq, int headDim) {
        return scope.track(scope.track(Tensor.full(Float.NaN, dtype, CUDA0, batch, heads, seq, headDim)).transpose(1, 2));
    }
}
