package io.github.flashattn4j.tests;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertTrue;

/** The float64 reference's analytic gradients agree with central finite differences of its forward. */
class ReferenceGradientCheckTest {

    private static final double STEP = 1e-3;

    @ParameterizedTest(name = "causal={0}")
    @ValueSource(booleans = {false, true})
    void analyticGradientsMatchFiniteDifferences(boolean causal) {
        Problem p = Problem.of(1, 5, 7, 2, 1, 8, causal);
        SplittableRandom random = new SplittableRandom(causal ? 7 : 8);
        float[] q = gaussian(random, 5 * 2 * 8), k = gaussian(random, 7 * 8), v = gaussian(random, 7 * 8);
        float[] g = gaussian(random, q.length);  // loss = sum(out ∘ g), so dL/dout = g
        ReferenceAttention ref = ReferenceAttention.exact();
        ReferenceAttention.Gradients grads = ref.backward(p, q, k, v, ref.forward(p, q, k, v).out(), g);

        assertClose("dq", grads.dq(), numeric(p, q, k, v, g, q));
        assertClose("dk", grads.dk(), numeric(p, q, k, v, g, k));
        assertClose("dv", grads.dv(), numeric(p, q, k, v, g, v));
    }

    /** Central differences of the loss with respect to every element of {@code target} (q, k or v). */
    private static double[] numeric(Problem p, float[] q, float[] k, float[] v, float[] g, float[] target) {
        double[] grad = new double[target.length];
        for (int i = 0; i < target.length; i++) {
            float saved = target[i];
            // Inputs are floats: divide by the step actually taken, not the one asked for.
            float plus = (float) (saved + STEP), minus = (float) (saved - STEP);
            target[i] = plus;
            double lossPlus = loss(p, q, k, v, g);
            target[i] = minus;
            double lossMinus = loss(p, q, k, v, g);
            target[i] = saved;
            grad[i] = (lossPlus - lossMinus) / ((double) plus - minus);
        }
        return grad;
    }

    private static double loss(Problem p, float[] q, float[] k, float[] v, float[] g) {
        double[] out = ReferenceAttention.exact().forward(p, q, k, v).out();
        double sum = 0;
        for (int j = 0; j < out.length; j++) sum += out[j] * g[j];
        return sum;
    }

    private static void assertClose(String name, double[] analytic, double[] numeric) {
        double num = 0, den = 0;
        for (int i = 0; i < analytic.length; i++) {
            num += (analytic[i] - numeric[i]) * (analytic[i] - numeric[i]);
            den += numeric[i] * numeric[i];
        }
        double relative = Math.sqrt(num / den);
        System.out.printf("reference gradient check %s: relative error %.2e%n", name, relative);
        assertTrue(relative < 1e-5, name + " relative error " + relative);
    }

    private static float[] gaussian(SplittableRandom random, int n) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) random.nextGaussian();
        return a;
    }
}
