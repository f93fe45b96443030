package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
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

/**
 * Attention forward and backward on the CPU backend against the float64 reference, with FlashAttention's
 * tolerance rule, fresh random inputs, NaN-poisoned outputs, ragged sizes, causal (also with
 * seqlen_q ≠ seqlen_k, so some rows attend nothing), GQA, all dtypes and strided layouts.
 */
class AttentionCpuTest {

    /** How q, k, v (and the outputs) are laid out in memory. */
    enum Layout {
        /** Each its own contiguous [B, N, H, D] tensor. */
        CONTIGUOUS,
        /** Views of one [B, N, Hq + 2·Hkv, D] tensor, as a fused QKV projection makes them (needs Nq = Nk). */
        PACKED_QKV,
        /** [B, H, N, D] tensors transposed to [B, N, H, D]: head-major strides. */
        HEAD_MAJOR,
        /** Outputs allocated by the library (forward/backward without "Into"). */
        ALLOCATED
    }

    record Case(DType dtype, Problem problem, Layout layout) {
        @Override
        public String toString() {
            return dtype + " " + problem + " " + layout;
        }
    }

    static Stream<Case> cases() {
        List<Case> cases = new ArrayList<>();
        // Ragged sequence lengths, each head dim, non-causal and causal.
        int[] lengths = {1, 17, 128, 333};
        int[] dims = {32, 64, 128};
        DType[] dtypes = {FLOAT32, FLOAT16, BFLOAT16};
        for (int i = 0; i < lengths.length; i++) {
            for (int j = 0; j < dims.length; j++) {
                DType dtype = dtypes[(i + j) % 3];
                int n = lengths[i];
                cases.add(new Case(dtype, Problem.of(1, n, n, 2, 1, dims[j], (i + j) % 2 == 0), Layout.CONTIGUOUS));
            }
        }
        // GQA ratios 1, 2, 8; seqlen_q != seqlen_k both ways under causal masking (empty rows when Nq > Nk).
        cases.add(new Case(BFLOAT16, Problem.of(2, 17, 128, 8, 8, 64, true), Layout.CONTIGUOUS));
        cases.add(new Case(FLOAT16, Problem.of(2, 128, 17, 8, 4, 64, true), Layout.CONTIGUOUS));
        cases.add(new Case(FLOAT32, Problem.of(1, 333, 128, 8, 1, 32, true), Layout.CONTIGUOUS));
        cases.add(new Case(BFLOAT16, Problem.of(1, 128, 333, 16, 2, 128, true), Layout.CONTIGUOUS));
        cases.add(new Case(FLOAT16, Problem.of(1, 200, 333, 8, 1, 64, false), Layout.CONTIGUOUS));
        cases.add(new Case(FLOAT32, Problem.of(3, 65, 1, 2, 2, 32, true), Layout.CONTIGUOUS));
        cases.add(new Case(BFLOAT16, Problem.of(2, 1, 333, 8, 2, 64, true), Layout.CONTIGUOUS));
        // Strided layouts.
        cases.add(new Case(BFLOAT16, Problem.of(2, 128, 128, 8, 2, 64, true), Layout.PACKED_QKV));
        cases.add(new Case(FLOAT32, Problem.of(1, 333, 333, 4, 4, 32, false), Layout.PACKED_QKV));
        cases.add(new Case(FLOAT16, Problem.of(2, 17, 128, 8, 2, 128, true), Layout.HEAD_MAJOR));
        cases.add(new Case(FLOAT32, Problem.of(1, 128, 65, 2, 1, 64, false), Layout.HEAD_MAJOR));
        // The allocating API.
        cases.add(new Case(BFLOAT16, Problem.of(1, 100, 160, 8, 8, 64, true), Layout.ALLOCATED));
        cases.add(new Case(FLOAT32, Problem.of(2, 33, 33, 2, 1, 128, false), Layout.ALLOCATED));
        return cases.stream();
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void matchesFloat64Reference(Case c) {
        Problem p = c.problem();
        DType dtype = c.dtype();
        AttentionOptions options = AttentionOptions.builder().causal(p.causal()).softmaxScale((float) p.scale()).build();
        long seed = 1000L * p.seqQ() + 31L * p.seqK() + p.headDim() + c.layout().ordinal();
        try (TensorScope scope = TensorScope.open()) {
            Tensor[] qkv = inputs(scope, c, seed);
            Tensor q = qkv[0], k = qkv[1], v = qkv[2];
            Tensor dout = scope.randn(dtype, Device.CPU, seed + 3, p.qShape());
            Tensor out, lse, dq, dk, dv;
            if (c.layout() == Layout.ALLOCATED) {
                AttentionOutput o = scope.track(Attention.forward(q, k, v, options));
                out = o.out();
                lse = o.lse();
                AttentionGradients g = scope.track(Attention.backward(dout, q, k, v, out, lse, options));
                dq = g.dq();
                dk = g.dk();
                dv = g.dv();
            } else {
                Tensor[] outputs = outputs(scope, c);
                out = outputs[0];
                lse = scope.track(Tensor.full(Float.NaN, FLOAT32, Device.CPU, p.lseShape()));
                dq = outputs[1];
                dk = outputs[2];
                dv = outputs[3];
                Attention.forwardInto(q, k, v, out, lse, options);
                Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, options);
            }

            float[] qa = q.toFloatArray(), ka = k.toFloatArray(), va = v.toFloatArray(), da = dout.toFloatArray();
            ReferenceAttention exact = ReferenceAttention.exact();
            ReferenceAttention plain = ReferenceAttention.plain(x -> Precision.round(x, dtype));
            ReferenceAttention.Forward fe = exact.forward(p, qa, ka, va), fp = plain.forward(p, qa, ka, va);
            ReferenceAttention.Gradients ge = exact.backward(p, qa, ka, va, fe.out(), da);
            ReferenceAttention.Gradients gp = plain.backward(p, qa, ka, va, fp.out(), da);

            List<String> report = new ArrayList<>();
            report.add(Precision.check("out", out.toFloatArray(), fe.out(), fp.out(), dtype));
            // lse is float32 whatever the dtype: its plain baseline is the float32 computation.
            ReferenceAttention.Forward f32 = ReferenceAttention.plain(x -> (float) x).forward(p, qa, ka, va);
            report.add(Precision.check("lse", lse.toFloatArray(), fe.lse(), f32.lse(), FLOAT32));
            report.add(Precision.check("dq", dq.toFloatArray(), ge.dq(), gp.dq(), dtype));
            report.add(Precision.check("dk", dk.toFloatArray(), ge.dk(), gp.dk(), dtype));
            report.add(Precision.check("dv", dv.toFloatArray(), ge.dv(), gp.dv(), dtype));
            System.out.println("cpu attention " + c + ": " + String.join(", ", report));
        }
    }

    /** Fresh random q, k, v in the case's layout. */
    private static Tensor[] inputs(TensorScope scope, Case c, long seed) {
        Problem p = c.problem();
        DType dtype = c.dtype();
        switch (c.layout()) {
            case PACKED_QKV -> {
                int heads = p.headsQ() + 2 * p.headsKv();
                Tensor packed = scope.randn(dtype, Device.CPU, seed, p.batch(), p.seqQ(), heads, p.headDim());
                return new Tensor[] {
                    scope.track(packed.slice(2, 0, p.headsQ())),
                    scope.track(packed.slice(2, p.headsQ(), p.headsQ() + p.headsKv())),
                    scope.track(packed.slice(2, p.headsQ() + p.headsKv(), heads))};
            }
            case HEAD_MAJOR -> {
                return new Tensor[] {
                    scope.track(scope.randn(dtype, Device.CPU, seed, p.batch(), p.headsQ(), p.seqQ(), p.headDim()).transpose(1, 2)),
                    scope.track(scope.randn(dtype, Device.CPU, seed + 1, p.batch(), p.headsKv(), p.seqK(), p.headDim()).transpose(1, 2)),
                    scope.track(scope.randn(dtype, Device.CPU, seed + 2, p.batch(), p.headsKv(), p.seqK(), p.headDim()).transpose(1, 2))};
            }
            default -> {
                return new Tensor[] {
                    scope.randn(dtype, Device.CPU, seed, p.qShape()),
                    scope.randn(dtype, Device.CPU, seed + 1, p.kShape()),
                    scope.randn(dtype, Device.CPU, seed + 2, p.kShape())};
            }
        }
    }

    /** NaN-filled out, dq, dk, dv in the case's layout (packed gradients mirror packed inputs). */
    private static Tensor[] outputs(TensorScope scope, Case c) {
        Problem p = c.problem();
        DType dtype = c.dtype();
        Tensor out = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, p.qShape()));
        if (c.layout() == Layout.PACKED_QKV) {
            int heads = p.headsQ() + 2 * p.headsKv();
            Tensor packed = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, p.batch(), p.seqQ(), heads, p.headDim()));
            return new Tensor[] {out,
                scope.track(packed.slice(2, 0, p.headsQ())),
                scope.track(packed.slice(2, p.headsQ(), p.headsQ() + p.headsKv())),
                scope.track(packed.slice(2, p.headsQ() + p.headsKv(), heads))};
        }
        return new Tensor[] {out,
            scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, p.qShape())),
            scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, p.kShape())),
            scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, p.kShape()))};
    }
}
