package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.KernelFamily;
import io.github.flashattn4j.PackedSequences;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.function.Supplier;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The support queries ({@code Attention.checkForward/checkBackward}) on the CPU: a supported call is
 * answered {@link Attention.Support#SUPPORTED} and then runs; for refused calls, whether refused by the
 * Java checks or by the native validation, the query's reason is exactly the message of the exception the
 * call throws, of the documented type. The query allocates nothing (outputs the size of a petabyte are
 * described, not allocated) and treats closed and null arguments as the call does.
 */
class AttentionSupportTest {

    /** A valid problem, dense and varlen, with every CPU feature on. */
    private static final class Valid implements AutoCloseable {
        final TensorScope scope = TensorScope.open();
        final Tensor q = scope.randn(DType.BFLOAT16, Device.CPU, 1, 2, 16, 4, 64);
        final Tensor k = scope.randn(DType.BFLOAT16, Device.CPU, 2, 2, 24, 2, 64);
        final Tensor v = scope.randn(DType.BFLOAT16, Device.CPU, 3, 2, 24, 2, 64);
        final Tensor dout = scope.randn(DType.BFLOAT16, Device.CPU, 4, 2, 16, 4, 64);
        final Tensor slopes = scope.fromArray(new float[] {0.5f, 0.25f, 0.125f, 0.0625f}, DType.FLOAT32, Device.CPU, 4);
        final AttentionOptions options = AttentionOptions.builder().causal(true).window(8, 0).softcap(20).alibiSlopes(slopes).build();
        final AttentionOutput fwd = scope.track(Attention.forward(q, k, v, options));
        // Varlen: the same rows as two sequences of 16 queries and 24 keys.
        final Tensor tq = scope.track(q.reshape(32, 4, 64));
        final Tensor tk = scope.track(k.reshape(48, 2, 64));
        final Tensor tv = scope.track(v.reshape(48, 2, 64));
        final Tensor tdout = scope.track(dout.reshape(32, 4, 64));
        final PackedSequences pq = PackedSequences.of(tq, scope.fromInts(new int[] {0, 16, 32}, Device.CPU, 3), 0);
        final PackedSequences pk = PackedSequences.of(tk, scope.fromInts(new int[] {0, 24, 48}, Device.CPU, 3), 24);
        final AttentionOutput vfwd = scope.track(Attention.forward(pq, pk, tv, options));

        @Override
        public void close() {
            scope.close();
        }
    }

    /** Asserts the query refuses and the call throws {@code type} with the query's reason as its message. */
    private static void sameRefusal(Class<? extends FlashAttnException> type, String messagePart, Supplier<Attention.Support> query,
                                    Executable call) {
        Attention.Support s = query.get();
        assertFalse(s.supported(), () -> "the query accepts a call expected to throw " + type.getSimpleName());
        FlashAttnException e = assertThrows(type, call);
        assertEquals(e.getMessage(), s.reason());
        assertTrue(s.reason().contains(messagePart), () -> "reason '" + s.reason() + "' lacks '" + messagePart + "'");
    }

    @Test
    void supportedCallsAreAnsweredSupportedAndRun() {
        try (Valid p = new Valid()) {
            for (KernelFamily family : new KernelFamily[] {KernelFamily.AUTO, KernelFamily.CPU}) {
                AttentionOptions o = p.options.toBuilder().kernelFamily(family).build();
                assertEquals(Attention.Support.SUPPORTED, Attention.checkForward(p.q, p.k, p.v, o));
                assertEquals(Attention.Support.SUPPORTED, Attention.checkBackward(p.dout, p.q, p.k, p.v, p.fwd.out(), p.fwd.lse(), o));
                assertEquals(Attention.Support.SUPPORTED, Attention.checkForward(p.pq, p.pk, p.tv, o));
                assertEquals(Attention.Support.SUPPORTED, Attention.checkBackward(p.tdout, p.pq, p.pk, p.tv, p.vfwd.out(), p.vfwd.lse(), o));
                p.scope.track(Attention.forward(p.q, p.k, p.v, o));
                p.scope.track(Attention.backward(p.dout, p.q, p.k, p.v, p.fwd.out(), p.fwd.lse(), o));
                p.scope.track(Attention.forward(p.pq, p.pk, p.tv, o));
                p.scope.track(Attention.backward(p.tdout, p.pq, p.pk, p.tv, p.vfwd.out(), p.vfwd.lse(), o));
            }
            assertEquals(Attention.Support.SUPPORTED, Attention.checkForward(p.q, p.k, p.v, AttentionOptions.defaults()));
        }
    }

    @Test
    void kernelFamiliesForCudaOnCpuTensors() {
        try (Valid p = new Valid()) {
            for (KernelFamily family : new KernelFamily[] {KernelFamily.SM80, KernelFamily.SM90}) {
                AttentionOptions o = p.options.toBuilder().kernelFamily(family).build();
                String part = "kernel family " + family;
                sameRefusal(FlashAttnException.Unsupported.class, part, () -> Attention.checkForward(p.q, p.k, p.v, o),
                        () -> Attention.forward(p.q, p.k, p.v, o));
                sameRefusal(FlashAttnException.Unsupported.class, part,
                        () -> Attention.checkBackward(p.dout, p.q, p.k, p.v, p.fwd.out(), p.fwd.lse(), o),
                        () -> Attention.backward(p.dout, p.q, p.k, p.v, p.fwd.out(), p.fwd.lse(), o));
                sameRefusal(FlashAttnException.Unsupported.class, part, () -> Attention.checkForward(p.pq, p.pk, p.tv, o),
                        () -> Attention.forward(p.pq, p.pk, p.tv, o));
                sameRefusal(FlashAttnException.Unsupported.class, part,
                        () -> Attention.checkBackward(p.tdout, p.pq, p.pk, p.tv, p.vfwd.out(), p.vfwd.lse(), o),
                        () -> Attention.backward(p.tdout, p.pq, p.pk, p.tv, p.vfwd.out(), p.vfwd.lse(), o));
            }
        }
    }

    @Test
    void refusalsOfTheJavaChecks() {
        try (Valid p = new Valid(); TensorScope s = TensorScope.open()) {
            AttentionOptions o = p.options;
            Tensor q32 = s.zeros(DType.INT32, Device.CPU, 2, 16, 4, 64);
            Tensor k32 = s.zeros(DType.INT32, Device.CPU, 2, 24, 2, 64);
            sameRefusal(FlashAttnException.Unsupported.class, "int32", () -> Attention.checkForward(q32, k32, k32, o),
                    () -> Attention.forward(q32, k32, k32, o));
            Tensor shortK = s.zeros(DType.BFLOAT16, Device.CPU, 2, 23, 2, 64);
            sameRefusal(FlashAttnException.InvalidArgument.class, "v", () -> Attention.checkForward(p.q, shortK, p.v, o),
                    () -> Attention.forward(p.q, shortK, p.v, o));
            Tensor q12 = s.zeros(DType.BFLOAT16, Device.CPU, 2, 16, 4, 12);
            Tensor k12 = s.zeros(DType.BFLOAT16, Device.CPU, 2, 24, 2, 12);
            sameRefusal(FlashAttnException.Unsupported.class, "head_dim 12", () -> Attention.checkForward(q12, k12, k12, p.options.toBuilder().noAlibiSlopes().build()),
                    () -> Attention.forward(q12, k12, k12, p.options.toBuilder().noAlibiSlopes().build()));
            Tensor badLse = s.zeros(DType.FLOAT32, Device.CPU, 2, 16, 4);
            sameRefusal(FlashAttnException.InvalidArgument.class, "lse", () -> Attention.checkBackward(p.dout, p.q, p.k, p.v, p.fwd.out(), badLse, o),
                    () -> Attention.backward(p.dout, p.q, p.k, p.v, p.fwd.out(), badLse, o));
            // ALiBi slopes of the wrong shape or dtype.
            AttentionOptions threeSlopes = o.toBuilder().alibiSlopes(s.zeros(DType.FLOAT32, Device.CPU, 3)).build();
            sameRefusal(FlashAttnException.InvalidArgument.class, "alibi_slopes", () -> Attention.checkForward(p.q, p.k, p.v, threeSlopes),
                    () -> Attention.forward(p.q, p.k, p.v, threeSlopes));
            AttentionOptions halfSlopes = o.toBuilder().alibiSlopes(s.zeros(DType.FLOAT16, Device.CPU, 2, 4)).build();
            sameRefusal(FlashAttnException.InvalidArgument.class, "float32", () -> Attention.checkForward(p.q, p.k, p.v, halfSlopes),
                    () -> Attention.forward(p.q, p.k, p.v, halfSlopes));
            AttentionOptions batchOfThree = o.toBuilder().alibiSlopes(s.zeros(DType.FLOAT32, Device.CPU, 3, 4)).build();
            sameRefusal(FlashAttnException.InvalidArgument.class, "alibi_slopes", () -> Attention.checkForward(p.pq, p.pk, p.tv, batchOfThree),
                    () -> Attention.forward(p.pq, p.pk, p.tv, batchOfThree));
            // Varlen descriptors.
            PackedSequences usedOnQueries = p.pq.withUsedLengths(s.fromInts(new int[] {16, 16}, Device.CPU, 2));
            sameRefusal(FlashAttnException.InvalidArgument.class, "keys only", () -> Attention.checkForward(usedOnQueries, p.pk, p.tv, o),
                    () -> Attention.forward(usedOnQueries, p.pk, p.tv, o));
            PackedSequences floatOffsets = PackedSequences.of(p.tq, s.fromArray(new float[] {0, 16, 32}, DType.FLOAT32, Device.CPU, 3), 0);
            sameRefusal(FlashAttnException.InvalidArgument.class, "int32", () -> Attention.checkForward(floatOffsets, p.pk, p.tv, o),
                    () -> Attention.forward(floatOffsets, p.pk, p.tv, o));
            PackedSequences oneSequence = PackedSequences.of(p.tk, s.fromInts(new int[] {0, 48}, Device.CPU, 2), 0);
            sameRefusal(FlashAttnException.InvalidArgument.class, "cu_seqlens_k", () -> Attention.checkForward(p.pq, oneSequence, p.tv, o),
                    () -> Attention.forward(p.pq, oneSequence, p.tv, o));
            sameRefusal(FlashAttnException.InvalidArgument.class, "dimensions", () -> Attention.checkForward(
                    PackedSequences.of(p.q, p.pq.cuSeqlens(), 0), p.pk, p.tv, o), () -> Attention.forward(PackedSequences.of(p.q, p.pq.cuSeqlens(), 0), p.pk, p.tv, o));
        }
    }

    @Test
    void refusalsOfTheNativeValidation() {
        try (Valid p = new Valid(); TensorScope s = TensorScope.open()) {
            AttentionOptions o = p.options;
            AttentionOptions hugeScale = o.toBuilder().softmaxScale(1e38f).build();
            sameRefusal(FlashAttnException.InvalidArgument.class, "softmax_scale", () -> Attention.checkForward(p.q, p.k, p.v, hugeScale),
                    () -> Attention.forward(p.q, p.k, p.v, hugeScale));
            Tensor wide = s.randn(DType.BFLOAT16, Device.CPU, 9, 2, 16, 4, 128);
            Tensor strided = s.track(wide.reshape(2, 16, 4, 64, 2).select(4, 0));  // head_dim stride 2
            sameRefusal(FlashAttnException.InvalidArgument.class, "contiguous", () -> Attention.checkForward(strided, p.k, p.v, o),
                    () -> Attention.forward(strided, p.k, p.v, o));
            // Offsets and lengths: read and checked natively on the CPU.
            for (int[] cu : new int[][] {{0, 20, 16}, {1, 16, 32}, {0, 16, 40}}) {
                PackedSequences bad = PackedSequences.of(p.tq, s.fromInts(cu, Device.CPU, 3), 0);
                sameRefusal(FlashAttnException.InvalidArgument.class, "cu_seqlens_q", () -> Attention.checkForward(bad, p.pk, p.tv, o),
                        () -> Attention.forward(bad, p.pk, p.tv, o));
                sameRefusal(FlashAttnException.InvalidArgument.class, "cu_seqlens_q",
                        () -> Attention.checkBackward(p.tdout, bad, p.pk, p.tv, p.vfwd.out(), p.vfwd.lse(), o),
                        () -> Attention.backward(p.tdout, bad, p.pk, p.tv, p.vfwd.out(), p.vfwd.lse(), o));
            }
            PackedSequences overUsed = p.pk.withUsedLengths(s.fromInts(new int[] {24, 25}, Device.CPU, 2));
            sameRefusal(FlashAttnException.InvalidArgument.class, "seqused_k", () -> Attention.checkForward(p.pq, overUsed, p.tv, o),
                    () -> Attention.forward(p.pq, overUsed, p.tv, o));
            PackedSequences tooShortMax = PackedSequences.of(p.tq, p.pq.cuSeqlens(), 15);
            sameRefusal(FlashAttnException.InvalidArgument.class, "max_seqlen_q", () -> Attention.checkForward(tooShortMax, p.pk, p.tv, o),
                    () -> Attention.forward(tooShortMax, p.pk, p.tv, o));
        }
    }

    @Test
    void theQueryAllocatesNothing() {
        // q, k, v of 2^45 rows broadcast from 32 bytes (zero strides): outputs of 2^50 bytes, more than
        // the address space. The query describes them without allocating and accepts; the call then
        // fails to allocate them.
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment row = arena.allocate(8 * 4, 64);
            long rows = 1L << 45;
            long[] shape = {1, rows, 1, 8}, zero = {0, 0, 0, 1};
            try (Tensor q = Tensor.wrap(row, DType.FLOAT32, shape, zero, null)) {
                assertEquals(Attention.Support.SUPPORTED, Attention.checkForward(q, q, q, AttentionOptions.defaults()));
                assertThrows(FlashAttnException.OutOfMemory.class, () -> Attention.forward(q, q, q, AttentionOptions.defaults()));
            }
        }
    }

    @Test
    void closedAndNullArgumentsThrowAsTheCallDoes() {
        try (Valid p = new Valid()) {
            Tensor closedSlopes = Tensor.zeros(DType.FLOAT32, Device.CPU, 4);
            AttentionOptions o = p.options.toBuilder().alibiSlopes(closedSlopes).build();
            closedSlopes.close();
            assertThrows(IllegalStateException.class, () -> Attention.checkForward(p.q, p.k, p.v, o));
            assertThrows(IllegalStateException.class, () -> Attention.forward(p.q, p.k, p.v, o));
            Tensor closedOffsets = Tensor.fromInts(new int[] {0, 16, 32}, Device.CPU, 3);
            PackedSequences closed = PackedSequences.of(p.tq, closedOffsets, 0);
            closedOffsets.close();
            assertThrows(IllegalStateException.class, () -> Attention.checkForward(closed, p.pk, p.tv, p.options));
            assertThrows(IllegalStateException.class, () -> Attention.forward(closed, p.pk, p.tv, p.options));
            assertThrows(NullPointerException.class, () -> Attention.checkForward(p.q, p.k, null, p.options));
            assertThrows(NullPointerException.class, () -> Attention.checkForward(p.q, p.k, p.v, null));
            assertThrows(NullPointerException.class, () -> Attention.checkForward((PackedSequences) null, p.pk, p.tv, p.options));
            assertThrows(NullPointerException.class, () -> Attention.checkBackward(p.dout, p.q, p.k, p.v, null, p.fwd.lse(), p.options));
        }
    }

    @Test
    void supportValuesAreConsistent() {
        assertThrows(IllegalArgumentException.class, () -> new Attention.Support(true, "why"));
        assertThrows(IllegalArgumentException.class, () -> new Attention.Support(false, ""));
        assertThrows(NullPointerException.class, () -> new Attention.Support(false, null));
        assertEquals(new Attention.Support(false, "x"), new Attention.Support(false, "x"));
        assertTrue(Attention.Support.SUPPORTED.supported());
    }
}
