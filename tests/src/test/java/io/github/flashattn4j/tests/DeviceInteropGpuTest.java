package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.AttentionOutput;
import io.github.flashattn4j.Cuda;
import io.github.flashattn4j.CudaStream;
import io.github.flashattn4j.DLPack;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Stream-ordered device memory and zero-copy interop on CUDA: memory released right after queueing work
 * on another stream is not reused under that work; foreign device pointers and streams; DLPack with CUDA
 * tensors; raw byte copies to and from the device; the pool's accounting.
 */
class DeviceInteropGpuTest extends GpuTest {

    private static final AttentionOptions CAUSAL = AttentionOptions.builder().causal(true).build();

    /**
     * q lives on the default stream, is used by a long forward on another stream, and is closed at once; new
     * tensors of the same size are then allocated and overwritten on the default stream. If the release were
     * not ordered after the other stream's work, the pool would hand q's memory to them while the forward
     * still reads it, and the forward's output would differ from the reference.
     */
    @Test
    void memoryReleasedWhileAnotherStreamUsesItIsNotReusedUnderIt() {
        long[] shape = {4, 4096, 16, 128};
        try (TensorScope scope = TensorScope.open(); CudaStream stream = CudaStream.create(CUDA0)) {
            Tensor k = scope.randn(DType.BFLOAT16, CUDA0, 2, shape);
            Tensor v = scope.randn(DType.BFLOAT16, CUDA0, 3, shape);
            float[] expected;
            try (Tensor q = Tensor.randn(DType.BFLOAT16, CUDA0, 1, shape); AttentionOutput o = Attention.forward(q, k, v, CAUSAL)) {
                expected = o.out().toFloatArray();
            }
            for (int round = 0; round < 3; round++) {
                Tensor q = Tensor.randn(DType.BFLOAT16, CUDA0, 1, shape);
                AttentionOutput o = scope.track(Attention.forward(q, k, v, CAUSAL, stream));
                q.close();  // while the forward on `stream` may still read it
                for (int i = 0; i < 4; i++) scope.track(Tensor.full(1e4f, DType.BFLOAT16, CUDA0, shape));
                assertArrayEquals(expected, o.out().toFloatArray(stream), "round " + round);
            }
        }
    }

    @Test
    void outputsAllocatedOnAStreamAreReleasedInItsOrder() {
        long[] shape = {2, 1024, 8, 64};
        try (TensorScope scope = TensorScope.open(); CudaStream stream = CudaStream.create(CUDA0)) {
            Tensor q = scope.randn(DType.FLOAT16, CUDA0, 1, shape);
            Tensor k = scope.randn(DType.FLOAT16, CUDA0, 2, shape);
            Tensor v = scope.randn(DType.FLOAT16, CUDA0, 3, shape);
            float[] expected;
            try (AttentionOutput o = Attention.forward(q, k, v, CAUSAL)) {
                expected = o.out().toFloatArray();
            }
            Cuda.PoolInfo before = Cuda.poolInfo(0);
            for (int i = 0; i < 200; i++) {
                try (AttentionOutput o = Attention.forward(q, k, v, CAUSAL, stream)) {
                    if (i % 50 == 0) assertArrayEquals(expected, o.out().toFloatArray(stream));
                }
                try (Tensor scratch = Tensor.empty(DType.FLOAT16, stream, shape)) {
                    Attention.forwardInto(q, k, v, scratch, scope.track(Tensor.empty(DType.FLOAT32, stream, 2, 8, 1024)),
                            CAUSAL, stream);
                }
            }
            stream.synchronize();
            Cuda.PoolInfo after = Cuda.poolInfo(0);
            // 200 lse tensors are still tracked by the scope; everything else went back to the pool.
            long lseBytes = 200L * 2 * 8 * 1024 * 4;
            assertTrue(after.usedBytes() - before.usedBytes() <= lseBytes + (1 << 20),
                    "pool use grew from " + before + " to " + after);
            assertTrue(after.reservedBytes() >= after.usedBytes());
        }
        Cuda.trimPool(0, 0);
    }

    @Test
    void foreignDevicePointerAndForeignStream() {
        long[] shape = {1, 256, 4, 64};
        try (TensorScope scope = TensorScope.open(); CudaStream owner = CudaStream.create(CUDA0)) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, 1, shape);
            Tensor k = scope.randn(DType.BFLOAT16, CUDA0, 2, shape);
            Tensor v = scope.randn(DType.BFLOAT16, CUDA0, 3, shape);
            float[] expected;
            try (AttentionOutput o = Attention.forward(q, k, v, CAUSAL)) {
                expected = o.out().toFloatArray();
            }
            // Another library's allocation and stream, seen through raw handles.
            Tensor backing = scope.empty(DType.BFLOAT16, CUDA0, shape);
            long address = DLPackAddress.of(backing);
            AtomicInteger released = new AtomicInteger();
            CudaStream foreign = CudaStream.wrap(CUDA0, owner.nativeHandle());
            Tensor out = Tensor.wrapDevice(CUDA0, address, 256L * 4 * 64 * 2, DType.BFLOAT16, shape, null,
                    released::incrementAndGet);
            Attention.forwardInto(q, k, v, out, scope.track(Tensor.empty(DType.FLOAT32, CUDA0, 1, 4, 256)), CAUSAL, foreign);
            out.close();  // waits for the foreign stream before handing the memory back
            assertEquals(1, released.get());
            assertArrayEquals(expected, backing.toFloatArray());
            foreign.close();  // waits, never destroys: the owner's stream still works
            owner.synchronize();
            assertThrows(IllegalArgumentException.class,
                    () -> Tensor.wrapDevice(CUDA0, address, 100, DType.BFLOAT16, shape, null, null));
        }
    }

    @Test
    void dlpackWithCudaTensors() {
        long[] shape = {2, 128, 4, 64};
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, 1, shape);
            Tensor k = scope.randn(DType.BFLOAT16, CUDA0, 2, shape);
            Tensor v = scope.randn(DType.BFLOAT16, CUDA0, 3, shape);
            float[] expected;
            try (AttentionOutput o = Attention.forward(q, k, v, CAUSAL)) {
                expected = o.out().toFloatArray();
            }
            MemorySegment managed = DLPack.toDLPack(q);
            MemorySegment legacy = DLPack.toLegacyDLPack(k);
            try (Tensor qi = DLPack.fromDLPack(managed); Tensor ki = DLPack.fromLegacyDLPack(legacy);
                 AttentionOutput o = Attention.forward(qi, ki, v, CAUSAL)) {
                assertEquals(CUDA0, qi.device());
                assertArrayEquals(expected, o.out().toFloatArray());
            }
            // Exported, the exporter closed first: the consumer's deleter frees the memory later.
            Tensor temporary = Tensor.randn(DType.BFLOAT16, CUDA0, 5, shape);
            float[] values = temporary.toFloatArray();
            MemorySegment kept = DLPack.toDLPack(temporary);
            temporary.close();
            try (Tensor back = DLPack.fromDLPack(kept)) {
                assertArrayEquals(values, back.toFloatArray());
            }
        }
    }

    @Test
    void rawBytesToAndFromTheDevice() {
        short[] bits = new short[2 * 3 * 8];
        for (int i = 0; i < bits.length; i++) bits[i] = (short) (0x3c00 + i);  // fp16 patterns
        try (Tensor t = Tensor.empty(DType.FLOAT16, CUDA0, 2, 3, 8); Arena arena = Arena.ofConfined()) {
            t.copyFromShorts(bits);
            assertArrayEquals(bits, t.toShortArray());
            MemorySegment host = arena.allocate(bits.length * 2L);
            t.copyTo(host);
            ByteBuffer buffer = ByteBuffer.allocateDirect(bits.length * 2).order(ByteOrder.nativeOrder());
            t.copyTo(buffer);
            buffer.flip();
            assertEquals(bits[7], buffer.getShort(14));
            Tensor view = t.slice(2, 0, 4);  // non-contiguous: read through staging
            short[] expected = new short[2 * 3 * 4];
            for (int i = 0, j = 0; i < bits.length; i++) if (i % 8 < 4) expected[j++] = bits[i];
            assertArrayEquals(expected, view.toShortArray());
            assertThrows(UnsupportedOperationException.class, t::asSegment);
            try (Tensor u = Tensor.empty(DType.FLOAT16, CUDA0, 2, 3, 8)) {
                u.copyFrom(host);
                assertArrayEquals(bits, u.toShortArray());
            }
        }
    }

    /** The device address of a tensor, as another library would hold it: read from a DLPack export. */
    private static final class DLPackAddress {
        static long of(Tensor t) {
            MemorySegment managed = DLPack.toDLPack(t);
            try {
                return managed.reinterpret(40).get(java.lang.foreign.ValueLayout.ADDRESS, 32).address();
            } finally {
                DLPack.delete(managed);
            }
        }
    }
}
