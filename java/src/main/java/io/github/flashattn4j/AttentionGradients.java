package io.github.flashattn4j;

/**
 * Result of {@link Attention#backward}: gradients with the shapes and dtype of q, k and v, owned by the
 * caller; closing this closes all three.
 */
public record AttentionGradients(Tensor dq, Tensor dk, Tensor dv) implements AutoCloseable {
    @Override
    public void close() {
        try (dv; dk) {
            dq.close();
        }
    }
}
