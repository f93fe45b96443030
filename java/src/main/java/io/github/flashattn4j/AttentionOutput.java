package io.github.flashattn4j;

/**
 * Result of {@link Attention#forward}: both tensors are owned by the caller; closing this closes both.
 *
 * @param out [batch, seqlen_q, heads_q, head_dim], the dtype of q
 * @param lse [batch, heads_q, seqlen_q], float32: logsumexp of each scaled score row (-inf for rows with
 *            no attendable key); the backward pass needs it
 */
public record AttentionOutput(Tensor out, Tensor lse) implements AutoCloseable {
    @Override
    public void close() {
        try (lse) {
            out.close();
        }
    }
}
