package io.github.flashattn4j.tests;

import io.github.flashattn4j.Cuda;
import io.github.flashattn4j.CudaStream;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Device memory: host → device → host round trips for every dtype (bit-exact), device-to-device copies,
 * views of device tensors, fills, dtype conversion across devices, copies on a stream, memory info.
 */
class DeviceMemoryGpuTest extends GpuTest {

    /** Gaussian values plus the special ones every dtype must carry through unchanged. */
    private static float[] values(int n, long seed) {
        float[] v = gaussian(seed, n);
        float[] special = {0f, -0f, 1f, -1f, 1000f, 1e-3f, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, Float.NaN};
        System.arraycopy(special, 0, v, 0, special.length);
        return v;
    }

    @ParameterizedTest
    @EnumSource(DType.class)
    void hostToDeviceToHostIsBitExact(DType dtype) {
        float[] v = values(3 * 5 * 7 * 8, 11);
        try (TensorScope scope = TensorScope.open()) {
            Tensor host = scope.fromArray(v, dtype, Device.CPU, 3, 5, 7, 8);
            float[] rounded = host.toFloatArray();  // v rounded to the dtype, on the host
            Tensor device = scope.track(host.to(CUDA0));
            assertEquals(CUDA0, device.device());
            assertArrayEquals(rounded, device.toFloatArray(), "device copy of " + dtype);
            assertArrayEquals(rounded, scope.track(device.to(Device.CPU)).toFloatArray(), "round trip of " + dtype);
            // Made directly on the device, the same rounding happens (on the host, before the copy).
            assertArrayEquals(rounded, scope.fromArray(v, dtype, CUDA0, 3, 5, 7, 8).toFloatArray());
            // copyFrom between devices, same dtype (the byte-copy path).
            Tensor target = scope.empty(dtype, CUDA0, 3, 5, 7, 8);
            target.copyFrom(host);
            assertArrayEquals(rounded, target.toFloatArray());
            Tensor back = scope.zeros(dtype, Device.CPU, 3, 5, 7, 8);
            back.copyFrom(target);
            assertArrayEquals(rounded, back.toFloatArray());
        }
    }

    @ParameterizedTest
    @EnumSource(DType.class)
    void deviceToDeviceCopiesAreIndependent(DType dtype) {
        float[] v = values(4096, 12);
        try (TensorScope scope = TensorScope.open()) {
            Tensor a = scope.fromArray(v, dtype, CUDA0, 64, 64);
            float[] expected = a.toFloatArray();
            Tensor b = scope.track(a.to(CUDA0));
            Tensor c = scope.empty(dtype, CUDA0, 64, 64);
            c.copyFrom(a);
            a.fill(Float.NaN);  // the copies must not share memory with a
            assertArrayEquals(expected, b.toFloatArray());
            assertArrayEquals(expected, c.toFloatArray());
            assertTrue(Float.isNaN(a.toFloatArray()[17]));
        }
    }

    @Test
    void viewsOfDeviceTensorsReadLikeHostViews() {
        float[] v = new float[4 * 6 * 8];
        for (int i = 0; i < v.length; i++) v[i] = i;
        try (TensorScope scope = TensorScope.open()) {
            Tensor host = scope.fromArray(v, DType.FLOAT32, Device.CPU, 4, 6, 8);
            Tensor device = scope.fromArray(v, DType.FLOAT32, CUDA0, 4, 6, 8);
            assertArrayEquals(host.slice(1, 2, 5).toFloatArray(), device.slice(1, 2, 5).toFloatArray());
            assertArrayEquals(host.transpose(0, 2).toFloatArray(), device.transpose(0, 2).toFloatArray());
            assertArrayEquals(host.select(2, 3).toFloatArray(), device.select(2, 3).toFloatArray());
            assertArrayEquals(host.reshape(24, 8).slice(0, 5, 9).toFloatArray(), device.reshape(24, 8).slice(0, 5, 9).toFloatArray());
            assertArrayEquals(host.slice(2, 1, 7).transpose(0, 1).toFloatArray(), device.slice(2, 1, 7).transpose(0, 1).toFloatArray());

            // Writing through a contiguous device view changes the base; a strided one is refused.
            float[] ones = new float[6 * 8];
            Arrays.fill(ones, 1f);
            device.select(0, 2).copyFromArray(ones);
            host.select(0, 2).copyFromArray(ones);
            assertArrayEquals(host.toFloatArray(), device.toFloatArray());
            assertThrows(UnsupportedOperationException.class, () -> device.transpose(0, 2).fill(0f));

            // Copying a device view to a new tensor compacts it.
            Tensor compact = scope.track(device.slice(1, 1, 3).to(CUDA0));
            assertTrue(compact.isContiguous());
            assertArrayEquals(host.slice(1, 1, 3).toFloatArray(), compact.toFloatArray());
        }
    }

    @Test
    void closingTheBaseInvalidatesDeviceViews() {
        Tensor base = Tensor.zeros(DType.BFLOAT16, CUDA0, 8, 8);
        Tensor view = base.slice(0, 2, 4);
        view.close();  // a view owns nothing: the base stays usable
        assertEquals(0f, base.toFloatArray()[0]);
        Tensor other = base.slice(1, 0, 4);
        base.close();
        base.close();
        assertTrue(other.isClosed());
        assertThrows(IllegalStateException.class, other::toFloatArray);
        assertThrows(IllegalStateException.class, base::toFloatArray);
    }

    @ParameterizedTest
    @EnumSource(DType.class)
    void zerosAndFullOnTheDevice(DType dtype) {
        try (TensorScope scope = TensorScope.open()) {
            for (float x : scope.zeros(dtype, CUDA0, 1000, 4).toFloatArray()) assertEquals(0f, x);
            float full = (float) Precision.round(2.5, dtype);  // the integer dtypes: 2
            for (float x : scope.track(Tensor.full(2.5f, dtype, CUDA0, 7, 10)).toFloatArray()) assertEquals(full, x);
            Tensor empty = scope.zeros(dtype, CUDA0, 0, 4);  // no elements, no memory
            assertEquals(0, empty.toFloatArray().length);
        }
    }

    @Test
    void dtypesConvertAcrossDevices() {
        float[] v = gaussian(13, 512);
        try (TensorScope scope = TensorScope.open()) {
            Tensor hostF32 = scope.fromArray(v, DType.FLOAT32, Device.CPU, 512);
            Tensor deviceBf16 = scope.empty(DType.BFLOAT16, CUDA0, 512);
            deviceBf16.copyFrom(hostF32);
            float[] got = deviceBf16.toFloatArray();
            for (int i = 0; i < v.length; i++) assertEquals(Precision.roundBf16(v[i]), got[i], "element " + i);
            Tensor deviceF16 = scope.empty(DType.FLOAT16, CUDA0, 512);
            deviceF16.copyFrom(deviceBf16);  // device bf16 -> device fp16, through the host
            float[] f16 = deviceF16.toFloatArray();
            for (int i = 0; i < v.length; i++) assertEquals(Float.float16ToFloat(Float.floatToFloat16(got[i])), f16[i]);
        }
    }

    @ParameterizedTest
    @EnumSource(DType.class)
    void copiesOnAStream(DType dtype) {
        float[] v = values(2 * 33 * 16, 14);
        try (TensorScope scope = TensorScope.open(); CudaStream stream = CudaStream.create(CUDA0)) {
            float[] rounded = scope.fromArray(v, dtype, Device.CPU, 2, 33, 16).toFloatArray();
            Tensor device = scope.empty(dtype, CUDA0, 2, 33, 16);
            device.copyFromArray(v, stream);
            assertArrayEquals(rounded, device.toFloatArray(stream));
            Tensor copy = scope.track(device.to(CUDA0, stream));
            assertArrayEquals(rounded, scope.track(copy.to(Device.CPU, stream)).toFloatArray());
            Tensor host = scope.zeros(dtype, Device.CPU, 2, 33, 16);
            host.copyFrom(copy, stream);
            assertArrayEquals(rounded, host.toFloatArray());
            Tensor fromHost = scope.empty(dtype, CUDA0, 2, 33, 16);
            fromHost.copyFrom(host, stream);
            assertArrayEquals(rounded, fromHost.toFloatArray(stream));
            // A strided view read on the stream, and a conversion on the stream.
            assertArrayEquals(scope.fromArray(v, dtype, Device.CPU, 2, 33, 16).transpose(0, 1).toFloatArray(),
                    device.transpose(0, 1).toFloatArray(stream));
            Tensor f32 = scope.empty(DType.FLOAT32, CUDA0, 2, 33, 16);
            f32.copyFrom(device, stream);
            assertArrayEquals(rounded, f32.toFloatArray(stream));
            // The default stream, named, works for the same calls.
            assertArrayEquals(rounded, device.toFloatArray(CudaStream.defaultStream(CUDA0)));
        }
    }

    /**
     * Device memory comes from the library's pool, which keeps what tensors release for reuse: the pool's
     * accounting sees an allocation and its release; trimming hands cached memory back to the driver.
     */
    @Test
    void poolAccountsForAllocationsAndTrimReturnsMemory() {
        long bytes = 256L << 20;
        Cuda.synchronize(0);
        Cuda.PoolInfo before = Cuda.poolInfo(0);
        Cuda.PoolInfo during;
        Cuda.MemoryInfo driverDuring;
        try (Tensor big = Tensor.empty(DType.FLOAT32, CUDA0, bytes / 4)) {
            during = Cuda.poolInfo(0);
            driverDuring = Cuda.memoryInfo(0);
            assertEquals(bytes / 4, big.numel());
        }
        Cuda.synchronize(0);  // the release is stream-ordered: it completes with the default stream's work
        Cuda.PoolInfo after = Cuda.poolInfo(0);
        Cuda.trimPool(0, 0);
        Cuda.PoolInfo trimmed = Cuda.poolInfo(0);
        Cuda.MemoryInfo driverTrimmed = Cuda.memoryInfo(0);
        System.out.printf("cuda:0 pool: used %d MiB before, %d MiB with a 256 MiB tensor, %d MiB after close; reserved %d MiB,"
                        + " %d MiB after trim; driver free %d MiB with the tensor, %d MiB after trim%n", before.usedBytes() >> 20,
                during.usedBytes() >> 20, after.usedBytes() >> 20, after.reservedBytes() >> 20, trimmed.reservedBytes() >> 20,
                driverDuring.freeBytes() >> 20, driverTrimmed.freeBytes() >> 20);
        assertTrue(during.usedBytes() - before.usedBytes() >= bytes, "allocation not visible in the pool's use");
        assertTrue(during.usedBytes() - after.usedBytes() >= bytes, "close did not return the memory to the pool");
        assertTrue(trimmed.reservedBytes() <= trimmed.usedBytes() + (64L << 20), "trim left the cache in the pool");
        // Other processes may allocate meanwhile; this margin is far below the 256 MiB given back.
        assertTrue(driverTrimmed.freeBytes() - driverDuring.freeBytes() >= (128L << 20), "trim did not return memory to the device");
    }
}
