package io.github.flashattn4j.tests;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.DLPack;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.FlashAttnException;
import io.github.flashattn4j.QuantizationMode;
import io.github.flashattn4j.QuantizedTensor;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Quantized attention on cuda:0 before its kernels exist: every mode is refused as
 * {@link FlashAttnException.Unsupported} by the dispatch (query and call alike, naming the mode), as is
 * quantizing CUDA tensors; the quantized dtypes themselves move between host and device and through
 * DLPack unchanged.
 */
class QuantizedAttentionGpuTest extends GpuTest {

    @ParameterizedTest
    @EnumSource(value = QuantizationMode.class, names = "NONE", mode = EnumSource.Mode.EXCLUDE)
    void everyModeIsRefusedOnCuda(QuantizationMode mode) {
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, 1, 1, 64, 4, 64);
            Tensor k = scope.randn(DType.BFLOAT16, CUDA0, 2, 1, 64, 2, 64);
            Tensor v = scope.randn(DType.BFLOAT16, CUDA0, 3, 1, 64, 2, 64);
            AttentionOptions o = AttentionOptions.builder().quantization(mode).build();
            Attention.Support support = Attention.checkForward(q, k, v, o);
            assertFalse(support.supported());
            FlashAttnException e = assertThrows(FlashAttnException.Unsupported.class, () -> Attention.forward(q, k, v, o));
            assertEquals(e.getMessage(), support.reason());
            assertTrue(e.getMessage().contains("quantized attention (" + mode.name() + ")"), e.getMessage());
            assertThrows(FlashAttnException.Unsupported.class, () -> QuantizedTensor.quantize(k, mode, QuantizedTensor.Operand.K));
        }
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"FLOAT8_E4M3FN", "FLOAT8_E5M2", "INT8", "INT4"})
    void quantizedDtypesCrossDevicesAndDLPack(DType dtype) {
        float[] v = new float[4 * 6 * 8];
        for (int i = 0; i < v.length; i++) v[i] = i % 15 - 7;
        try (TensorScope scope = TensorScope.open()) {
            Tensor host = scope.fromArray(v, dtype, io.github.flashattn4j.Device.CPU, 4, 6, 8);
            Tensor device = scope.track(host.to(CUDA0));
            assertArrayEquals(host.toFloatArray(), device.toFloatArray());
            assertArrayEquals(host.slice(1, 2, 4).toFloatArray(), device.slice(1, 2, 4).toFloatArray());
            try (Tensor imported = DLPack.fromDLPack(DLPack.toDLPack(device))) {
                assertEquals(dtype, imported.dtype());
                assertArrayEquals(host.toFloatArray(), imported.toFloatArray());
            }
        }
    }

    @Test
    void prequantizedCudaInputsAreRefusedToo() {
        try (TensorScope scope = TensorScope.open()) {
            Tensor q = scope.randn(DType.BFLOAT16, CUDA0, 1, 1, 64, 2, 64);
            Tensor k8 = scope.zeros(DType.FLOAT8_E4M3FN, CUDA0, 1, 64, 2, 64);
            Tensor scale = scope.zeros(DType.FLOAT32, CUDA0, 1, 2);
            Tensor v8 = scope.zeros(DType.FLOAT8_E4M3FN, CUDA0, 1, 64, 2, 64);
            AttentionOptions o = AttentionOptions.builder().quantization(QuantizationMode.FP8).build();
            assertThrows(FlashAttnException.Unsupported.class,
                    () -> Attention.forward(q, QuantizedTensor.of(k8, scale), QuantizedTensor.of(v8, scale), o));
        }
    }
}
