package io.github.flashattn4j;

/**
 * An input of an attention forward: a plain {@link Tensor} (float32, float16 or bfloat16, which quantized
 * attention quantizes itself) or a {@link QuantizedTensor} (pre-quantized data with its scales, for
 * {@link QuantizationMode quantized attention}). The dense {@link Attention#forward} methods take q, k and v
 * as attention inputs, so that plain and pre-quantized inputs mix freely; plain tensors are passed as before.
 */
public sealed interface AttentionInput permits Tensor, QuantizedTensor {}
