package io.github.flashattn4j;

/**
 * Which kernels run an attention call ({@link AttentionOptions.Builder#kernelFamily}). {@link #AUTO}, the
 * default, picks the best kernels the tensors' device and the call allow; the others force a family, for
 * tests and comparisons (for example the sm_80 kernels on a Hopper GPU, to compare them with the Hopper
 * ones). A family that cannot run the call (one for CUDA tensors given CPU tensors, {@link #SM90} on a GPU
 * that is not a Hopper part) is refused with {@link FlashAttnException.Unsupported} saying why, as
 * {@link Attention#checkForward} reports beforehand.
 */
public enum KernelFamily {
    /** The best kernels for the device and the call. */
    AUTO(0),
    /** The CPU backend; CPU tensors only. */
    CPU(1),
    /** The FlashAttention-2 style kernels on {@code mma.sync}: CUDA tensors, any GPU from compute capability 8.0. */
    SM80(2),
    /** The Hopper kernels on TMA and {@code wgmma}: CUDA tensors on a compute capability 9.0 GPU. */
    SM90(3);

    private final int nativeCode;

    KernelFamily(int nativeCode) {
        this.nativeCode = nativeCode;
    }

    /** The {@code fa4j_kernel_family} value. */
    int nativeCode() {
        return nativeCode;
    }
}
