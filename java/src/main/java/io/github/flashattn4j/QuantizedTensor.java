package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.fa4j_quantize_args;
import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Objects;

/**
 * A pre-quantized input of {@link QuantizationMode quantized attention}: the quantized data
 * ({@code [batch, seq, heads, head_dim]} in the mode's dtype for its operand: {@link DType#INT8},
 * {@link DType#INT4} or {@link DType#FLOAT8_E4M3FN}), its float32 scale tensor (the shape the mode gives
 * the operand, {@link QuantizationMode#scaleShape}), and for keys the mean that was subtracted before
 * quantizing (K smoothing), if any, used to give lse exactly (out does not depend on it). Pass it to
 * {@link Attention#forward(AttentionInput, AttentionInput, AttentionInput, AttentionOptions)} in place of the
 * plain tensor, with the options' {@link AttentionOptions.Builder#quantization mode}: for example a
 * key-value cache quantized once by {@link #quantize} and reused for every decoding step.
 *
 * <p>The record holds references only: the caller owns the tensors and keeps them open while calls use
 * them; {@link #close()} closes all of them.
 *
 * @param data  the quantized values
 * @param scale their float32 scales (dequantized value = value · scale of its group)
 * @param mean  keys only, may be null: float32 {@code [batch, heads_kv, head_dim]}, the mean subtracted
 *              from k before quantizing
 */
public record QuantizedTensor(Tensor data, Tensor scale, Tensor mean) implements AttentionInput, AutoCloseable {

    /** Which input of attention a tensor is. */
    public enum Operand {
        Q, K, V;

        int nativeCode() {
            return switch (this) {
                case Q -> flashattn4j_h.FA4J_QUANT_OPERAND_Q();
                case K -> flashattn4j_h.FA4J_QUANT_OPERAND_K();
                case V -> flashattn4j_h.FA4J_QUANT_OPERAND_V();
            };
        }
    }

    /**
     * @throws NullPointerException if {@code data} or {@code scale} is null
     */
    public QuantizedTensor {
        Objects.requireNonNull(data, "data");
        Objects.requireNonNull(scale, "scale");
    }

    /** Quantized data and its scales, without a key mean. */
    public static QuantizedTensor of(Tensor data, Tensor scale) {
        return new QuantizedTensor(data, scale, null);
    }

    /**
     * Quantizes {@code input} ({@code [batch, seq, heads, head_dim]}, float32, float16 or bfloat16) as
     * quantized attention in {@code mode} would quantize that operand itself, bit for bit: keys with K
     * smoothing (their mean returned in {@link #mean()}). Queries are never Q-smoothed here (the INT4
     * modes' Q smoothing needs the call to quantize q itself). The new tensors live on the input's device.
     *
     * @throws FlashAttnException.InvalidArgument for an input or mode that does not fit (v in an FP16 P·v
     *                                            mode is not quantized)
     * @throws FlashAttnException.Unsupported     for CUDA tensors (no CUDA quantization kernels yet)
     */
    public static QuantizedTensor quantize(Tensor input, QuantizationMode mode, Operand operand) {
        return quantize(input, mode, operand, true);
    }

    /**
     * {@link #quantize(Tensor, QuantizationMode, Operand)} with K smoothing on or off ({@code smoothK} is
     * ignored for q and v).
     */
    public static QuantizedTensor quantize(Tensor input, QuantizationMode mode, Operand operand, boolean smoothK) {
        Objects.requireNonNull(input, "input");
        Objects.requireNonNull(mode, "mode");
        Objects.requireNonNull(operand, "operand");
        if (mode == QuantizationMode.NONE) throw new FlashAttnException.InvalidArgument("mode NONE quantizes nothing");
        if (input.dim() != 4) {
            throw new FlashAttnException.InvalidArgument("input must be [batch, seq, heads, head_dim], has " + input.dim() + " dimensions");
        }
        long[] s = input.shape();
        long[] scaleShape = mode.scaleShape(operand, s[0], s[1], s[2], s[3]);
        if (scaleShape == null) {
            throw new FlashAttnException.InvalidArgument(mode + " does not quantize v: P·v runs in float16 there (pass v"
                    + " as a plain tensor)");
        }
        boolean withMean = operand == Operand.K && smoothK;
        Device device = input.device();
        try (TensorScope onFailure = TensorScope.open()) {
            Tensor data = onFailure.track(Tensor.empty(mode.dtype(operand), device, s));
            Tensor scale = onFailure.track(Tensor.empty(DType.FLOAT32, device, scaleShape));
            Tensor mean = withMean ? onFailure.track(Tensor.empty(DType.FLOAT32, device, s[0], s[2], s[3])) : null;
            try (Arena arena = Arena.ofConfined(); Storage.Lease in = input.lease(); Storage.Lease a = data.lease();
                 Storage.Lease b = scale.lease(); Storage.Lease c = mean != null ? mean.lease() : null) {
                NativeCalls.ensureLoaded();
                MemorySegment args = fa4j_quantize_args.allocate(arena);
                fa4j_quantize_args.struct_size(args, fa4j_quantize_args.layout().byteSize());
                fa4j_quantize_args.mode(args, mode.nativeCode());
                fa4j_quantize_args.operand(args, operand.nativeCode());
                fa4j_quantize_args.flags(args, operand == Operand.K && !smoothK ? flashattn4j_h.FA4J_QUANT_NO_SMOOTH_K() : 0);
                fa4j_quantize_args.input(args, TensorDescriptors.describe(input, arena));
                fa4j_quantize_args.output(args, TensorDescriptors.describe(data, arena));
                fa4j_quantize_args.scale(args, TensorDescriptors.describe(scale, arena));
                if (mean != null) fa4j_quantize_args.mean(args, TensorDescriptors.describe(mean, arena));
                NativeCalls.check(flashattn4j_h.fa4j_quantize(args, MemorySegment.NULL));
            }
            onFailure.releaseAll();
            return new QuantizedTensor(data, scale, mean);
        }
    }

    /** Closes the data, the scales and the mean. */
    @Override
    public void close() {
        data.close();
        scale.close();
        if (mean != null) mean.close();
    }
}
