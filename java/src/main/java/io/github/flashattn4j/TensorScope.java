package io.github.flashattn4j;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * Closes, in reverse order, everything made through it or handed to {@link #track}: one scope per training
 * step leaks nothing, however the step ends.
 *
 * <pre>{@code
 * try (TensorScope scope = TensorScope.open()) {
 *     Tensor q = scope.randn(DType.BFLOAT16, device, 1, batch, seq, heads, dim);
 *     AttentionOutput o = scope.track(Attention.forward(q, k, v, options));
 *     ...
 * } // everything above is freed here
 * }</pre>
 *
 * Thread-safe. Closing an already-closed tensor is harmless, so tensors may also be closed early. Closing
 * the scope while calls on other threads still use its tensors is safe too: every tensor is closed at once
 * for new calls, and the memory of those in use is freed when the calls using them return (see
 * {@link Tensor}, "Threads").
 */
public final class TensorScope implements AutoCloseable {

    private final List<AutoCloseable> resources = new ArrayList<>();
    private boolean closed;

    private TensorScope() {}

    /** A new, empty scope. */
    public static TensorScope open() {
        return new TensorScope();
    }

    /** Makes this scope close {@code resource}; returns it. If the scope is closed, closes it and throws. */
    public <T extends AutoCloseable> T track(T resource) {
        Objects.requireNonNull(resource, "resource");
        synchronized (resources) {
            if (!closed) {
                resources.add(resource);
                return resource;
            }
        }
        closeQuietly(resource);
        throw new IllegalStateException("scope is closed");
    }

    /** {@link Tensor#empty}, owned by this scope. */
    public Tensor empty(DType dtype, Device device, long... shape) {
        return track(Tensor.empty(dtype, device, shape));
    }

    /** {@link Tensor#zeros}, owned by this scope. */
    public Tensor zeros(DType dtype, Device device, long... shape) {
        return track(Tensor.zeros(dtype, device, shape));
    }

    /** {@link Tensor#randn}, owned by this scope. */
    public Tensor randn(DType dtype, Device device, long seed, long... shape) {
        return track(Tensor.randn(dtype, device, seed, shape));
    }

    /** {@link Tensor#fromArray}, owned by this scope. */
    public Tensor fromArray(float[] values, DType dtype, Device device, long... shape) {
        return track(Tensor.fromArray(values, dtype, device, shape));
    }

    /** {@link Tensor#fromInts}, owned by this scope. */
    public Tensor fromInts(int[] values, Device device, long... shape) {
        return track(Tensor.fromInts(values, device, shape));
    }

    /** Number of resources tracked so far. */
    public int size() {
        synchronized (resources) {
            return resources.size();
        }
    }

    /** Stops tracking everything without closing it: ownership passes back to the caller. */
    void releaseAll() {
        synchronized (resources) {
            resources.clear();
        }
    }

    /**
     * Closes every tracked resource, newest first. Idempotent. Tensors never fail to close (those in use
     * on other threads are freed when their calls return); if other resources fail to close (a stream whose
     * work reported an error), the rest are still closed and the first failure is thrown with the others
     * suppressed.
     */
    @Override
    public void close() {
        List<AutoCloseable> toClose;
        synchronized (resources) {
            if (closed) return;
            closed = true;
            toClose = new ArrayList<>(resources);
            resources.clear();
        }
        RuntimeException failure = null;
        for (int i = toClose.size() - 1; i >= 0; i--) {
            try {
                toClose.get(i).close();
            } catch (Exception e) {
                if (failure == null) failure = e instanceof RuntimeException r ? r : new IllegalStateException(e);
                else failure.addSuppressed(e);
            }
        }
        if (failure != null) throw failure;
    }

    private static void closeQuietly(AutoCloseable resource) {
        try {
            resource.close();
        } catch (Exception ignored) {
            // The caller gets the "scope is closed" error, which explains more than this one would.
        }
    }
}
