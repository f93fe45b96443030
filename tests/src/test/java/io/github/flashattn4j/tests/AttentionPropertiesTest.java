package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionGradients;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.CudaStream;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.Example;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.Tuple;

import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Property-based tests of attention through the public Java API on the CPU: random problem sizes, dtypes,
 * options (causal, explicit or default scale, GQA; sliding windows, softcap and ALiBi) and memory layouts (views made by slice, select and
 * transpose of larger tensors) match the float64 reference under FlashAttention's tolerance rule; random
 * faults injected into valid calls give the exception documented for that fault, and the library keeps
 * working.
 *
 * <p>Inputs stay within {@link #MAX_MAGNITUDE} and scales within {@link #MAX_SCALE}: the magnitudes the
 * kernels are specified for today. Extreme magnitudes (values near the dtype's limit, huge scales) are
 * being hardened in the kernels separately; widen these bounds once they are.
 */
class AttentionPropertiesTest {

    private static final double MAX_MAGNITUDE = 10;
    private static final double MIN_SCALE = 1e-3, MAX_SCALE = 10;
    private static final double RTOL = 3;

    /** Sizes of one problem: heads_q = heads_kv · group. */
    record Sizes(int batch, int seqQ, int seqK, int headsKv, int group, int headDim) {
        int headsQ() {
            return headsKv * group;
        }

        long[] q() {
            return new long[] {batch, seqQ, headsQ(), headDim};
        }

        long[] k() {
            return new long[] {batch, seqK, headsKv, headDim};
        }

        long[] lse() {
            return new long[] {batch, headsQ(), seqQ};
        }
    }

    /** How a tensor is placed in memory: its own buffer, or a view into a larger one. */
    enum Placement {
        CONTIGUOUS,
        /** [B, H, N, D] transposed to [B, N, H, D]. */
        HEAD_MAJOR,
        /** A window of the sequence dimension of a longer tensor. */
        SEQ_WINDOW,
        /** One entry of a leading dimension that is then removed. */
        SELECTED,
        /** Some of the heads of a tensor with more heads. */
        HEAD_WINDOW,
        /** The first or last head_dim elements of wider rows (head_dim stays contiguous). */
        ROW_WINDOW
    }

    /** The layouts of one call: q, k, v, dout and the outputs. */
    record Placements(Placement q, Placement k, Placement v, Placement dout, Placement out, Placement grads) {}

    @Provide
    Arbitrary<Sizes> sizes() {
        return Combinators.combine(
                Arbitraries.integers().between(1, 2),
                Arbitraries.integers().between(1, 40),
                Arbitraries.integers().between(1, 40),
                Arbitraries.integers().between(1, 3),
                Arbitraries.integers().between(1, 3),
                Arbitraries.frequency(
                        Tuple.of(6, 8), Tuple.of(6, 16), Tuple.of(4, 24),
                        Tuple.of(8, 32), Tuple.of(4, 40), Tuple.of(8, 64),
                        Tuple.of(3, 72), Tuple.of(4, 96), Tuple.of(6, 128),
                        Tuple.of(2, 200), Tuple.of(3, 256)))
                .as(Sizes::new);
    }

    @Provide
    Arbitrary<Placements> placements() {
        Arbitrary<Placement> p = Arbitraries.of(Placement.class);
        return Combinators.combine(p, p, p, p, p, p).as(Placements::new);
    }

    /** The dtypes attention computes on. */
    @Provide
    Arbitrary<DType> floatTypes() {
        return Arbitraries.of(DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16);
    }

    /** An explicit scale of either sign in [MIN_SCALE, MAX_SCALE] (log-uniform), or null for the default. */
    @Provide
    Arbitrary<Float> scales() {
        return Combinators.combine(Arbitraries.doubles().between(Math.log10(MIN_SCALE), Math.log10(MAX_SCALE)),
                        Arbitraries.integers().between(0, 9))
                .as((exponent, sign) -> (float) (sign == 0 ? -Math.pow(10, exponent) : Math.pow(10, exponent)))
                .injectNull(0.35);
    }

    // Seeded, so that CI is reproducible. Explore with another seed (or none) when working on the kernels:
    // 25000 unseeded tries of this property and 10000 of the next passed once the plain backward was given
    // the kernel's out (checkAgainstReference); before, two of those 35000 samples exceeded the rule.
    @Property(tries = 200, seed = "20261130")
    void validCallsMatchTheFloat64Reference(@ForAll("sizes") Sizes s, @ForAll("floatTypes") DType dtype, @ForAll boolean causal,
                                            @ForAll("scales") Float scale, @ForAll("placements") Placements layout,
                                            @ForAll boolean allocating, @ForAll long seed) {
        AttentionOptions.Builder builder = AttentionOptions.builder().causal(causal);
        if (scale != null) builder.softmaxScale(scale);
        checkAgainstReference(s, dtype, builder.build(), null, layout, allocating, seed);
    }

    /**
     * A sample random seeds found: float16, causal with 7 queries and 2 keys, so row 5 attends one key and
     * row 6 two. Row 6's dq erred 9x as much as plain's, all of it through D (dout · the rounding of the
     * stored out): the float64 backward given the kernel's out erred as much (3.2e-3), the kernel's
     * backward was within 4.7e-4 of it, and row 5's dS was exactly 0. The rule had compared the kernel
     * with a plain backward whose own out happened to round luckier (see checkAgainstReference).
     */
    @Example
    void float16RowOfTwoKeysThroughStridedViews() {
        checkAgainstReference(new Sizes(1, 7, 2, 2, 1, 16), DType.FLOAT16, AttentionOptions.builder().causal(true).build(), null,
                new Placements(Placement.SEQ_WINDOW, Placement.SEQ_WINDOW, Placement.CONTIGUOUS, Placement.SEQ_WINDOW,
                        Placement.CONTIGUOUS, Placement.CONTIGUOUS), true, -701408733L);
    }

    /** Window bounds: unbounded, zero, or up to a little beyond the sequence lengths. */
    @Provide
    Arbitrary<Integer> windowBounds() {
        return Arbitraries.frequencyOf(Tuple.of(3, Arbitraries.just(AttentionOptions.UNBOUNDED)), Tuple.of(1, Arbitraries.just(0)),
                Tuple.of(4, Arbitraries.integers().between(1, 45)));
    }

    /** No softcap, or one from tight (10^-1.3 = 0.05: every score capped hard) to loose (10^1.7 = 50), log-uniform. */
    @Provide
    Arbitrary<Float> softcaps() {
        return Arbitraries.frequencyOf(Tuple.of(2, Arbitraries.just(0f)),
                Tuple.of(3, Arbitraries.doubles().between(-1.3, 1.7).ofScale(4).map(e -> (float) Math.pow(10, e))));
    }

    /**
     * Softcap, ALiBi (slopes of either sign, per head or per batch entry and head) and sliding windows, with
     * or without causal masking, on random sizes, dtypes and layouts: against the float64 reference that
     * applies them in flashattn4j.h's order.
     */
    @Property(tries = 150, seed = "20261130")  // seeded for reproducible CI, as above
    void featuresMatchTheFloat64Reference(@ForAll("sizes") Sizes s, @ForAll("floatTypes") DType dtype, @ForAll boolean causal,
                                          @ForAll("windowBounds") int left, @ForAll("windowBounds") int right,
                                          @ForAll("softcaps") float softcap, @ForAll("alibiKinds") int alibi,
                                          @ForAll("placements") Placements layout, @ForAll boolean allocating, @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed ^ 0x5eed);
        AttentionOptions.Builder builder = AttentionOptions.builder().causal(causal).window(left, right).softcap(softcap);
        double[] slopes = null;
        try (TensorScope scope = TensorScope.open()) {
            if (alibi > 0) {
                // 0: none; 1: [heads_q]; 2: [batch, heads_q]. Slopes of either sign, up to 1 per key of distance.
                int n = alibi == 1 ? s.headsQ() : s.batch() * s.headsQ();
                float[] values = new float[n];
                for (int i = 0; i < n; i++) values[i] = (float) (random.nextDouble(-0.25, 1) * Math.pow(2, -random.nextInt(8)));
                builder.alibiSlopes(alibi == 1 ? scope.fromArray(values, DType.FLOAT32, Device.CPU, s.headsQ())
                        : scope.fromArray(values, DType.FLOAT32, Device.CPU, s.batch(), s.headsQ()));
                slopes = new double[s.batch() * s.headsQ()];
                for (int i = 0; i < slopes.length; i++) slopes[i] = values[i % n];
            }
            checkAgainstReference(s, dtype, builder.build(), new Problem.Features(softcap, left, right, slopes), layout, allocating, seed);
        }
    }

    @Provide
    Arbitrary<Integer> alibiKinds() {
        return Arbitraries.integers().between(0, 2);
    }

    /** Runs forward and backward with {@code options} and checks every result; {@code features} null: none. */
    private void checkAgainstReference(Sizes s, DType dtype, AttentionOptions options, Problem.Features features,
                                       Placements layout, boolean allocating, long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        double amplitude = 0.25 + random.nextDouble() * (MAX_MAGNITUDE / 5 - 0.25);  // 5σ stays below MAX_MAGNITUDE
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = place(scope, dtype, s.q(), layout.q(), random, amplitude);
            Tensor k = place(scope, dtype, s.k(), layout.k(), random, amplitude);
            Tensor v = place(scope, dtype, s.k(), layout.v(), random, amplitude);
            Tensor dout = place(scope, dtype, s.q(), layout.dout(), random, amplitude);
            Tensor out, lse, dq, dk, dv;
            if (allocating) {
                AttentionOutput o = scope.track(Attention.forward(q, k, v, options));
                out = o.out();
                lse = o.lse();
                AttentionGradients g = scope.track(Attention.backward(dout, q, k, v, out, lse, options));
                dq = g.dq();
                dk = g.dk();
                dv = g.dv();
            } else {
                // Outputs start as NaN so that an element the kernels never write shows.
                out = place(scope, dtype, s.q(), layout.out(), random, Float.NaN);
                lse = place(scope, DType.FLOAT32, s.lse(), layout.out() == Placement.SEQ_WINDOW ? Placement.ROW_WINDOW : Placement.CONTIGUOUS,
                        random, Float.NaN);
                dq = place(scope, dtype, s.q(), layout.grads(), random, Float.NaN);
                dk = place(scope, dtype, s.k(), layout.grads(), random, Float.NaN);
                dv = place(scope, dtype, s.k(), layout.grads(), random, Float.NaN);
                Attention.forwardInto(q, k, v, out, lse, options);
                Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, options);
            }

            Problem p = new Problem(s.batch(), s.seqQ(), s.seqK(), s.headsQ(), s.headsKv(), s.headDim(), options.causal(),
                    options.softmaxScale(s.headDim()), features == null ? Problem.Features.NONE : features);
            float[] qa = q.toFloatArray(), ka = k.toFloatArray(), va = v.toFloatArray(), da = dout.toFloatArray();
            ReferenceAttention exact = ReferenceAttention.exact();
            ReferenceAttention plain = ReferenceAttention.plain(x -> Precision.round(x, dtype));
            ReferenceAttention.Forward fe = exact.forward(p, qa, ka, va), fp = plain.forward(p, qa, ka, va);
            ReferenceAttention.Gradients ge = exact.backward(p, qa, ka, va, fe.out(), da);
            // The plain backward is given the out the kernel's backward was given: the kernel's, as stored
            // in the dtype. D = rowsum(dout ∘ out) carries out's rounding, dout · (round(out) - out), into
            // every dS of the row, and so into dq and dk; for a tiny problem that term is a few random
            // variables, and plain's own, differently rounded out can cancel in it where the kernel's
            // does not: 7x apart on a row of two keys (float16RowOfTwoKeysThroughStridedViews), which
            // no fixed rtol absorbs. Given the same out, the rule measures the backward; the kernel's out
            // is held to the rule by its own check ("out" below).
            double[] kernelOut = toDoubles(out.toFloatArray());
            ReferenceAttention.Gradients gp = plain.backward(p, qa, ka, va, kernelOut, da);
            // FlashAttention's rule (Precision.check), generalized for thousands of tiny random problems
            // at varied magnitudes; see check() for how and why.
            double lseTerm = 0x1p-21 * maxAbs(fe.lse());
            check("out", out.toFloatArray(), fe.out(), fp.out(), dtype, maxAbs(va), lseTerm);
            // lse is float32 whatever the dtype: its plain baseline is the float32 computation.
            ReferenceAttention.Forward f32 = ReferenceAttention.plain(x -> (float) x).forward(p, qa, ka, va);
            check("lse", lse.toFloatArray(), fe.lse(), f32.lse(), DType.FLOAT32, maxAbs(fe.lse()), 0);
            // Gradients are sums whose terms can dwarf the result (dS = P·(dP - D) cancels, exactly so when
            // a row sees one key): their magnitude is that of the terms.
            double maxDp = maxDotProduct(p, da, va);
            double sv = maxAbs(da), sq = Math.abs(p.scale()) * maxDp * maxAbs(ka), sk = Math.abs(p.scale()) * maxDp * maxAbs(qa);
            check("dq", dq.toFloatArray(), ge.dq(), gp.dq(), dtype, sq, lseTerm);
            check("dk", dk.toFloatArray(), ge.dk(), gp.dk(), dtype, sk, lseTerm);
            check("dv", dv.toFloatArray(), ge.dv(), gp.dv(), dtype, sv, lseTerm);
        }
    }

    /**
     * FlashAttention's rule, error(kernel) ≤ rtol · error(plain) + epsilon, made fit for many tiny problems
     * at magnitudes other than 1:
     * <ul>
     *   <li>rtol is 3, not 2: a tiny problem's maximum error is that of a handful of roundings (of dS to
     *       the dtype, say), which land differently in the kernel and in the plain reference;</li>
     *   <li>the dtype's epsilon is relative to {@code magnitude}, the size of the terms summed into the
     *       result (or of the result itself, if larger), as rounding errors are;</li>
     *   <li>epsilon is at least FlashAttention 3's absolute tolerance for gradients: twice the error of
     *       {@code x + 0.3 - 0.3} in the dtype, its resolution at the values' magnitude;</li>
     *   <li>{@code lseTerm}, relative to the magnitude, covers recomputing P from the float32 lse, as
     *       FlashAttention's backward does and the plain reference does not: rounding lse costs P a relative
     *       error of about 2^-24·|lse| (more in the kernels' base-2 arithmetic).</li>
     * </ul>
     */
    private static void check(String name, float[] kernel, double[] exact, double[] plain, DType dtype, double terms, double lseTerm) {
        double resolution = Precision.resolution(exact, dtype);
        double magnitude = Math.max(1, Math.max(terms, maxAbs(exact)));
        double error = Precision.maxError(kernel, exact);
        double bound = RTOL * Precision.maxError(plain, exact) + Math.max(Precision.epsilon(dtype) * magnitude, 2 * resolution)
                + lseTerm * magnitude;
        assertTrue(error <= bound, () -> name + ": max |kernel - fp64| = " + error + " exceeds " + bound);
    }

    /** The largest |dout_i · v_j| over the pairs the mask keeps: the size of dP and D in the backward. */
    private static double maxDotProduct(Problem p, float[] dout, float[] v) {
        double max = 0;
        for (int b = 0; b < p.batch(); b++) {
            for (int h = 0; h < p.headsQ(); h++) {
                for (int i = 0; i < p.seqQ(); i++) {
                    int qi = p.qIndex(b, i, h);
                    for (int j = p.firstKey(i); j < p.endKey(i); j++) {
                        int kj = p.kIndex(b, j, h / p.group());
                        double dot = 0;
                        for (int c = 0; c < p.headDim(); c++) dot += (double) dout[qi + c] * v[kj + c];
                        max = Math.max(max, Math.abs(dot));
                    }
                }
            }
        }
        return max;
    }

    private static double[] toDoubles(float[] values) {
        double[] d = new double[values.length];
        for (int i = 0; i < values.length; i++) d[i] = values[i];
        return d;
    }

    private static double maxAbs(double[] values) {
        double max = 0;
        for (double v : values) if (Double.isFinite(v)) max = Math.max(max, Math.abs(v));
        return max;
    }

    private static double maxAbs(float[] values) {
        double max = 0;
        for (float v : values) max = Math.max(max, Math.abs(v));
        return max;
    }

    /**
     * A tensor of {@code shape} [B, N, H, D] (or lse's [B, H, N]) placed as asked, filled with Gaussian
     * values of standard deviation {@code amplitude} (NaN: filled with NaN); the rest of a larger buffer
     * holds NaN, so that reading outside the view shows.
     */
    static Tensor place(TensorScope scope, DType dtype, long[] shape, Placement placement, SplittableRandom random, double amplitude) {
        int rank = shape.length;
        long[] bufferShape = shape.clone();
        int pad = 1 + random.nextInt(3);
        Placement effective = rank == 4 || placement == Placement.CONTIGUOUS || placement == Placement.SELECTED
                || placement == Placement.ROW_WINDOW ? placement : Placement.CONTIGUOUS;
        Tensor buffer;
        Tensor view;
        switch (effective) {
            case HEAD_MAJOR -> {
                buffer = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, shape[0], shape[2], shape[1], shape[3]));
                view = buffer.transpose(1, 2);
            }
            case SEQ_WINDOW -> {
                bufferShape[1] += pad;
                buffer = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, bufferShape));
                int start = random.nextInt(pad + 1);
                view = buffer.slice(1, start, start + shape[1]);
            }
            case SELECTED -> {
                long[] outer = new long[rank + 1];
                outer[0] = pad + 1;
                System.arraycopy(shape, 0, outer, 1, rank);
                buffer = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, outer));
                view = buffer.select(0, random.nextInt(pad + 1));
            }
            case HEAD_WINDOW -> {
                bufferShape[2] += pad;
                buffer = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, bufferShape));
                int start = random.nextInt(pad + 1);
                view = buffer.slice(2, start, start + shape[2]);
            }
            case ROW_WINDOW -> {
                int widen = 8 * pad;  // keeps rows of 16-byte multiples, as a packed projection would
                bufferShape[rank - 1] += widen;
                buffer = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, bufferShape));
                int start = random.nextBoolean() ? 0 : widen;
                view = buffer.slice(rank - 1, start, start + shape[rank - 1]);
            }
            default -> {
                buffer = scope.track(Tensor.full(Float.NaN, dtype, Device.CPU, shape));
                view = buffer;
            }
        }
        if (!Double.isNaN(amplitude)) view.copyFromArray(gaussian(random, Math.toIntExact(view.numel()), amplitude));
        return scope.track(view);
    }

    static float[] gaussian(SplittableRandom random, int n, double amplitude) {
        float[] values = new float[n];
        for (int i = 0; i < n; i++) values[i] = (float) (random.nextGaussian() * amplitude);
        return values;
    }

    // ---------------------------------------------------------------------------------------------
    // Hostile calls
    // ---------------------------------------------------------------------------------------------

    /** One thing wrong with an otherwise valid call, and the exception documented for it. */
    enum Fault {
        WRONG_RANK(FlashAttnException.InvalidArgument.class),
        WRONG_DTYPE(FlashAttnException.InvalidArgument.class),
        /** Every q-, k- and output-shaped tensor int32, a dtype attention does not compute on. */
        INT32_TENSORS(FlashAttnException.Unsupported.class),
        WRONG_SIZE(FlashAttnException.InvalidArgument.class),
        HEADS_NOT_A_MULTIPLE(FlashAttnException.InvalidArgument.class),
        ZERO_HEADS(FlashAttnException.InvalidArgument.class),
        UNSUPPORTED_HEAD_DIM(FlashAttnException.Unsupported.class),
        STRIDED_HEAD_DIM(FlashAttnException.InvalidArgument.class),
        OUTPUT_ALIASES_INPUT(FlashAttnException.InvalidArgument.class),
        OUTPUTS_ALIAS_EACH_OTHER(FlashAttnException.InvalidArgument.class),
        CLOSED_TENSOR(IllegalStateException.class),
        CLOSED_BASE_OF_VIEW(IllegalStateException.class),
        NULL_TENSOR(NullPointerException.class),
        NULL_OPTIONS(NullPointerException.class),
        STREAM_OF_ANOTHER_DEVICE(FlashAttnException.InvalidArgument.class),
        NON_FINITE_SCALE(IllegalArgumentException.class),
        NEGATIVE_THREADS(IllegalArgumentException.class),
        /** Not a fault: legal but unusual values (zero or tiny scale, zero, constant or empty inputs). */
        ODD_BUT_LEGAL(null);

        final Class<? extends RuntimeException> expected;

        Fault(Class<? extends RuntimeException> expected) {
            this.expected = expected;
        }
    }

    /** The nine tensor parameters of backwardInto, in order; forward calls use q, k, v, out, lse. */
    private static final List<String> NAMES = List.of("dout", "q", "k", "v", "out", "lse", "dq", "dk", "dv");
    private static final List<String> FORWARD_NAMES = List.of("q", "k", "v", "out", "lse");

    @Property(tries = 300)
    void hostileCallsThrowTheDocumentedExceptionOrGiveFiniteResults(
            @ForAll Fault fault, @ForAll boolean backward, @ForAll boolean allocating, @ForAll("floatTypes") DType dtype,
            @ForAll("sizes") Sizes sizes, @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        Sizes s = new Sizes(sizes.batch(), Math.min(sizes.seqQ(), 12), Math.min(sizes.seqK(), 12), sizes.headsKv(), sizes.group(),
                Math.min(sizes.headDim(), 64));
        try (TensorScope scope = TensorScope.open()) {
            Tensor[] t = new Tensor[9];
            t[0] = place(scope, dtype, s.q(), Placement.CONTIGUOUS, random, 1);
            t[1] = place(scope, dtype, s.q(), Placement.CONTIGUOUS, random, 1);
            t[2] = place(scope, dtype, s.k(), Placement.CONTIGUOUS, random, 1);
            t[3] = place(scope, dtype, s.k(), Placement.CONTIGUOUS, random, 1);
            t[4] = scope.empty(dtype, Device.CPU, s.q());
            t[5] = scope.empty(DType.FLOAT32, Device.CPU, s.lse());
            t[6] = scope.empty(dtype, Device.CPU, s.q());
            t[7] = scope.empty(dtype, Device.CPU, s.k());
            t[8] = scope.empty(dtype, Device.CPU, s.k());
            Attention.forwardInto(t[1], t[2], t[3], t[4], t[5], AttentionOptions.defaults());  // a consistent out and lse

            List<String> names = backward ? NAMES : FORWARD_NAMES;
            // Allocating calls take inputs only: faults then target one of those.
            int parameters = allocating ? (backward ? 6 : 3) : names.size();
            int victim = NAMES.indexOf(names.get(random.nextInt(parameters)));
            AttentionOptions.Builder options = AttentionOptions.builder().causal(random.nextBoolean());
            CudaStream stream = null;
            boolean nullOptions = false;
            RuntimeException builderFailure = null;
            String what = fault + " on " + NAMES.get(victim);
            switch (fault) {
                case WRONG_RANK -> t[victim] = random.nextBoolean() ? t[victim].select(0, 0)
                        : t[victim].reshape(concat(new long[] {1}, t[victim].shape()));
                case WRONG_DTYPE -> {
                    DType other = victim == 5 ? DType.BFLOAT16 : DType.values()[(dtype.ordinal() + 1 + random.nextInt(2)) % 3];
                    t[victim] = scope.zeros(other, Device.CPU, t[victim].shape());
                }
                case INT32_TENSORS -> {
                    for (int i = 0; i < 9; i++) if (i != 5) t[i] = scope.zeros(DType.INT32, Device.CPU, t[i].shape());
                    what = fault.toString();
                }
                case WRONG_SIZE -> {
                    long[] shape = t[victim].shape();
                    // q's sequence and head counts define the problem: changed alone they make another valid one.
                    int dim = victim == 1 ? 3 * random.nextInt(2) : random.nextInt(shape.length);
                    shape[dim] += 1 + random.nextInt(3);
                    t[victim] = scope.zeros(t[victim].dtype(), Device.CPU, shape);
                }
                case HEADS_NOT_A_MULTIPLE -> {
                    long kvHeads = s.headsQ() + 1;  // never divides heads_q
                    t[2] = scope.zeros(dtype, Device.CPU, s.batch(), s.seqK(), kvHeads, s.headDim());
                    t[3] = scope.zeros(dtype, Device.CPU, s.batch(), s.seqK(), kvHeads, s.headDim());
                    what = fault.toString();
                }
                case ZERO_HEADS -> {
                    for (int i = 0; i < 9; i++) if (i != 5) t[i] = t[i].slice(2, 0, 0);
                    t[5] = t[5].slice(1, 0, 0);
                    what = fault.toString();
                }
                case UNSUPPORTED_HEAD_DIM -> {
                    long d = List.of(0L, 1L, 4L, 7L, 12L, 60L, 130L, 264L, 512L, 1000L).get(random.nextInt(10));
                    for (int i = 0; i < 9; i++) {
                        if (i == 5) continue;
                        long[] shape = t[i].shape();
                        shape[3] = d;
                        t[i] = scope.zeros(dtype, Device.CPU, shape);
                    }
                    what = fault + " " + d;
                }
                case STRIDED_HEAD_DIM -> {
                    if (victim == 5) victim = 1;
                    long[] wide = t[victim].shape();
                    wide[3] *= 2;
                    long[] split = concat(t[victim].shape(), new long[] {2});
                    t[victim] = scope.zeros(dtype, Device.CPU, wide).reshape(split).select(4, random.nextInt(2));
                    what = fault + " on " + NAMES.get(victim);
                }
                case OUTPUT_ALIASES_INPUT -> {
                    int output = backward ? 6 + random.nextInt(3) : 4;
                    int input = output == 4 || output == 6 ? (random.nextBoolean() ? 1 : 0) : 2 + random.nextInt(2);
                    if (!backward) input = 1;
                    t[output] = t[input];
                    allocating = false;
                    what = NAMES.get(output) + " aliases " + NAMES.get(input);
                }
                case OUTPUTS_ALIAS_EACH_OTHER -> {
                    if (backward) t[8] = t[7];
                    else t[5] = t[4].reshape(concat(s.lse(), new long[] {-1})).select(3, 0);
                    allocating = false;
                    what = backward ? "dv aliases dk" : "lse aliases out";
                    if (!backward && dtype != DType.FLOAT32) fault = Fault.WRONG_DTYPE;  // lse of another dtype
                }
                case CLOSED_TENSOR -> t[victim].close();
                case CLOSED_BASE_OF_VIEW -> {
                    Tensor base = scope.zeros(t[victim].dtype(), Device.CPU, concat(new long[] {2}, t[victim].shape()));
                    t[victim] = base.select(0, 1);
                    base.close();
                }
                case NULL_TENSOR -> t[victim] = null;
                case NULL_OPTIONS -> nullOptions = true;
                case STREAM_OF_ANOTHER_DEVICE -> stream = CudaStream.defaultStream(Device.cuda(0));
                case NON_FINITE_SCALE -> {
                    float bad = List.of(Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY).get(random.nextInt(3));
                    try {
                        options.softmaxScale(bad);
                    } catch (RuntimeException e) {
                        builderFailure = e;
                    }
                }
                case NEGATIVE_THREADS -> {
                    try {
                        options.numThreads(-1 - random.nextInt(Integer.MAX_VALUE));
                    } catch (RuntimeException e) {
                        builderFailure = e;
                    }
                }
                case ODD_BUT_LEGAL -> {
                    switch (random.nextInt(4)) {
                        case 0 -> options.softmaxScale(List.of(0f, 1e-30f, -1e-30f, Float.MIN_VALUE).get(random.nextInt(4)));
                        case 1 -> {
                            for (int i : new int[] {0, 1, 2, 3}) t[i].fill(random.nextBoolean() ? 0f : 1.5f);
                        }
                        case 2 -> {  // no keys: every row attends nothing
                            t[2] = t[2].slice(1, 0, 0);
                            t[3] = t[3].slice(1, 0, 0);
                            t[7] = t[7].slice(1, 0, 0);
                            t[8] = t[8].slice(1, 0, 0);
                        }
                        default -> {  // no queries, or no batch
                            int dim = random.nextBoolean() ? 0 : 1;
                            for (int i : new int[] {0, 1, 4, 6}) t[i] = t[i].slice(dim, 0, 0);
                            t[5] = t[5].slice(dim == 0 ? 0 : 2, 0, 0);
                            if (dim == 0) for (int i : new int[] {2, 3, 7, 8}) t[i] = t[i].slice(0, 0, 0);
                        }
                    }
                    what = fault.toString();
                }
            }
            if (builderFailure != null) {
                assertInstanceOf(fault.expected, builderFailure, what);
                return;
            }
            AttentionOptions o = nullOptions ? null : options.build();
            // A backward's out and lse must come from the forward of the same inputs and options: garbage
            // there (an lse far below the scores) legitimately overflows the recomputed probabilities.
            if (fault == Fault.ODD_BUT_LEGAL && backward) Attention.forwardInto(t[1], t[2], t[3], t[4], t[5], o);
            Tensor[] results;
            try {
                results = call(t, o, stream, backward, allocating, scope);
            } catch (RuntimeException e) {
                if (fault.expected == null || !fault.expected.isInstance(e)) {
                    fail(what + " (backward " + backward + ", allocating " + allocating + ") threw " + e, e);
                }
                return;
            } catch (Throwable e) {
                fail(what + " threw an undocumented " + e, e);
                return;
            }
            if (fault.expected != null) fail(what + " (backward " + backward + ", allocating " + allocating + ") was accepted");
            for (Tensor r : results) {
                boolean isLse = r.dim() == 3;
                for (float f : r.toFloatArray()) {
                    // lse is -inf, by definition, for a row that attends no key.
                    assertTrue(Float.isFinite(f) || (isLse && f == Float.NEGATIVE_INFINITY), what + ": non-finite " + f);
                }
            }
        }
        // The library still works after whatever happened.
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.FLOAT32, Device.CPU, 1, 1, 4, 1, 8);
            float[] out = scope.track(Attention.forward(q, q, q, AttentionOptions.defaults())).out().toFloatArray();
            for (float f : out) assertTrue(Float.isFinite(f));
        }
    }

    /** Runs the call; returns its results (out and lse, or dq, dk and dv). */
    private static Tensor[] call(Tensor[] t, AttentionOptions o, CudaStream stream, boolean backward, boolean allocating,
                                 TensorScope scope) {
        if (backward) {
            if (allocating) {
                AttentionGradients g = stream == null ? Attention.backward(t[0], t[1], t[2], t[3], t[4], t[5], o)
                        : Attention.backward(t[0], t[1], t[2], t[3], t[4], t[5], o, stream);
                scope.track(g);
                return new Tensor[] {g.dq(), g.dk(), g.dv()};
            }
            if (stream == null) Attention.backwardInto(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], o);
            else Attention.backwardInto(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], o, stream);
            return new Tensor[] {t[6], t[7], t[8]};
        }
        if (allocating) {
            AttentionOutput f = stream == null ? Attention.forward(t[1], t[2], t[3], o) : Attention.forward(t[1], t[2], t[3], o, stream);
            scope.track(f);
            return new Tensor[] {f.out(), f.lse()};
        }
        if (stream == null) Attention.forwardInto(t[1], t[2], t[3], t[4], t[5], o);
        else Attention.forwardInto(t[1], t[2], t[3], t[4], t[5], o, stream);
        return new Tensor[] {t[4], t[5]};
    }

    private static long[] concat(long[] a, long[] b) {
        long[] r = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }
}
