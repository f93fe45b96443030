/**
 * flashattn4j: FlashAttention for the JVM.
 *
 * <p>{@link io.github.flashattn4j.Tensor} owns off-heap host or device memory;
 * {@link io.github.flashattn4j.Attention} runs attention forward and backward on the tensors' device, on CUDA
 * optionally ordered on a {@link io.github.flashattn4j.CudaStream}.
 * The native library inside this module's JAR is loaded on first use. Run with
 * {@code --enable-native-access=io.github.flashattn4j,io.github.flashattn4j.bindings} (module path) or
 * {@code --enable-native-access=ALL-UNNAMED} (class path).
 */
module io.github.flashattn4j {
    requires io.github.flashattn4j.bindings;

    exports io.github.flashattn4j;
}
