package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.DLPack;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.Tensor;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Zero-copy interop on the CPU: tensors over foreign segments, raw-byte views and copies, and DLPack
 * export/import with the deleter called exactly once, whichever side lets go last.
 */
class InteropTest {

    private static final Device CPU = Device.CPU;

    @Test
    void wrappedSegmentIsSharedNotCopied() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment memory = arena.allocate(4L * 6, 4);
            for (int i = 0; i < 6; i++) memory.setAtIndex(ValueLayout.JAVA_FLOAT, i, i + 0.5f);
            AtomicInteger released = new AtomicInteger();
            Tensor t = Tensor.wrap(memory, DType.FLOAT32, new long[] {2, 3}, null, released::incrementAndGet);
            assertArrayEquals(new float[] {0.5f, 1.5f, 2.5f, 3.5f, 4.5f, 5.5f}, t.toFloatArray());
            t.copyFromArray(new float[] {9, 8, 7, 6, 5, 4});
            assertEquals(7f, memory.getAtIndex(ValueLayout.JAVA_FLOAT, 2), "writes land in the caller's memory");
            // A strided view of the same memory: the columns of a [3, 2] matrix, read as [2, 3].
            Tensor columns = Tensor.wrap(memory, DType.FLOAT32, new long[] {2, 3}, new long[] {1, 2}, null);
            assertArrayEquals(new float[] {9, 7, 5, 8, 6, 4}, columns.toFloatArray());
            t.close();
            t.close();
            assertEquals(1, released.get(), "release action runs exactly once");
            columns.close();
        }
    }

    @Test
    void wrapRefusesLayoutsOutsideTheSegment() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment memory = arena.allocate(64, 8);
            assertThrows(IllegalArgumentException.class, () -> Tensor.wrap(memory, DType.FLOAT32, 17));
            assertThrows(IllegalArgumentException.class,
                    () -> Tensor.wrap(memory, DType.FLOAT32, new long[] {4, 4}, new long[] {5, 1}, null));
            assertThrows(IllegalArgumentException.class,
                    () -> Tensor.wrap(memory, DType.FLOAT32, new long[] {4}, new long[] {-1}, null));
            assertThrows(IllegalArgumentException.class, () -> Tensor.wrap(memory.asSlice(1), DType.FLOAT32, 2));
            assertThrows(IllegalArgumentException.class,
                    () -> Tensor.wrap(MemorySegment.ofArray(new float[4]), DType.FLOAT32, 4));
        }
    }

    @Test
    void wrappedSegmentFreedByItsArenaIsRefusedNotRead() {
        Arena arena = Arena.ofShared();
        Tensor t = Tensor.wrap(arena.allocate(32, 8), DType.FLOAT32, 8);
        arena.close();
        assertThrows(IllegalStateException.class, t::toFloatArray);
        t.close();
    }

    @Test
    void asSegmentWritesThroughAndDiesWithTheTensor() {
        Tensor t = Tensor.zeros(DType.BFLOAT16, CPU, 4, 8);
        Tensor row = t.select(0, 2);
        MemorySegment view = row.asSegment();
        assertEquals(16, view.byteSize());
        view.set(ValueLayout.JAVA_SHORT_UNALIGNED, 2, (short) 0x3f80);  // bf16 1.0 at row 2, column 1
        assertEquals(1.0f, t.toFloatArray()[2 * 8 + 1]);
        t.close();
        assertThrows(IllegalStateException.class, () -> view.get(ValueLayout.JAVA_BYTE, 0));
        assertThrows(IllegalStateException.class, row::asSegment);
    }

    @Test
    void rawCopiesKeepBitsAndAdvanceBuffers() {
        short[] bits = {0x3f80, (short) 0xbf80, 0x7fc1, 0x0001, (short) 0xff80, 0x4049};  // bf16, NaN payload kept
        try (Tensor t = Tensor.empty(DType.BFLOAT16, CPU, 2, 3)) {
            t.copyFromShorts(bits);
            assertArrayEquals(bits, t.toShortArray());
            ByteBuffer buffer = ByteBuffer.allocateDirect(4 + 12).order(ByteOrder.nativeOrder());
            buffer.position(4);
            t.copyTo(buffer);
            assertEquals(16, buffer.position());
            assertEquals(bits[1], buffer.getShort(4 + 2));
            // Transposed view: row-major order of the view's elements.
            Tensor transposed = t.transpose(0, 1);
            short[] expected = {bits[0], bits[3], bits[1], bits[4], bits[2], bits[5]};
            assertArrayEquals(expected, transposed.toShortArray());
            ByteBuffer heap = ByteBuffer.allocate(12).order(ByteOrder.nativeOrder());
            transposed.copyTo(heap);
            heap.flip();
            try (Tensor back = Tensor.empty(DType.BFLOAT16, CPU, 3, 2)) {
                back.copyFrom(heap);
                assertArrayEquals(expected, back.toShortArray());
                assertFalse(heap.hasRemaining());
            }
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment out = arena.allocate(12);
                t.copyTo(out);
                assertEquals(bits[5], out.getAtIndex(ValueLayout.JAVA_SHORT, 5));
                assertThrows(IllegalArgumentException.class, () -> t.copyTo(arena.allocate(10)));
            }
            assertThrows(UnsupportedOperationException.class, () -> Tensor.zeros(DType.FLOAT32, CPU, 2).toShortArray());
        }
    }

    @Test
    void dlpackRoundTripSharesMemoryAndOutlivesEitherSide() {
        Tensor original = Tensor.fromArray(new float[] {1, 2, 3, 4, 5, 6}, DType.FLOAT32, CPU, 2, 3);
        Tensor column = original.slice(1, 1, 3);  // [2, 2] view with a gap
        MemorySegment managed = DLPack.toDLPack(column);
        original.close();  // the export keeps the memory alive
        Tensor imported = DLPack.fromDLPack(managed);
        assertArrayEquals(new long[] {2, 2}, imported.shape());
        assertArrayEquals(new long[] {3, 1}, imported.strides());
        assertArrayEquals(new float[] {2, 3, 5, 6}, imported.toFloatArray());
        imported.close();  // its deleter drops the last reference

        try (Tensor a = Tensor.fromArray(new float[] {7, 8}, DType.FLOAT32, CPU, 2)) {
            MemorySegment legacy = DLPack.toLegacyDLPack(a);
            try (Tensor b = DLPack.fromLegacyDLPack(legacy)) {
                b.copyFromArray(new float[] {1, 1});
                assertArrayEquals(new float[] {1, 1}, a.toFloatArray(), "import shares the exporter's memory");
            }
        }
    }

    @Test
    void dlpackDeleterRunsExactlyOnceAfterTheLastHolder() throws Exception {
        try (Arena arena = Arena.ofShared()) {
            MemorySegment memory = arena.allocate(4L * 8, 16);
            for (int i = 0; i < 8; i++) memory.setAtIndex(ValueLayout.JAVA_FLOAT, i, i);
            AtomicInteger deleted = new AtomicInteger();
            // The deleter a producer would pass: void deleter(DLManagedTensorVersioned*), counting its calls.
            MemorySegment deleter = Linker.nativeLinker().upcallStub(
                    MethodHandles.dropArguments(MethodHandles.lookup()
                            .findVirtual(AtomicInteger.class, "incrementAndGet", MethodType.methodType(int.class))
                            .bindTo(deleted).asType(MethodType.methodType(void.class)), 0, MemorySegment.class),
                    FunctionDescriptor.ofVoid(ValueLayout.ADDRESS), arena);
            // DLManagedTensorVersioned {version, manager_ctx, deleter, flags, DLTensor} built by hand, as a
            // foreign producer would: a 1-d float32 tensor of 8, strides NULL, read-only.
            MemorySegment shape = arena.allocateFrom(ValueLayout.JAVA_LONG, 8);
            MemorySegment managed = arena.allocate(32 + 48, 8);
            managed.set(ValueLayout.JAVA_INT, 0, 1);
            managed.set(ValueLayout.JAVA_INT, 4, 0);
            managed.set(ValueLayout.ADDRESS, 16, deleter);
            managed.set(ValueLayout.JAVA_LONG, 24, 1L);  // DLPACK_FLAG_BITMASK_READ_ONLY
            managed.set(ValueLayout.ADDRESS, 32, memory);
            managed.set(ValueLayout.JAVA_INT, 40, 1);  // kDLCPU
            managed.set(ValueLayout.JAVA_INT, 44, 0);
            managed.set(ValueLayout.JAVA_INT, 48, 1);  // ndim
            managed.set(ValueLayout.JAVA_BYTE, 52, (byte) 2);  // kDLFloat
            managed.set(ValueLayout.JAVA_BYTE, 53, (byte) 32);
            managed.set(ValueLayout.JAVA_SHORT, 54, (short) 1);
            managed.set(ValueLayout.ADDRESS, 56, shape);
            managed.set(ValueLayout.ADDRESS, 64, MemorySegment.NULL);
            managed.set(ValueLayout.JAVA_LONG, 72, 0L);

            Tensor imported = DLPack.fromDLPack(managed);
            assertTrue(imported.isReadOnly());
            assertArrayEquals(new float[] {0, 1, 2, 3, 4, 5, 6, 7}, imported.toFloatArray());
            assertThrows(IllegalStateException.class, () -> imported.copyFromArray(new float[8]));
            MemorySegment reexport = DLPack.toDLPack(imported.slice(0, 2, 6));
            imported.close();
            assertEquals(0, deleted.get(), "the re-export still holds the producer's memory");
            try (Tensor again = DLPack.fromDLPack(reexport)) {
                assertTrue(again.isReadOnly(), "read-only travels with the export");
                assertArrayEquals(new float[] {2, 3, 4, 5}, again.toFloatArray());
            }
            assertEquals(1, deleted.get(), "deleter runs exactly once, after the last holder");

            // A malformed struct is refused and stays the caller's: its deleter is not called.
            managed.set(ValueLayout.JAVA_INT, 0, 2);  // DLPack major version 2
            assertThrows(FlashAttnException.InvalidArgument.class, () -> DLPack.fromDLPack(managed));
            assertEquals(1, deleted.get());
        }
    }

    @Test
    void attentionRunsOnWrappedAndImportedTensors() {
        AttentionOptions options = AttentionOptions.builder().causal(true).build();
        try (Tensor q = Tensor.randn(DType.FLOAT32, CPU, 1, 1, 16, 2, 8);
             Tensor k = Tensor.randn(DType.FLOAT32, CPU, 2, 1, 16, 2, 8);
             Tensor v = Tensor.randn(DType.FLOAT32, CPU, 3, 1, 16, 2, 8);
             AttentionOutput expected = Attention.forward(q, k, v, options);
             Tensor qImported = DLPack.fromDLPack(DLPack.toDLPack(q));
             Arena arena = Arena.ofConfined()) {
            MemorySegment kMemory = arena.allocate(4L * 16 * 2 * 8, 64);
            k.copyTo(kMemory);
            try (Tensor kWrapped = Tensor.wrap(kMemory, DType.FLOAT32, 1, 16, 2, 8);
                 AttentionOutput got = Attention.forward(qImported, kWrapped, v, options)) {
                assertArrayEquals(expected.out().toFloatArray(), got.out().toFloatArray());
            }
        }
    }

    @Test
    void int32TensorsCrossDLPack() {
        try (Tensor offsets = Tensor.fromInts(new int[] {0, 5, 5, 17}, CPU, 4);
             Tensor imported = DLPack.fromDLPack(DLPack.toDLPack(offsets))) {
            assertEquals(DType.INT32, imported.dtype());
            assertArrayEquals(new int[] {0, 5, 5, 17}, imported.toIntArray());
        }
    }

    @Test
    void wrappedMemoryCannotBeExported() {
        try (Arena arena = Arena.ofConfined(); Tensor t = Tensor.wrap(arena.allocate(16, 8), DType.FLOAT32, 4)) {
            assertThrows(FlashAttnException.InvalidArgument.class, () -> DLPack.toDLPack(t));
        }
    }
}
