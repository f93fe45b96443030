package io.github.flashattn4j.tests;

import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.Tuple;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import java.util.HashSet;
import java.util.function.Function;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Property-based tests of tensors on the CPU: random chains of views (slice, select, transpose, reshape),
 * writes through them and closes, with valid and hostile arguments, against a model written here (a view
 * is the list of base elements it shows, in order); and factories given hostile shapes. Every step either
 * does what the model says or throws an exception the API documents for one of the faults the model sees
 * in it.
 */
class TensorPropertiesTest {

    /** What a view shows: its shape and the base elements it addresses, in row-major order. */
    record Model(long[] shape, int[] elements, boolean closed) {
        long numel() {
            return elements.length;
        }

        /** Consecutive elements (or none): what a row-major contiguous layout addresses. */
        boolean contiguous() {
            for (int i = 1; i < elements.length; i++) if (elements[i] != elements[0] + i) return false;
            return true;
        }

        /** Row-major index of the element at {@code index}. */
        int position(long[] index) {
            int p = 0;
            for (int d = 0; d < shape.length; d++) p = (int) (p * shape[d] + index[d]);
            return p;
        }

        /** The view of shape {@code newShape} whose element at index i is this one's at {@code sourceIndex(i)}. */
        Model view(long[] newShape, Function<long[], long[]> sourceIndex) {
            int count = 1;
            for (long s : newShape) count *= (int) s;
            int[] picked = new int[count];
            long[] index = new long[newShape.length];
            for (int i = 0; i < count; i++) {
                picked[i] = elements[position(sourceIndex.apply(index))];
                for (int d = newShape.length - 1; d >= 0; d--) {  // odometer
                    if (++index[d] < newShape[d]) break;
                    index[d] = 0;
                }
            }
            return new Model(newShape, picked, closed);
        }
    }

    enum Op { SIZE, STRIDE, SLICE, SELECT, TRANSPOSE, RESHAPE, FILL, COPY_FROM, CLOSE_VIEW }

    record Step(Op op, long a, long b, long c) {}

    private static Arbitrary<Long> argument() {
        return Arbitraries.frequencyOf(
                Tuple.of(12, Arbitraries.longs().between(-4, 6)),
                Tuple.of(1, Arbitraries.of(Long.MIN_VALUE, Long.MAX_VALUE, (long) Integer.MIN_VALUE, (long) Integer.MAX_VALUE,
                        1L << 40, -(1L << 40))));
    }

    @Provide
    Arbitrary<List<Step>> steps() {
        return Combinators.combine(Arbitraries.of(Op.class), argument(), argument(), argument()).as(Step::new)
                .list().ofMinSize(1).ofMaxSize(8);
    }

    @Provide
    Arbitrary<long[]> baseShapes() {
        return Arbitraries.longs().between(0, 5).list().ofMinSize(0).ofMaxSize(4)
                .map(l -> l.stream().mapToLong(Long::longValue).toArray());
    }

    private static float valueOf(int element, DType dtype) {
        // Small integers, exact in every dtype; distinct for every element a test tensor has where the
        // dtype has enough values (int8 255, the float8 ones about 250, int4 only 16).
        return switch (dtype) {
            case FLOAT32 -> element + 1;
            case INT8 -> element % 255 - 127;
            case INT4 -> element % 16 - 8;
            case FLOAT8_E4M3FN -> (float) Precision.E4M3[element % 126 + 1] * (element / 126 % 2 == 0 ? 1 : -1);
            case FLOAT8_E5M2 -> (float) Precision.E5M2[element % 123 + 1] * (element / 123 % 2 == 0 ? 1 : -1);
            default -> element % 251 + 1;
        };
    }

    /**
     * Whether an INT4 tensor can have this view: rows of the innermost dimension consecutive, even in length
     * and starting at even element offsets (so on bytes), at least one dimension; anything without elements.
     */
    private static boolean packable(Model m) {
        long[] shape = m.shape();
        if (shape.length == 0) return false;
        long n = shape[shape.length - 1];
        if (n % 2 != 0) return false;
        int[] e = m.elements();
        for (int row = 0; row < e.length; row += (int) n) {
            if (e[row] % 2 != 0) return false;
            for (int i = 1; i < n; i++) if (e[row + i] != e[row] + i) return false;
        }
        return true;
    }

    @Property(tries = 400)
    void viewChainsDoWhatTheModelSays(@ForAll("baseShapes") long[] baseShape, @ForAll DType dtype,
                                      @ForAll("steps") List<Step> steps) {
        try (TensorScope scope = TensorScope.open()) {
            int n = 1;
            for (long s : baseShape) n *= (int) s;
            float[] base = new float[n];
            int[] all = new int[n];
            for (int i = 0; i < n; i++) {
                base[i] = valueOf(i, dtype);
                all[i] = i;
            }
            Model start = new Model(baseShape.clone(), all, false);
            if (dtype == DType.INT4 && !packable(start)) {
                assertThrows(IllegalArgumentException.class, () -> Tensor.fromArray(base, dtype, Device.CPU, baseShape));
                return;
            }
            Tensor owner = scope.fromArray(base, dtype, Device.CPU, baseShape);
            Tensor view = owner;
            Model model = start;
            boolean ownerClosed = false;
            List<String> trace = new ArrayList<>();
            for (Step step : steps) {
                trace.add(step + " on " + Arrays.toString(model.shape()));
                Set<Class<? extends RuntimeException>> faults = new HashSet<>();
                Model next = predict(step, model, faults);
                boolean makesView = switch (step.op()) {
                    case SLICE, SELECT, TRANSPOSE, RESHAPE -> true;
                    default -> false;
                };
                // INT4 views must keep rows on bytes (DType.INT4).
                if (dtype == DType.INT4 && makesView && faults.isEmpty() && !model.closed() && !packable(next)) {
                    faults.add(IllegalArgumentException.class);
                }
                Object result;
                Tensor current = view;
                try {
                    result = apply(step, current, dtype);
                } catch (RuntimeException e) {
                    if (faults.stream().noneMatch(f -> f.isInstance(e))) {
                        fail(trace + ": threw " + e + " but the model expected " + (faults.isEmpty() ? "success" : faults), e);
                    }
                    continue;
                }
                if (!faults.isEmpty()) fail(trace + ": succeeded but the model expected " + faults);
                switch (step.op()) {
                    case SIZE -> assertEquals(model.shape()[normalize(step.a(), model.shape().length)], (long) result, trace::toString);
                    case STRIDE -> { }  // strides are the implementation's choice; the data checks below judge them
                    case FILL, COPY_FROM -> {
                        float[] written = (float[]) result;
                        for (int i = 0; i < written.length; i++) base[model.elements()[i]] = (float) Precision.round(written[i], dtype);
                    }
                    case CLOSE_VIEW -> {
                        // Closing the owner frees the memory; closing a view only retires the view.
                        ownerClosed |= view == owner;
                        model = new Model(model.shape(), model.elements(), true);
                    }
                    default -> {
                        view = scope.track((Tensor) result);
                        model = next;
                    }
                }
                assertArrayEquals(model.shape(), view.shape(), trace::toString);
                assertEquals(model.numel(), view.numel(), trace::toString);
                assertEquals(model.contiguous(), view.isContiguous(), trace::toString);
                if (!model.closed()) {
                    float[] expected = new float[model.elements().length];
                    for (int i = 0; i < expected.length; i++) expected[i] = base[model.elements()[i]];
                    assertArrayEquals(expected, view.toFloatArray(), trace::toString);
                }
            }
            if (!ownerClosed) assertArrayEquals(base, owner.toFloatArray(), () -> "stray writes: " + trace);
        }
    }

    /** The view after {@code step} (or the same one), adding to {@code faults} what a correct API may throw. */
    private static Model predict(Step step, Model m, Set<Class<? extends RuntimeException>> faults) {
        int rank = m.shape().length;
        long[] shape = m.shape();
        switch (step.op()) {
            case SIZE, STRIDE -> {
                if (normalize(step.a(), rank) < 0) faults.add(IndexOutOfBoundsException.class);
                return m;
            }
            case SLICE -> {
                int d = normalize(step.a(), rank);
                if (d < 0) {
                    faults.add(IndexOutOfBoundsException.class);
                    return m;
                }
                long start = step.b(), end = step.c();
                if (start < 0 || end < start || end > shape[d]) faults.add(IndexOutOfBoundsException.class);
                if (m.closed()) faults.add(IllegalStateException.class);
                if (!faults.isEmpty()) return m;
                long[] s = shape.clone();
                s[d] = end - start;
                return m.view(s, index -> {
                    long[] source = index.clone();
                    source[d] += start;
                    return source;
                });
            }
            case SELECT -> {
                int d = normalize(step.a(), rank);
                if (d < 0) {
                    faults.add(IndexOutOfBoundsException.class);
                    return m;
                }
                long at = step.b();
                if (at < 0 || at >= shape[d]) faults.add(IndexOutOfBoundsException.class);
                if (m.closed()) faults.add(IllegalStateException.class);
                if (!faults.isEmpty()) return m;
                long[] s = new long[rank - 1];
                for (int i = 0, j = 0; i < rank; i++) if (i != d) s[j++] = shape[i];
                return m.view(s, index -> {
                    long[] source = new long[rank];
                    for (int i = 0, j = 0; i < rank; i++) source[i] = i == d ? at : index[j++];
                    return source;
                });
            }
            case TRANSPOSE -> {
                int a = normalize(step.a(), rank), b = normalize(step.b(), rank);
                if (a < 0 || b < 0) faults.add(IndexOutOfBoundsException.class);
                if (m.closed()) faults.add(IllegalStateException.class);
                if (!faults.isEmpty()) return m;
                long[] s = shape.clone();
                s[a] = shape[b];
                s[b] = shape[a];
                return m.view(s, index -> {
                    long[] source = index.clone();
                    source[a] = index[b];
                    source[b] = index[a];
                    return source;
                });
            }
            case RESHAPE -> {
                long[] target = reshapeTarget(step, m.numel());
                if (!m.contiguous() || m.closed()) faults.add(IllegalStateException.class);
                long[] resolved = resolve(target, m.numel());
                if (resolved == null) faults.add(IllegalArgumentException.class);
                if (!faults.isEmpty()) return m;
                return new Model(resolved, m.elements(), false);
            }
            case FILL, COPY_FROM -> {
                if (m.closed()) faults.add(IllegalStateException.class);
                return m;
            }
            case CLOSE_VIEW -> {
                return m;
            }
        }
        throw new AssertionError(step);
    }

    /** The shape a RESHAPE step asks for: derived from the view's element count, or raw hostile sizes. */
    private static long[] reshapeTarget(Step step, long n) {
        return switch ((int) Math.floorMod(step.c(), 4L)) {
            case 0 -> new long[] {-1};
            case 1 -> n > 0 && Math.floorMod(n, Math.max(1, Math.abs(step.a() % 7))) == 0 ? new long[] {Math.max(1, Math.abs(step.a() % 7)), -1} : new long[] {n, 1};
            case 2 -> new long[] {step.a(), step.b()};
            default -> new long[] {step.a(), -1, step.b()};
        };
    }

    /** {@code target} with its -1 inferred, or null where the API must refuse it (IllegalArgumentException). */
    private static long[] resolve(long[] target, long numel) {
        int inferred = -1;
        BigInteger known = BigInteger.ONE;
        for (int i = 0; i < target.length; i++) {
            if (target[i] == -1 && inferred < 0) inferred = i;
            else if (target[i] < 0) return null;
            else known = known.multiply(BigInteger.valueOf(target[i]));
        }
        if (known.bitLength() > 63) return null;
        long[] resolved = target.clone();
        if (inferred >= 0) {
            if (known.signum() == 0 || numel % known.longValueExact() != 0) return null;
            resolved[inferred] = numel / known.longValueExact();
        }
        BigInteger product = BigInteger.ONE, strides = BigInteger.ONE;
        for (long s : resolved) {
            product = product.multiply(BigInteger.valueOf(s));
            strides = strides.multiply(BigInteger.valueOf(Math.max(s, 1)));
        }
        if (strides.bitLength() > 63 || !product.equals(BigInteger.valueOf(numel))) return null;
        return resolved;
    }

    /** {@code dim} counted from the end when negative, or -1 when out of range. */
    private static int normalize(long dim, int rank) {
        if (dim < Integer.MIN_VALUE || dim > Integer.MAX_VALUE) return -1;  // apply() passes such dims as out-of-range ints
        long d = dim < 0 ? dim + rank : dim;
        return d >= 0 && d < rank ? (int) d : -1;
    }

    /** Performs the step; returns the new view, the size, or the values written. */
    private static Object apply(Step step, Tensor t, DType dtype) {
        int a = (int) Math.max(Integer.MIN_VALUE, Math.min(Integer.MAX_VALUE, step.a()));
        int b = (int) Math.max(Integer.MIN_VALUE, Math.min(Integer.MAX_VALUE, step.b()));
        return switch (step.op()) {
            case SIZE -> t.size(a);
            case STRIDE -> t.stride(a);
            case SLICE -> t.slice(a, step.b(), step.c());
            case SELECT -> t.select(a, step.b());
            case TRANSPOSE -> t.transpose(a, b);
            case RESHAPE -> t.reshape(reshapeTarget(step, t.numel()));
            case FILL -> {
                float value = (float) (step.b() % 100);
                t.fill(value);
                float[] written = new float[Math.toIntExact(t.numel())];
                Arrays.fill(written, value);
                yield written;
            }
            case COPY_FROM -> {
                float[] values = new float[Math.toIntExact(t.numel())];
                for (int i = 0; i < values.length; i++) values[i] = (float) ((step.b() + 7L * i) % 97);
                DType sourceType = DType.values()[(int) Math.floorMod(step.c(), 3L)];
                try (Tensor source = Tensor.fromArray(values, sourceType, Device.CPU, t.shape())) {
                    t.copyFrom(source);
                }
                yield values;
            }
            case CLOSE_VIEW -> {
                t.close();
                yield t;
            }
        };
    }

    // ---------------------------------------------------------------------------------------------
    // Factories
    // ---------------------------------------------------------------------------------------------

    enum Factory { EMPTY, ZEROS, FULL, RANDN, FROM_ARRAY }

    /**
     * Sizes that are small, negative, or so large that any tensor holding an element of each needs more
     * memory than a machine has (never in between: a test must not allocate gigabytes).
     */
    @Provide
    Arbitrary<long[]> hostileShapes() {
        Arbitrary<Long> size = Arbitraries.frequencyOf(
                Tuple.of(10, Arbitraries.longs().between(0, 4)),
                Tuple.of(2, Arbitraries.longs().between(-3, -1)),
                Tuple.of(2, Arbitraries.of(1L << 42, 1L << 62, Long.MAX_VALUE, Long.MAX_VALUE / 2, Long.MAX_VALUE / 4)),
                Tuple.of(1, Arbitraries.of(Long.MIN_VALUE)));
        return size.list().ofMaxSize(5).map(l -> l.stream().mapToLong(Long::longValue).toArray());
    }

    @Property(tries = 400)
    void factoriesGiveTheTensorOrTheDocumentedException(@ForAll Factory factory, @ForAll DType dtype,
                                                         @ForAll("hostileShapes") long[] shape, @ForAll int arrayLength) {
        BigInteger count = BigInteger.ONE, strides = BigInteger.ONE;
        boolean negative = false;
        for (long s : shape) {
            negative |= s < 0;
            count = count.multiply(BigInteger.valueOf(s));
            strides = strides.multiply(BigInteger.valueOf(Math.max(s, 1)));
        }
        BigInteger bytes = dtype == DType.INT4 ? count.add(BigInteger.ONE).shiftRight(1) : count.multiply(BigInteger.valueOf(dtype.byteSize()));
        // INT4 shapes need a dimension and an even innermost size (DType.INT4).
        boolean unpackable = dtype == DType.INT4 && (shape.length == 0 || shape[shape.length - 1] % 2 != 0);
        int length = !negative && count.bitLength() < 16 && Math.floorMod(arrayLength, 4) != 0 ? count.intValue() : Math.floorMod(arrayLength, 50);
        Class<? extends RuntimeException> expected = null;
        if (negative || strides.bitLength() > 63 || bytes.bitLength() > 63 || unpackable) expected = IllegalArgumentException.class;
        else if (factory == Factory.RANDN && count.compareTo(BigInteger.valueOf(Integer.MAX_VALUE - 8)) > 0) expected = IllegalArgumentException.class;
        else if (factory == Factory.FROM_ARRAY && !count.equals(BigInteger.valueOf(length))) expected = IllegalArgumentException.class;
        else if (bytes.bitLength() > 40) expected = FlashAttnException.OutOfMemory.class;
        Tensor t;
        try {
            t = switch (factory) {
                case EMPTY -> Tensor.empty(dtype, Device.CPU, shape);
                case ZEROS -> Tensor.zeros(dtype, Device.CPU, shape);
                case FULL -> Tensor.full(-2.5f, dtype, Device.CPU, shape);
                case RANDN -> Tensor.randn(dtype, Device.CPU, arrayLength, shape);
                case FROM_ARRAY -> Tensor.fromArray(new float[length], dtype, Device.CPU, shape);
            };
        } catch (RuntimeException e) {
            if (expected == null || !expected.isInstance(e)) {
                fail(factory + " " + dtype + " " + Arrays.toString(shape) + " threw " + e + ", expected " + (expected == null ? "a tensor" : expected), e);
            }
            assertTrue(e.getMessage() != null && !e.getMessage().isBlank(), "exception without a message");
            return;
        }
        try (t) {
            if (expected != null) fail(factory + " " + dtype + " " + Arrays.toString(shape) + " succeeded, expected " + expected);
            assertArrayEquals(shape, t.shape());
            assertEquals(count.longValueExact(), t.numel());
            assertTrue(t.isContiguous());
            float[] values = t.toFloatArray();
            for (float v : values) {
                switch (factory) {
                    case EMPTY, ZEROS, FROM_ARRAY -> assertEquals(0f, v);
                    case FULL -> assertEquals((float) Precision.round(-2.5, dtype), v);  // int32: -2
                    case RANDN -> assertTrue(Float.isFinite(v));
                }
            }
        }
    }
}
