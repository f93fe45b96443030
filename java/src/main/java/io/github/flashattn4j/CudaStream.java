package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.ref.Cleaner;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A CUDA stream: an ordered queue of work on one CUDA device ({@code cudaStream_t}).
 *
 * <p>Work given the same stream runs in the order it was queued. Attention calls that take a stream
 * ({@link Attention#forward(AttentionInput, AttentionInput, AttentionInput, AttentionOptions, CudaStream)} and the others) queue
 * their kernels on it and return before they finish; copies that take a stream
 * ({@link Tensor#toFloatArray(CudaStream)}, {@link Tensor#copyFrom(Tensor, CudaStream)},
 * {@link Tensor#copyFromArray(float[], CudaStream)}, {@link Tensor#to(Device, CudaStream)}) are queued
 * after everything already on the stream and return only once the copy (and so everything before it)
 * has finished. So "queue attention on a stream, then copy its output back on the same stream" needs no
 * other synchronization.
 *
 * <h2>Two kinds of stream</h2>
 * <ul>
 *   <li>{@link #create(Device)} makes a new stream that this object owns. It is non-blocking: it does
 *       <em>not</em> synchronize with the device's default stream, so work on it may overlap work on other
 *       streams. Results it produces must be read on the same stream, or after {@link #synchronize()};
 *       inputs written by calls that take no stream are ready before those calls return (their copies are
 *       synchronous), so they can be used on any stream right away.</li>
 *   <li>{@link #defaultStream(Device)} names the device's legacy default stream ({@code NULL}), on which
 *       every call that takes no stream runs. It is owned by nobody: {@link #close()} does nothing and it is
 *       never closed.</li>
 *   <li>{@link #wrap(Device, long)} names a stream that another library owns (a {@code cudaStream_t} from
 *       PyTorch, cuDNN, a JNI library...), so that our kernels are ordered on the framework's own stream.
 *       The wrapper never destroys it: {@link #close()} waits for the work queued on it and retires the
 *       wrapper. The owner must keep the stream alive until the wrapper is closed and until every tensor
 *       used on it has been closed (closing a tensor orders its release after the streams that used it).</li>
 * </ul>
 *
 * <h2>Tensors used on several streams</h2>
 * Device memory comes from the library's stream-ordered pool: a tensor is allocated in the order of a
 * stream (the default stream, or the one given to {@link Tensor#empty(DType, CudaStream, long...)} or to an
 * attention call that allocates its outputs), and closing it releases the memory in stream order, without
 * synchronizing anything. Every stream an attention call used a tensor on is remembered, and closing the
 * tensor orders the release after the work queued so far on each of them, so closing a tensor right after
 * queueing work on it, on any streams, is safe. Work queued on another library's stream with the tensor's
 * raw address (outside this library) is not known: synchronize that stream before closing the tensor.
 *
 * <h2>Closing</h2>
 * {@code close()} waits for the work queued on the stream to finish, then destroys it, so closing a stream
 * with work (or tensors still used by queued work) pending is safe. (While a call on another thread is
 * using the stream, that call does the waiting and destroying as it returns: see {@link #close()}.) It is idempotent; a closed stream
 * given to any call throws {@link IllegalStateException}, as a closed tensor does. An error that queued
 * work reported while finishing (for example a kernel fault) is thrown by {@code close()} as a
 * {@link FlashAttnException}, after the stream has been destroyed anyway. A stream nobody closed is
 * synchronized and destroyed when it becomes unreachable, but that is a backstop only: close streams, for
 * instance with try-with-resources.
 *
 * <h2>Threads</h2>
 * A stream may be shared between threads; work from several threads on one stream is ordered as the calls
 * happened. Closing a stream while a call on another thread is using it never fails: the stream is closed
 * for new calls at once, and destroyed when the running calls return (see {@link #close()}).
 *
 * <pre>{@code
 * try (CudaStream stream = CudaStream.create(Device.cuda(0))) {
 *     Attention.forwardInto(q, k, v, out, lse, options, stream);   // queued, returns at once
 *     float[] result = out.toFloatArray(stream);                    // waits for the forward, then copies
 * }
 * }</pre>
 */
public final class CudaStream implements AutoCloseable {

    private static final long CLOSED = 1L << 62;
    private static final ConcurrentMap<Integer, CudaStream> DEFAULT_STREAMS = new ConcurrentHashMap<>();

    private final Device device;
    private final long handle;  // 0: the legacy default stream
    // CLOSED bit | number of leases held (calls using the stream right now). Once CLOSED is set the count
    // only falls: close() destroys the stream if it saw no lease, else the release that empties the count.
    private final AtomicLong state = new AtomicLong();
    private final Release release;            // null for the default stream
    private final Cleaner.Cleanable cleanable;  // null for the default stream

    private CudaStream(Device device, long handle, boolean owned) {
        this.device = device;
        this.handle = handle;
        if (handle == 0) {
            this.release = null;
            this.cleanable = null;
        } else {
            this.release = new Release(device.index(), handle, owned);
            this.cleanable = Storage.CLEANER.register(this, release);
        }
    }

    /**
     * A new stream on a CUDA device, owned by the caller.
     *
     * @throws FlashAttnException.InvalidArgument if {@code device} is not a CUDA device, or does not exist
     * @throws FlashAttnException.NoDevice        if no CUDA device is usable
     */
    public static CudaStream create(Device device) {
        requireCuda(device);
        NativeCalls.ensureLoaded();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment holder = arena.allocate(ValueLayout.ADDRESS);
            NativeCalls.check(flashattn4j_h.fa4j_cuda_stream_create(device.index(), holder));
            long handle = holder.get(ValueLayout.ADDRESS, 0).address();
            if (handle == 0) throw new FlashAttnException.Cuda("fa4j_cuda_stream_create returned a null stream");
            try {
                return new CudaStream(device, handle, true);
            } catch (RuntimeException | Error e) {
                flashattn4j_h.fa4j_cuda_stream_destroy(device.index(), MemorySegment.ofAddress(handle));
                throw e;
            }
        }
    }

    /**
     * The legacy default stream of a CUDA device, where calls that take no stream run. Owned by nobody:
     * {@link #close()} does nothing. Whether the device exists is checked when the stream is used.
     *
     * @throws FlashAttnException.InvalidArgument if {@code device} is not a CUDA device
     */
    public static CudaStream defaultStream(Device device) {
        requireCuda(device);
        return DEFAULT_STREAMS.computeIfAbsent(device.index(), index -> new CudaStream(Device.cuda(index), 0, false));
    }

    /**
     * A stream owned by someone else, given as its raw {@code cudaStream_t} handle on {@code device}: our
     * kernels and copies given this wrapper are queued on it. Handle 0 is the device's legacy default
     * stream ({@link #defaultStream}). The wrapper does not own the stream: {@link #close()} waits for
     * its work and retires the wrapper, never destroys it; the owner must keep it alive until then (see
     * the class documentation). The handle cannot be checked here: a handle that is not a live stream of
     * {@code device} is undefined behaviour in the CUDA runtime, as it is for the owner's own calls.
     *
     * @throws FlashAttnException.InvalidArgument if {@code device} is not a CUDA device
     */
    public static CudaStream wrap(Device device, long handle) {
        requireCuda(device);
        if (handle == 0) return defaultStream(device);
        NativeCalls.ensureLoaded();
        return new CudaStream(device, handle, false);
    }

    /**
     * The raw {@code cudaStream_t} of this stream (0 for the legacy default stream), to hand to other
     * libraries so that their work is ordered with ours. Valid until this stream is closed.
     */
    public long nativeHandle() {
        return handle;
    }

    /** The CUDA device this stream queues work on. */
    public Device device() {
        return device;
    }

    /** Whether this is the device's legacy default stream (see {@link #defaultStream}). */
    public boolean isDefault() {
        return handle == 0;
    }

    /** Whether this stream was made by {@link #create} (and is destroyed by {@link #close()}). */
    public boolean isOwned() {
        return release != null && release.owned;
    }

    /** Whether {@link #close()} has been called on this (owned) stream; never true for a default stream. */
    public boolean isClosed() {
        return (state.get() & CLOSED) != 0;
    }

    /**
     * Waits until all work queued on this stream has finished.
     *
     * @throws IllegalStateException if the stream is closed
     * @throws FlashAttnException    if the CUDA runtime reports an error, including one of queued work
     */
    public void synchronize() {
        NativeCalls.ensureLoaded();  // a default stream may be the first thing a program touches
        try (Lease lease = lease()) {
            NativeCalls.check(flashattn4j_h.fa4j_cuda_stream_synchronize(device.index(), lease.handle()));
        }
    }

    /**
     * Waits for the work queued on this stream, then destroys it. Idempotent; does nothing for a default
     * stream. The stream counts as closed as soon as this is called: later calls given it throw
     * {@link IllegalStateException}.
     *
     * <p>If calls on other threads are using the stream right now (queueing work on it, copying on it,
     * or synchronizing it), this returns at once and the last of those calls, as it returns, waits for
     * the stream's work and destroys it, on its own thread. An error the queued work reported is then not
     * thrown anywhere: call {@link #synchronize()} before closing where that matters.
     *
     * @throws FlashAttnException if finishing the queued work or destroying the stream reported an error
     *                            (only when closed here, not deferred); the stream is closed regardless
     */
    @Override
    public void close() {
        if (isDefault()) return;
        long s;
        do {
            s = state.get();
            if ((s & CLOSED) != 0) return;
        } while (!state.compareAndSet(s, s | CLOSED));
        if (s != 0) return;  // deferred to the last lease's release
        cleanable.clean();
        FlashAttnException failure = release.failure;
        if (failure != null) throw failure;
    }

    @Override
    public String toString() {
        if (isDefault()) return "CudaStream(" + device + ", default)";
        return "CudaStream(" + device + ", 0x" + Long.toHexString(handle) + (isClosed() ? ", closed" : "") + ")";
    }

    // ---------------------------------------------------------------------------------------------
    // Package-private access for native calls
    // ---------------------------------------------------------------------------------------------

    /** Holds this stream open for one native call; throws if it is closed. */
    Lease lease() {
        long s;
        do {
            s = state.get();
            if ((s & CLOSED) != 0) throw new IllegalStateException(this + " has been closed");
        } while (!state.compareAndSet(s, s + 1));
        return new Lease(this);
    }

    /**
     * A lease for ordering a release of memory after this stream's work: unlike {@link #lease()}, also
     * granted on a closed stream whose deferred destruction has not started (calls still hold it, so it
     * still exists, and the last lease released destroys it); null once the destruction has started. A
     * thread that holds a lease on this stream and releases a tensor used on it must not wait for the
     * stream's destruction, which waits for that very lease.
     */
    Lease leaseUnlessReleased() {
        long s;
        do {
            s = state.get();
            if (s == CLOSED) return null;
        } while (!state.compareAndSet(s, s + 1));
        return new Lease(this);
    }

    /**
     * Throws {@link FlashAttnException.InvalidArgument} unless {@code device} is this stream's device;
     * {@code what} names what lives on {@code device}, e.g. "the tensors".
     */
    void requireOn(Device tensorDevice, String what) {
        if (!device.equals(tensorDevice)) {
            throw new FlashAttnException.InvalidArgument(what + " on " + tensorDevice + " cannot be used with " + this
                    + ": a stream orders work on its own device (" + device + ") only");
        }
    }

    /**
     * Returns once a closed stream's release (wait, then destroy) has finished: after that, nothing queued
     * on it can still be running. Returns at once for a default stream.
     */
    void awaitReleased() {
        if (release == null) return;
        boolean interrupted = false;
        while (true) {
            try {
                release.finished.await();
                break;
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) Thread.currentThread().interrupt();
    }

    /** {@link #requireOn}, and throws {@link IllegalStateException} if this stream is closed. */
    void requireUsableOn(Device tensorDevice, String what) {
        requireOn(tensorDevice, what);
        if (isClosed()) throw new IllegalStateException(this + " has been closed");
    }

    private static void requireCuda(Device device) {
        Objects.requireNonNull(device, "device");
        if (!device.isCuda()) {
            throw new FlashAttnException.InvalidArgument("a CUDA stream needs a CUDA device, got " + device);
        }
    }

    /**
     * A hold on a stream for the duration of a native call, which passes {@link #handle()}. {@link #NONE}
     * stands for "no stream given": the default stream.
     */
    static final class Lease implements AutoCloseable {
        /** No stream given: the handle of the legacy default stream, and nothing to release. */
        static final Lease NONE = new Lease(null);

        private CudaStream stream;
        private final MemorySegment handle;

        private Lease(CudaStream stream) {
            this.stream = stream;
            this.handle = stream == null ? MemorySegment.NULL : MemorySegment.ofAddress(stream.handle);
        }

        /** The {@code fa4j_stream} to pass. */
        MemorySegment handle() {
            return handle;
        }

        @Override
        public void close() {
            CudaStream s = stream;
            if (s != null) {
                stream = null;
                // The last lease of a stream whose close was deferred synchronizes and destroys it.
                if (s.state.decrementAndGet() == CLOSED) s.cleanable.clean();
            }
        }
    }

    /**
     * Synchronizes the stream and, if owned, destroys it; holds no reference to the stream so the Cleaner
     * can run it.
     */
    private static final class Release implements Runnable {
        private final int device;
        private final long handle;
        private final boolean owned;
        // Counted down once run() is over: "closed" then means "finished" (see awaitReleased).
        private final CountDownLatch finished = new CountDownLatch(1);
        // What went wrong, for close() to throw (the Cleaner's thread has nowhere to report it).
        private volatile FlashAttnException failure;

        Release(int device, long handle, boolean owned) {
            this.device = device;
            this.handle = handle;
            this.owned = owned;
        }

        @Override
        public void run() {
            try {
                MemorySegment stream = MemorySegment.ofAddress(handle);
                // Destroying does not wait for queued work; waiting first keeps "closed" meaning "finished".
                FlashAttnException sync = NativeCalls.failure(flashattn4j_h.fa4j_cuda_stream_synchronize(device, stream));
                FlashAttnException destroy = owned
                        ? NativeCalls.failure(flashattn4j_h.fa4j_cuda_stream_destroy(device, stream)) : null;
                if (sync != null && destroy != null) sync.addSuppressed(destroy);
                failure = sync != null ? sync : destroy;
            } finally {
                finished.countDown();
            }
        }
    }
}
