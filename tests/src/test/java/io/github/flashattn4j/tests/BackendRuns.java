package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.Cuda;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.KernelFamily;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;

import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
import java.util.function.UnaryOperator;

import static io.github.flashattn4j.DType.FLOAT32;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * One attention case run on one backend, forward then backward, under every kernel family that backend has,
 * and judged against the float64 reference by FlashAttention's rule ({@link Precision}); shared by the CPU
 * and the GPU variants of the feature and varlen tests, so that both backends run the same cases the same
 * way.
 *
 * <p>What a backend must run is the specification's, not the support query's: on CUDA every case in fp16 or
 * bf16 must run forward (head dims up to 256) and backward (head dims up to 128) with kernel family AUTO and
 * SM80, and with SM90 forward on a Hopper GPU; a refusal there fails the test with the refusal's message.
 * Only these may be refused, with {@link FlashAttnException.Unsupported}, a message, the support query
 * giving the same message, and caller-provided outputs left untouched: the backward above head dim 128, the
 * SM90 backward, and SM90 anywhere off Hopper (where it must be refused).
 */
final class BackendRuns {

    private BackendRuns() {}

    /** The calls of one case on fixed inputs: dense or varlen, on one device. */
    interface Calls {
        Device device();

        long headDim();

        /** NaN-filled out and lse of the forward's shapes, on the device. */
        Tensor[] poisonedForwardOutputs(TensorScope scope);

        /** NaN-filled dq, dk, dv of the backward's shapes, on the device. */
        Tensor[] poisonedGradients(TensorScope scope);

        Attention.Support checkForward(AttentionOptions o);

        AttentionOutput forward(AttentionOptions o);

        void forwardInto(AttentionOptions o, Tensor out, Tensor lse);

        Attention.Support checkBackward(AttentionOptions o, Tensor out, Tensor lse);

        AttentionGradients backward(AttentionOptions o, Tensor out, Tensor lse);

        void backwardInto(AttentionOptions o, Tensor out, Tensor lse, Tensor dq, Tensor dk, Tensor dv);

        /** The elements of a q-shaped result that the call defines (all, or the rows of the sequences). */
        default float[] definedQ(float[] qShaped) {
            return qShaped;
        }

        /** The elements of an lse result that the call defines. */
        default float[] definedLse(float[] lse) {
            return lse;
        }

        /** The elements of a k-shaped result that the call defines. */
        default float[] definedK(float[] kShaped) {
            return kShaped;
        }
    }

    /**
     * The float64 reference ({@code exact*}) and the plain same-dtype implementation ({@code plain*}; for lse
     * the float32 computation) of a case, restricted to the defined elements ({@link Calls#definedQ} etc.).
     */
    record Reference(double[] out, double[] lse, double[] dq, double[] dk, double[] dv,
                     double[] plainOut, double[] plainLse, double[] plainDq, double[] plainDk, double[] plainDv) {}

    /** What one family gave (defined elements only); null where the call was refused as allowed. */
    record Results(float[] out, float[] lse, float[] dq, float[] dk, float[] dv) {}

    /** What the specification requires of a call. */
    enum Expect {
        RUN, REFUSE, RUN_OR_REFUSE
    }

    private static volatile Boolean hopper;

    /** Whether cuda:0 is a Hopper GPU (compute capability 9.0), where the SM90 kernels run. */
    static boolean hopper() {
        Boolean h = hopper;
        if (h == null) {
            Cuda.DeviceProperties p = Cuda.properties(0);
            hopper = h = p.computeCapabilityMajor() == 9 && p.computeCapabilityMinor() == 0;
        }
        return h;
    }

    /** The kernel families a backend is tested with: AUTO on the CPU; AUTO, SM80 and SM90 on CUDA. */
    static List<KernelFamily> families(Device device) {
        return device.isCuda() ? List.of(KernelFamily.AUTO, KernelFamily.SM80, KernelFamily.SM90) : List.of(KernelFamily.AUTO);
    }

    static Expect forwardExpectation(Device device, KernelFamily family) {
        return device.isCuda() && family == KernelFamily.SM90 && !hopper() ? Expect.REFUSE : Expect.RUN;
    }

    static Expect backwardExpectation(Device device, KernelFamily family, long headDim) {
        if (!device.isCuda()) return Expect.RUN;
        if (family == KernelFamily.SM90) return hopper() ? Expect.RUN_OR_REFUSE : Expect.REFUSE;
        return headDim > 128 ? Expect.RUN_OR_REFUSE : Expect.RUN;
    }

    /**
     * Runs {@code call} as {@code expect} demands: returns its result, or null when it was refused as
     * allowed (then the refusal is {@link FlashAttnException.Unsupported} with a message, the support query
     * said the same, and the {@code untouched} tensors still hold only NaN).
     */
    static <T> T attempt(String what, Expect expect, Attention.Support query, Supplier<T> call, Tensor... untouched) {
        T result;
        try {
            result = call.get();
        } catch (FlashAttnException e) {
            if (expect == Expect.RUN) {
                throw new AssertionError(what + ": the specification requires this call, but it was refused ("
                        + e.status() + "): " + e.getMessage(), e);
            }
            if (!(e instanceof FlashAttnException.Unsupported)) {
                throw new AssertionError(what + ": a refusal must be FlashAttnException.Unsupported, got " + e.status() + ": "
                        + e.getMessage(), e);
            }
            assertFalse(e.getMessage() == null || e.getMessage().isBlank(), what + ": a refusal needs a message");
            assertEquals(e.getMessage(), query.reason(), what + ": the support query must give the call's message");
            for (Tensor t : untouched) {
                for (float x : t.toFloatArray()) assertTrue(Float.isNaN(x), () -> what + ": a refused call wrote into its outputs");
            }
            System.out.println(what + ": refused, as allowed: " + e.getMessage());
            return null;
        }
        if (expect == Expect.REFUSE) fail(what + ": must be refused (FlashAttnException.Unsupported), but it ran");
        assertTrue(query.supported(), () -> what + ": the call ran, but the support query refuses it: " + query.reason());
        return result;
    }

    /**
     * The forward and backward of {@code calls} under every family of its device, caller-provided
     * (NaN-poisoned) or allocated outputs, each with the forward outputs of its own family (the AUTO ones
     * where that family's forward was refused). AUTO runs first.
     */
    static Map<KernelFamily, Results> run(String what, TensorScope scope, Calls calls, AttentionOptions base, boolean allocating) {
        Map<KernelFamily, Results> results = new EnumMap<>(KernelFamily.class);
        Device device = calls.device();
        Tensor autoOut = null, autoLse = null;
        for (KernelFamily family : families(device)) {
            AttentionOptions o = base.toBuilder().kernelFamily(family).build();
            String label = what + " [" + device + " " + family + "]";
            Tensor[] fwd;
            if (allocating) {
                fwd = attempt(label + " forward", forwardExpectation(device, family), calls.checkForward(o), () -> {
                    AttentionOutput f = scope.track(calls.forward(o));
                    return new Tensor[] {f.out(), f.lse()};
                });
            } else {
                Tensor[] poisoned = calls.poisonedForwardOutputs(scope);
                fwd = attempt(label + " forward", forwardExpectation(device, family), calls.checkForward(o), () -> {
                    calls.forwardInto(o, poisoned[0], poisoned[1]);
                    return poisoned;
                }, poisoned);
            }
            if (family == KernelFamily.AUTO) {
                autoOut = fwd[0];
                autoLse = fwd[1];
            }
            Tensor out = fwd != null ? fwd[0] : autoOut, lse = fwd != null ? fwd[1] : autoLse;
            Expect backward = backwardExpectation(device, family, calls.headDim());
            Attention.Support query = calls.checkBackward(o, out, lse);
            Tensor[] grads;
            if (allocating) {
                grads = attempt(label + " backward", backward, query, () -> {
                    AttentionGradients g = scope.track(calls.backward(o, out, lse));
                    return new Tensor[] {g.dq(), g.dk(), g.dv()};
                });
            } else {
                Tensor[] poisoned = calls.poisonedGradients(scope);
                grads = attempt(label + " backward", backward, query, () -> {
                    calls.backwardInto(o, out, lse, poisoned[0], poisoned[1], poisoned[2]);
                    return poisoned;
                }, poisoned);
            }
            results.put(family, new Results(
                    fwd == null ? null : calls.definedQ(fwd[0].toFloatArray()),
                    fwd == null ? null : calls.definedLse(fwd[1].toFloatArray()),
                    grads == null ? null : calls.definedQ(grads[0].toFloatArray()),
                    grads == null ? null : calls.definedK(grads[1].toFloatArray()),
                    grads == null ? null : calls.definedK(grads[2].toFloatArray())));
        }
        return results;
    }

    /** Checks each family's results against the reference; returns one report line per family. */
    static List<String> judge(String what, DType dtype, Reference r, Map<KernelFamily, Results> results) {
        List<String> lines = new ArrayList<>();
        for (Map.Entry<KernelFamily, Results> e : results.entrySet()) {
            Results x = e.getValue();
            List<String> report = new ArrayList<>();
            String label = what + " [" + e.getKey() + "]";
            try {
                if (x.out() != null) {
                    report.add(Precision.check("out", x.out(), r.out(), r.plainOut(), dtype));
                    report.add(Precision.check("lse", x.lse(), r.lse(), r.plainLse(), FLOAT32));
                }
                if (x.dq() != null) {
                    report.add(Precision.check("dq", x.dq(), r.dq(), r.plainDq(), dtype));
                    report.add(Precision.check("dk", x.dk(), r.dk(), r.plainDk(), dtype));
                    report.add(Precision.check("dv", x.dv(), r.dv(), r.plainDv(), dtype));
                }
            } catch (AssertionError failure) {
                throw new AssertionError(label + ": " + failure.getMessage(), failure);
            }
            lines.add(e.getKey() + ": " + String.join(", ", report));
        }
        return lines;
    }

    /**
     * Each GPU family's results against the CPU backend's on the same inputs: both are within their bound of
     * the float64 reference, so they must agree within the sum of both bounds. Returns the differences.
     */
    static String agree(String what, DType dtype, Reference r, Map<KernelFamily, Results> gpu, Results cpu) {
        List<String> report = new ArrayList<>();
        for (Map.Entry<KernelFamily, Results> e : gpu.entrySet()) {
            Results x = e.getValue();
            List<String> parts = new ArrayList<>();
            compare(what, e.getKey(), "out", x.out(), cpu.out(), r.out(), r.plainOut(), dtype, parts);
            compare(what, e.getKey(), "lse", x.lse(), cpu.lse(), r.lse(), r.plainLse(), FLOAT32, parts);
            compare(what, e.getKey(), "dq", x.dq(), cpu.dq(), r.dq(), r.plainDq(), dtype, parts);
            compare(what, e.getKey(), "dk", x.dk(), cpu.dk(), r.dk(), r.plainDk(), dtype, parts);
            compare(what, e.getKey(), "dv", x.dv(), cpu.dv(), r.dv(), r.plainDv(), dtype, parts);
            report.add(e.getKey() + " " + String.join(" ", parts));
        }
        return "|cuda - cpu|: " + String.join("; ", report);
    }

    private static void compare(String what, KernelFamily family, String name, float[] gpu, float[] cpu, double[] exact,
                                double[] plain, DType dtype, List<String> parts) {
        if (gpu == null || cpu == null) return;
        double bound = 2 * (2 * Precision.maxError(plain, exact) + Precision.epsilon(exact, dtype));
        double difference = GpuTest.maxDifference(gpu, cpu);
        assertTrue(difference <= bound, () -> what + " [" + family + "] " + name + ": max |cuda - cpu| = " + difference
                + " exceeds the sum of both bounds " + bound);
        parts.add(String.format("%s %.2e", name, difference));
    }

    /** The first {@code n} elements. */
    static float[] prefix(float[] a, int n) {
        return java.util.Arrays.copyOf(a, n);
    }

    static double[] prefix(double[] a, int n) {
        return java.util.Arrays.copyOf(a, n);
    }

    static double[] toDouble(float[] a) {
        double[] d = new double[a.length];
        for (int i = 0; i < a.length; i++) d[i] = a[i];
        return d;
    }

    static float[] toFloat(double[] a) {
        float[] f = new float[a.length];
        for (int i = 0; i < a.length; i++) f[i] = (float) a[i];
        return f;
    }

    /** {@code op} applied to a float array through double (for projections written on double arrays). */
    static float[] viaDouble(float[] a, UnaryOperator<double[]> op) {
        return toFloat(op.apply(toDouble(a)));
    }
}
