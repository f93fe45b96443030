package io.github.flashattn4j.tests;

import io.github.flashattn4j.Cuda;
import io.github.flashattn4j.Device;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeEach;

import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Base of the tests that need a CUDA device: every test of a subclass is guarded by
 * {@code Assumptions.assumeTrue(Cuda.isAvailable(), ...)}, so without a GPU it is reported as skipped (with
 * the reason), never as passed; one line per class on standard output says why.
 */
abstract class GpuTest {

    /** The device every GPU test runs on. */
    static final Device CUDA0 = Device.cuda(0);

    private static final Set<Class<?>> REPORTED = ConcurrentHashMap.newKeySet();

    @BeforeEach
    void requireCudaDevice() {
        boolean available = Cuda.isAvailable();
        if (!available && REPORTED.add(getClass())) {
            System.out.println("SKIPPED " + getClass().getSimpleName() + ": " + whyNoGpu());
        }
        Assumptions.assumeTrue(available, GpuTest::whyNoGpu);
    }

    /** Why GPU tests cannot run here. */
    static String whyNoGpu() {
        return Cuda.isCompiled()
                ? "no usable CUDA device (no NVIDIA driver or no GPU): GPU tests skipped"
                : "the native library was built without its CUDA backend (no nvcc at build time): GPU tests skipped";
    }

    /** {@code n} standard-normal floats from a generator seeded with {@code seed}. */
    static float[] gaussian(long seed, int n) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] values = new float[n];
        for (int i = 0; i < n; i++) values[i] = (float) random.nextGaussian();
        return values;
    }

    /** Largest |a - b| (NaN if either holds a NaN where the other does not hold the same NaN bits). */
    static double maxDifference(float[] a, float[] b) {
        double max = 0;
        for (int i = 0; i < a.length; i++) {
            double e = Float.floatToIntBits(a[i]) == Float.floatToIntBits(b[i]) ? 0 : Math.abs((double) a[i] - b[i]);
            if (Double.isNaN(e)) return Double.NaN;
            max = Math.max(max, e);
        }
        return max;
    }

    /** Largest |x|, NaN if there is one. */
    static double maxAbs(float[] a) {
        double max = 0;
        for (float x : a) {
            if (Float.isNaN(x)) return Double.NaN;
            max = Math.max(max, Math.abs(x));
        }
        return max;
    }
}
