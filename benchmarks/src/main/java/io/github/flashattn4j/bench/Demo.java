package io.github.flashattn4j.bench;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.Cuda;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;

import java.util.Locale;

/**
 * Runs causal GQA attention forward and backward in bfloat16 on the best available device and checks
 * out, dq, dk and dv against a float64 reference with FlashAttention's rule: error ≤ 2 × (error of a
 * plain bfloat16 implementation) + 1e-3. Exits with status 1 if any check fails.
 */
public final class Demo {

    private static final DType DTYPE = DType.BFLOAT16;
    private static final double EPSILON = 1e-3;

    private Demo() {}

    public static void main(String[] args) {
        DemoReference.Problem p = new DemoReference.Problem(2, 200, 256, 8, 2, 64, true, 1 / Math.sqrt(64));
        Device device = Device.best();
        System.out.println("flashattn4j demo");
        System.out.println("  device:  " + describe(device));
        System.out.printf(Locale.ROOT, "  problem: batch %d, seqlen_q %d, seqlen_k %d, heads %d/%d (GQA), head_dim %d, %s, causal%n",
                p.batch(), p.seqQ(), p.seqK(), p.headsQ(), p.headsKv(), p.headDim(), DTYPE);
        boolean ok;
        try {
            ok = run(p, device);
        } catch (FlashAttnException.Unsupported e) {
            System.out.println("  " + device + " cannot run this yet (" + e.getMessage() + "); using the CPU backend");
            ok = run(p, Device.CPU);
        }
        System.out.println(ok ? "demo: PASS" : "demo: FAIL");
        if (!ok) System.exit(1);
    }

    private static boolean run(DemoReference.Problem p, Device device) {
        AttentionOptions options = AttentionOptions.builder().causal(p.causal()).build();
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DTYPE, device, 11, p.batch(), p.seqQ(), p.headsQ(), p.headDim());
            Tensor k = scope.randn(DTYPE, device, 12, p.batch(), p.seqK(), p.headsKv(), p.headDim());
            Tensor v = scope.randn(DTYPE, device, 13, p.batch(), p.seqK(), p.headsKv(), p.headDim());
            Tensor dout = scope.randn(DTYPE, device, 14, p.batch(), p.seqQ(), p.headsQ(), p.headDim());

            long t0 = System.nanoTime();
            AttentionOutput fwd = scope.track(Attention.forward(q, k, v, options));
            long t1 = System.nanoTime();
            AttentionGradients grads = scope.track(Attention.backward(dout, q, k, v, fwd.out(), fwd.lse(), options));
            long t2 = System.nanoTime();
            System.out.printf(Locale.ROOT, "  on %s: forward %.2f ms, backward %.2f ms (first calls, including warm-up)%n",
                    device, (t1 - t0) / 1e6, (t2 - t1) / 1e6);

            float[] qa = q.toFloatArray(), ka = k.toFloatArray(), va = v.toFloatArray(), da = dout.toFloatArray();
            DemoReference.Result exact = new DemoReference(p, true, x -> x).run(qa, ka, va, da);
            DemoReference.Result plain = new DemoReference(p, false, Demo::roundToBf16).run(qa, ka, va, da);
            boolean ok = check("out", fwd.out().toFloatArray(), exact.out(), plain.out());
            ok &= check("dq", grads.dq().toFloatArray(), exact.dq(), plain.dq());
            ok &= check("dk", grads.dk().toFloatArray(), exact.dk(), plain.dk());
            ok &= check("dv", grads.dv().toFloatArray(), exact.dv(), plain.dv());
            return ok;
        }
    }

    private static boolean check(String name, float[] actual, double[] exact, double[] plain) {
        double error = DemoReference.maxError(actual, exact);
        double bound = 2 * DemoReference.maxError(plain, exact) + EPSILON;
        boolean ok = error <= bound;  // false for NaN
        System.out.printf(Locale.ROOT, "  %-3s max |flashattn4j - fp64| = %.3e   bound 2 x plain-%s error + %.0e = %.3e   %s%n",
                name, error, DTYPE.name().toLowerCase(Locale.ROOT), EPSILON, bound, ok ? "ok" : "FAIL");
        return ok;
    }

    private static double roundToBf16(double x) {
        int bits = Float.floatToRawIntBits((float) x);
        bits += 0x7fff + ((bits >>> 16) & 1);
        return Float.intBitsToFloat(bits & 0xffff0000);
    }

    private static String describe(Device device) {
        if (!device.isCuda()) return "cpu (" + Runtime.getRuntime().availableProcessors() + " hardware threads; no CUDA device found)";
        Cuda.DeviceProperties props = Cuda.properties(device.index());
        return device + " (" + props.name() + ", sm_" + props.computeCapabilityMajor() + props.computeCapabilityMinor() + ")";
    }
}
