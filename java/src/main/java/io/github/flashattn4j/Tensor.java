package io.github.flashattn4j;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.Objects;
import java.util.SplittableRandom;

/**
 * An n-dimensional array in host memory or on a CUDA device: dtype, shape, strides (in elements) and an
 * off-heap memory block.
 *
 * <h2>Ownership</h2>
 * A tensor made by a factory ({@link #zeros}, {@link #randn}, {@link #fromArray}, {@link #fromInts},
 * {@link #to}, ...) owns
 * its memory, and {@link #close()} frees it at once. A view ({@link #slice}, {@link #transpose},
 * {@link #select}, {@link #reshape}) shares its base's memory without copying and owns nothing: closing a
 * view only retires the view, and closing the base invalidates every view of it. {@code close()} is
 * idempotent; using a closed tensor's data throws {@link IllegalStateException}, while its metadata
 * (shape, dtype, ...) stays readable. Memory nobody closed is freed when the tensor becomes unreachable,
 * but that is a backstop: close tensors, or make them in a {@link TensorScope}.
 *
 * <h2>CUDA tensors: streams and closing</h2>
 * Calls that take no {@link CudaStream} use the device's legacy default stream. Copies between host and
 * device ({@link #toFloatArray}, {@link #copyFromArray}, {@link #copyFrom}, {@link #to}, and the factories)
 * are synchronous: they are queued after the work already on their stream and return once they have
 * finished. Attention calls on CUDA are asynchronous: they queue kernels and return. The overloads taking a
 * {@code CudaStream} order a copy after the attention work queued on that stream, so reading a result on
 * the stream it was computed on needs no explicit synchronization. Streams made by {@link CudaStream#create}
 * do not synchronize with the default stream: while work queued on such a stream may still use a tensor,
 * read or write that tensor only on the same stream, or call {@link CudaStream#synchronize()} first.
 *
 * <p>Device memory comes from the library's stream-ordered pool. Closing a CUDA tensor releases its memory
 * in the order of every stream that used it (the one it was allocated on and each stream an attention call
 * used it on): the memory is reused only after the work queued there so far has finished, and nothing
 * waits. Closing (or leaving to a {@link TensorScope}) a tensor that queued kernels still read or write is
 * therefore safe and cheap. See {@link CudaStream} for tensors used by other libraries on their streams.
 *
 * <h2>Memory from elsewhere, without copies</h2>
 * {@link #wrap(MemorySegment, DType, long[], long[], Runnable)} and
 * {@link #wrapDevice(Device, long, long, DType, long[], long[], Runnable)} view a caller's host segment or
 * device pointer; {@link DLPack} imports and exports tensors of other libraries; {@link #asSegment()},
 * {@link #copyTo(MemorySegment)}, {@link #copyFrom(MemorySegment)}, the {@link ByteBuffer} and
 * {@code short[]} variants move raw element bytes without float conversions. A tensor imported read-only
 * ({@link #isReadOnly()}) refuses every write.
 *
 * <h2>Threads</h2>
 * Tensors may be shared between threads. Closing a tensor while a call on another thread is using its
 * memory never fails and never frees memory under that call: the tensor is closed at once (later calls
 * throw {@link IllegalStateException}), and its memory is freed when the running call returns, on that
 * call's thread (for a CUDA tensor, in the order of the streams that used it, as described above). Calls that
 * started before the close finish normally. (Work that a call queued on a CUDA stream and that is still
 * running does not hold the memory: see above.)
 *
 * <h2>Errors</h2>
 * <ul>
 *   <li>{@link IllegalArgumentException}: a shape, size or array length that does not fit (a negative
 *       size, a shape whose element count or byte size overflows a {@code long}, a reshape to another
 *       element count, an {@link DType#INT4} shape or view that would not start every row on a byte).</li>
 *   <li>{@link IndexOutOfBoundsException}: a dimension or index out of range ({@link #size}, {@link #stride},
 *       {@link #slice}, {@link #select}, {@link #transpose}), as for Java arrays and lists.</li>
 *   <li>{@link IllegalStateException}: a closed tensor, or a tensor whose state does not allow the call
 *       ({@link #reshape} of a non-contiguous tensor, {@link #toFloatArray} of more elements than a Java
 *       array holds).</li>
 *   <li>{@link FlashAttnException.OutOfMemory}: host or device memory could not be allocated; other
 *       {@link FlashAttnException}s: failures of the native library or the CUDA runtime.</li>
 *   <li>{@link NullPointerException}: a null argument.</li>
 * </ul>
 */
public final class Tensor implements AutoCloseable, AttentionInput {

    // Longest Java array the JVM allocates reliably (as in ArraysSupport.SOFT_MAX_ARRAY_LENGTH).
    private static final int MAX_ARRAY_LENGTH = Integer.MAX_VALUE - 8;
    // Host staging for fills of CUDA tensors: 16 MiB of float32.
    private static final long FILL_CHUNK_ELEMENTS = 1L << 22;

    private final Storage storage;
    private final DType dtype;
    private final Layout layout;
    private final boolean ownsStorage;
    private final boolean readOnly;
    private volatile boolean closed;

    private Tensor(Storage storage, DType dtype, Layout layout, boolean ownsStorage, boolean readOnly) {
        this.storage = storage;
        this.dtype = dtype;
        this.layout = layout;
        this.ownsStorage = ownsStorage;
        this.readOnly = readOnly;
    }

    private Tensor(Storage storage, DType dtype, Layout layout, boolean ownsStorage) {
        this(storage, dtype, layout, ownsStorage, false);
    }

    /** A tensor owning {@code storage} (which the caller hands over), for factories in this package. */
    static Tensor owning(Storage storage, DType dtype, Layout layout, boolean readOnly) {
        return new Tensor(storage, dtype, layout, true, readOnly);
    }

    // ---------------------------------------------------------------------------------------------
    // Factories
    // ---------------------------------------------------------------------------------------------

    /**
     * A new contiguous tensor. Host memory starts zeroed; device memory starts with unspecified contents.
     *
     * @throws IllegalArgumentException       if a size is negative or the tensor's size in bytes overflows a long
     * @throws FlashAttnException.OutOfMemory if the memory cannot be allocated
     */
    public static Tensor empty(DType dtype, Device device, long... shape) {
        Objects.requireNonNull(device, "device");
        return allocate(dtype, device, device.isCuda() ? CudaStream.defaultStream(device) : null, shape);
    }

    /**
     * A new contiguous tensor on {@code stream}'s device, allocated in the order of {@code stream}: work
     * queued on that stream may use it at once; work on other streams only once ordered after it. Contents
     * are unspecified.
     *
     * @throws IllegalStateException if the stream is closed
     */
    public static Tensor empty(DType dtype, CudaStream stream, long... shape) {
        Objects.requireNonNull(stream, "stream");
        return allocate(dtype, stream.device(), stream, shape);
    }

    /** {@code home}: the stream CUDA memory is allocated on; null for host memory. */
    static Tensor allocate(DType dtype, Device device, CudaStream home, long... shape) {
        Objects.requireNonNull(dtype, "dtype");
        Objects.requireNonNull(device, "device");
        Objects.requireNonNull(shape, "shape");
        Layout layout = Layout.contiguous(shape);
        requirePackable(dtype, layout);
        long bytes = byteSize(dtype, layout.elementCount(), shape);
        Storage storage = device.isCuda() ? DeviceStorage.allocate(device, bytes, home) : HostStorage.allocate(bytes);
        return new Tensor(storage, dtype, layout, true);
    }

    /** A new contiguous tensor of zeros. */
    public static Tensor zeros(DType dtype, Device device, long... shape) {
        Tensor t = empty(dtype, device, shape);
        if (device.isCuda()) {
            try {
                t.fillBytes(0);
            } catch (RuntimeException e) {
                t.close();
                throw e;
            }
        }
        return t;
    }

    /** A new contiguous tensor with every element {@code value} (rounded to {@code dtype}). */
    public static Tensor full(float value, DType dtype, Device device, long... shape) {
        Tensor t = empty(dtype, device, shape);
        try {
            t.fill(value);
            return t;
        } catch (RuntimeException e) {
            t.close();
            throw e;
        }
    }

    /**
     * A new contiguous tensor of standard-normal samples from a generator seeded with {@code seed}.
     *
     * @throws IllegalArgumentException if the shape is invalid or has more elements than a Java array holds
     */
    public static Tensor randn(DType dtype, Device device, long seed, long... shape) {
        Objects.requireNonNull(dtype, "dtype");
        Objects.requireNonNull(device, "device");
        Objects.requireNonNull(shape, "shape");
        long count = Layout.contiguous(shape).elementCount();
        if (count > MAX_ARRAY_LENGTH) throw new IllegalArgumentException("randn supports at most " + MAX_ARRAY_LENGTH + " elements, shape " + Arrays.toString(shape) + " has " + count);
        SplittableRandom random = new SplittableRandom(seed);
        float[] values = new float[(int) count];
        for (int i = 0; i < values.length; i++) values[i] = (float) random.nextGaussian();
        return fromArray(values, dtype, device, shape);
    }

    /**
     * A new contiguous tensor holding {@code values} in row-major order, rounded to {@code dtype}.
     *
     * @throws IllegalArgumentException if the array's length is not the shape's element count
     */
    public static Tensor fromArray(float[] values, DType dtype, Device device, long... shape) {
        Objects.requireNonNull(values, "values");
        Objects.requireNonNull(shape, "shape");
        // Before allocating: a wrong shape must not cost (or fail) an allocation of its size.
        requireValueCount(values.length, Layout.contiguous(shape).elementCount(), shape);
        Tensor t = empty(dtype, device, shape);
        try {
            t.copyFromArray(values);
            return t;
        } catch (RuntimeException e) {
            t.close();
            throw e;
        }
    }

    /**
     * A new contiguous int32 tensor holding {@code values} in row-major order, exactly (for example the
     * sequence offsets of {@link PackedSequences}).
     *
     * @throws IllegalArgumentException if the array's length is not the shape's element count
     */
    public static Tensor fromInts(int[] values, Device device, long... shape) {
        Objects.requireNonNull(values, "values");
        Objects.requireNonNull(shape, "shape");
        requireValueCount(values.length, Layout.contiguous(shape).elementCount(), shape);
        Tensor t = empty(DType.INT32, device, shape);
        try {
            t.writeBytes(MemorySegment.ofArray(values), CudaStream.Lease.NONE);
            return t;
        } catch (RuntimeException e) {
            t.close();
            throw e;
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Metadata (readable after close)
    // ---------------------------------------------------------------------------------------------

    public DType dtype() {
        return dtype;
    }

    public Device device() {
        return storage.device();
    }

    /** Number of dimensions. */
    public int dim() {
        return layout.rank();
    }

    /** A copy of the shape. */
    public long[] shape() {
        return layout.shapeCopy();
    }

    /**
     * Size of dimension {@code dim}; negative values count from the end.
     *
     * @throws IndexOutOfBoundsException if {@code dim} is not in {@code [-dim(), dim())}
     */
    public long size(int dim) {
        return layout.size(normalize(dim));
    }

    /** A copy of the strides, in elements. */
    public long[] strides() {
        return layout.stridesCopy();
    }

    /**
     * Stride of dimension {@code dim} in elements; negative values count from the end.
     *
     * @throws IndexOutOfBoundsException if {@code dim} is not in {@code [-dim(), dim())}
     */
    public long stride(int dim) {
        return layout.stride(normalize(dim));
    }

    /** Number of elements. */
    public long numel() {
        return layout.elementCount();
    }

    /**
     * Whether the elements are laid out densely in row-major order. A tensor without elements is
     * contiguous.
     */
    public boolean isContiguous() {
        return layout.isContiguous();
    }

    /** Whether this tensor refuses writes (a DLPack import the producer marked read-only, and its views). */
    public boolean isReadOnly() {
        return readOnly;
    }

    /** Whether this tensor owns its memory (made by a factory) rather than viewing another's. */
    public boolean isView() {
        return !ownsStorage;
    }

    /** Whether this tensor, or the tensor whose memory it views, has been closed. */
    public boolean isClosed() {
        return closed || storage.isClosed();
    }

    // ---------------------------------------------------------------------------------------------
    // Views: no copy, shared memory
    // ---------------------------------------------------------------------------------------------

    /**
     * The view of indices {@code [start, end)} along {@code dim} (negative {@code dim} counts from the end).
     *
     * @throws IndexOutOfBoundsException if {@code dim} is out of range, or not
     *                                   {@code 0 <= start <= end <= size(dim)}
     * @throws IllegalStateException     if this tensor is closed
     */
    public Tensor slice(int dim, long start, long end) {
        int d = normalize(dim);
        long size = layout.size(d);
        if (start < 0 || end < start || end > size) {
            throw new IndexOutOfBoundsException("slice [" + start + ", " + end + ") of dimension " + d + " with size " + size);
        }
        long[] shape = layout.shapeCopy();
        shape[d] = end - start;
        return view(new Layout(shape, layout.stridesCopy(), layout.offset() + start * layout.stride(d)));
    }

    /**
     * The view with dimensions {@code a} and {@code b} swapped (negative values count from the end).
     *
     * @throws IndexOutOfBoundsException if {@code a} or {@code b} is out of range
     * @throws IllegalStateException     if this tensor is closed
     */
    public Tensor transpose(int a, int b) {
        int da = normalize(a), db = normalize(b);
        long[] shape = layout.shapeCopy(), strides = layout.stridesCopy();
        long s = shape[da];
        shape[da] = shape[db];
        shape[db] = s;
        long t = strides[da];
        strides[da] = strides[db];
        strides[db] = t;
        return view(new Layout(shape, strides, layout.offset()));
    }

    /**
     * The view at {@code index} along {@code dim}, which is removed (negative {@code dim} counts from the
     * end).
     *
     * @throws IndexOutOfBoundsException if {@code dim} is out of range, or not {@code 0 <= index < size(dim)}
     * @throws IllegalStateException     if this tensor is closed
     */
    public Tensor select(int dim, long index) {
        int d = normalize(dim);
        long size = layout.size(d);
        if (index < 0 || index >= size) {
            throw new IndexOutOfBoundsException("index " + index + " of dimension " + d + " with size " + size);
        }
        long[] shape = new long[dim() - 1], strides = new long[dim() - 1];
        for (int i = 0, j = 0; i < dim(); i++) {
            if (i == d) continue;
            shape[j] = layout.size(i);
            strides[j++] = layout.stride(i);
        }
        return view(new Layout(shape, strides, layout.offset() + index * layout.stride(d)));
    }

    /**
     * The view with a new shape over the same elements; one size may be -1 (inferred). Needs a contiguous
     * tensor.
     *
     * @throws IllegalArgumentException if the shape has another element count, a negative size other
     *                                  than one -1, or overflows a long
     * @throws IllegalStateException    if this tensor is closed or not contiguous
     */
    public Tensor reshape(long... shape) {
        Objects.requireNonNull(shape, "shape");
        if (!isContiguous()) throw new IllegalStateException("reshape needs a contiguous tensor; copy() it first");
        long[] resolved = shape.clone();
        int inferred = -1;
        long known = 1;
        for (int i = 0; i < resolved.length; i++) {
            if (resolved[i] == -1 && inferred < 0) inferred = i;
            else if (resolved[i] < 0) throw new IllegalArgumentException("invalid shape " + Arrays.toString(shape));
            else known = Layout.multiply(known, resolved[i], shape);
        }
        if (inferred >= 0) {
            if (known == 0 || numel() % known != 0) throw new IllegalArgumentException("cannot infer -1 in " + Arrays.toString(shape) + " for " + numel() + " elements");
            resolved[inferred] = numel() / known;
        }
        Layout target = Layout.contiguous(resolved);
        if (target.elementCount() != numel()) {
            throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " does not hold " + numel() + " elements");
        }
        return view(new Layout(resolved, target.stridesCopy(), layout.offset()));
    }

    private Tensor view(Layout viewLayout) {
        requireOpen();
        requirePackable(dtype, viewLayout);
        return new Tensor(storage, dtype, viewLayout, false, readOnly);
    }

    // ---------------------------------------------------------------------------------------------
    // Data
    // ---------------------------------------------------------------------------------------------

    /** The elements in row-major order, converted to float. Works on any device and any strides. */
    public float[] toFloatArray() {
        return readAll(CudaStream.Lease.NONE);
    }

    /**
     * {@link #toFloatArray()} of a CUDA tensor, copied on {@code stream}: after the work already queued
     * there (such as the attention call that wrote this tensor) has finished. Returns once the copy is done.
     *
     * @throws FlashAttnException.InvalidArgument if this tensor is not on the stream's device
     * @throws IllegalStateException              if this tensor or the stream is closed
     */
    public float[] toFloatArray(CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        stream.requireOn(device(), "the tensor");
        try (CudaStream.Lease s = stream.lease()) {
            return readAll(s);
        }
    }

    /** Sets every element to {@code value}, rounded to the dtype. Device views must be contiguous. */
    public void fill(float value) {
        try (Storage.Lease lease = leaseForWriting()) {
            if (device().isCuda()) {
                requireContiguousDeviceWrite();
                fillDevice(value);
            } else {
                MemorySegment segment = hostSegment();
                layout.forEachOffset(offset -> ElementCodec.set(segment, offset, dtype, value));
            }
        }
    }

    /**
     * Overwrites the elements with {@code values} in row-major order, rounded to the dtype. Device views
     * must be contiguous.
     */
    public void copyFromArray(float[] values) {
        writeAll(values, CudaStream.Lease.NONE);
    }

    /**
     * {@link #copyFromArray(float[])} into a CUDA tensor, copied on {@code stream}: after the work already
     * queued there. Returns once the copy is done, so {@code values} may be reused at once.
     *
     * @throws FlashAttnException.InvalidArgument if this tensor is not on the stream's device
     * @throws IllegalStateException              if this tensor or the stream is closed
     */
    public void copyFromArray(float[] values, CudaStream stream) {
        Objects.requireNonNull(stream, "stream");
        stream.requireOn(device(), "the tensor");
        try (CudaStream.Lease s = stream.lease()) {
            writeAll(values, s);
        }
    }

    /**
     * Copies {@code source}'s elements into this tensor: same shape; dtypes may differ (values are converted)
     * and devices may differ. Device destinations must be contiguous.
     */
    public void copyFrom(Tensor source) {
        copyFrom(source, CudaStream.Lease.NONE);
    }

    /**
     * {@link #copyFrom(Tensor)} on {@code stream}: the copy is queued after the work already there (such as
     * the attention call that wrote {@code source}) and has finished when this returns. Every CUDA tensor of
     * the copy must be on the stream's device, and at least one must be a CUDA tensor.
     *
     * @throws FlashAttnException.InvalidArgument if a tensor is not on the stream's device
     * @throws IllegalStateException              if a tensor or the stream is closed
     */
    public void copyFrom(Tensor source, CudaStream stream) {
        Objects.requireNonNull(source, "source");
        Objects.requireNonNull(stream, "stream");
        requireCopyOn(stream, device(), source.device());
        try (CudaStream.Lease s = stream.lease()) {
            copyFrom(source, s);
        }
    }

    /** A new contiguous tensor with the same dtype and elements on {@code device}. */
    public Tensor to(Device device) {
        Objects.requireNonNull(device, "device");
        return copyTo(device, CudaStream.Lease.NONE);
    }

    /**
     * {@link #to(Device)} with the copy on {@code stream}, after the work already queued there; the copy
     * has finished when this returns. Every CUDA device involved must be the stream's.
     *
     * @throws FlashAttnException.InvalidArgument if this tensor or {@code device} is a CUDA device other than
     *                                            the stream's, or neither is a CUDA device
     * @throws IllegalStateException              if this tensor or the stream is closed
     */
    public Tensor to(Device device, CudaStream stream) {
        Objects.requireNonNull(device, "device");
        Objects.requireNonNull(stream, "stream");
        requireCopyOn(stream, device, device());
        try (CudaStream.Lease s = stream.lease()) {
            return copyTo(device, s);
        }
    }

    /** A new contiguous copy on the same device. */
    public Tensor copy() {
        return to(device());
    }

    /** A new contiguous tensor with the elements converted to {@code target}, on the same device. */
    public Tensor toDType(DType target) {
        Objects.requireNonNull(target, "target");
        Tensor copy = empty(target, device(), shape());
        try {
            copy.copyFrom(this);
            return copy;
        } catch (RuntimeException e) {
            copy.close();
            throw e;
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Foreign memory and raw element bytes, without copies or float conversions
    // ---------------------------------------------------------------------------------------------

    /**
     * A tensor over the caller's host memory: element (i0, ..., in) at byte
     * {@code dtype.byteSize() * sum(ik * strides[k])} of {@code segment} (INT4: nibble {@code sum(ik * strides[k])}, see {@link DType#INT4}). No copy is made; the tensor owns
     * nothing unless {@code release} is given, which runs once when the tensor is closed (or, as a
     * backstop, becomes unreachable). The segment's scope stays the caller's: every use checks it is alive
     * ({@link IllegalStateException} otherwise), but closing its arena while a call on another thread is
     * running on it is the caller's race to avoid.
     *
     * @param strides in elements, non-negative; null for row-major contiguous
     * @param release may be null
     * @throws IllegalArgumentException if the shape or strides address bytes outside the segment, or the
     *                                  segment is not aligned to the element size
     */
    public static Tensor wrap(MemorySegment segment, DType dtype, long[] shape, long[] strides, Runnable release) {
        Objects.requireNonNull(segment, "segment");
        Layout layout = foreignLayout(dtype, shape, strides, segment.byteSize(), segment.address());
        if (!segment.isNative()) {
            throw new IllegalArgumentException("segment must be native (off-heap) memory, not a heap array: " + segment);
        }
        if (segment.isReadOnly()) throw new IllegalArgumentException("segment is read-only");
        if (!segment.scope().isAlive()) throw new IllegalStateException("segment's arena is closed");
        return new Tensor(HostStorage.wrap(segment, release), dtype, layout, true);
    }

    /** {@link #wrap(MemorySegment, DType, long[], long[], Runnable)}: row-major, nothing to release. */
    public static Tensor wrap(MemorySegment segment, DType dtype, long... shape) {
        return wrap(segment, dtype, shape, null, null);
    }

    /**
     * A tensor over the caller's CUDA device memory: {@code byteSize} bytes at {@code address} on
     * {@code device}. No copy is made; the tensor owns nothing unless {@code release} is given, which runs
     * once when the tensor is closed, after the work this library queued on the memory has finished (the
     * closing thread waits for the streams that used it). The library cannot check that the address is live
     * device memory: it trusts the caller as cudaMemcpy would.
     *
     * @param strides in elements, non-negative; null for row-major contiguous
     * @param release may be null
     * @throws IllegalArgumentException if the layout addresses bytes beyond {@code byteSize}, the address is
     *                                  null or not aligned to the element size
     */
    public static Tensor wrapDevice(Device device, long address, long byteSize, DType dtype, long[] shape, long[] strides,
                                    Runnable release) {
        Objects.requireNonNull(device, "device");
        if (!device.isCuda()) throw new FlashAttnException.InvalidArgument("wrapDevice needs a CUDA device, got " + device);
        Layout layout = foreignLayout(dtype, shape, strides, byteSize, address);
        if (address == 0 && byteSize > 0) throw new IllegalArgumentException("address is null");
        return new Tensor(DeviceStorage.wrap(device, address, byteSize, release), dtype, layout, true);
    }

    private static Layout foreignLayout(DType dtype, long[] shape, long[] strides, long byteSize, long address) {
        Objects.requireNonNull(dtype, "dtype");
        Objects.requireNonNull(shape, "shape");
        if (byteSize < 0) throw new IllegalArgumentException("negative byte size " + byteSize);
        if (address % alignment(dtype) != 0) {
            throw new IllegalArgumentException("address 0x" + Long.toHexString(address) + " is not aligned to " + dtype);
        }
        Layout contiguous = Layout.contiguous(shape);
        Layout layout = strides == null ? contiguous : Layout.strided(shape, strides);
        requirePackable(dtype, layout);
        long span = layout.span();
        if (dtype.bytesFor(span) > byteSize) {
            throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " with strides "
                    + Arrays.toString(layout.strides()) + " addresses " + span + " elements of " + dtype + ", more than the "
                    + byteSize + " bytes given");
        }
        return layout;
    }

    /**
     * This host tensor's memory as a segment, from its first element to one past its last addressed
     * element (so a strided view's gaps are included): reads and writes go straight to the tensor. The
     * segment dies with the memory: after the tensor (or its base) is closed, using it throws
     * {@link IllegalStateException}. Read-only tensors give a read-only segment.
     *
     * @throws UnsupportedOperationException for a CUDA tensor (its memory is not host-addressable)
     */
    public MemorySegment asSegment() {
        if (device().isCuda()) throw new UnsupportedOperationException("a CUDA tensor has no host segment; copyTo() a host segment");
        try (Storage.Lease lease = lease()) {
            MemorySegment all = ((HostStorage) storage).publicSegment();
            MemorySegment view = all.asSlice(byteOffset(), dtype.bytesFor(layout.span()));
            return readOnly ? view.asReadOnly() : view;
        }
    }

    /**
     * Copies the elements, row-major and densely packed, as raw bytes in the platform's byte order (bf16
     * and fp16 as their 16-bit patterns) into {@code destination}, whose size must be
     * {@code dtype().bytesFor(numel())}. Any device, any strides; synchronous (on the default stream for
     * CUDA tensors).
     */
    public void copyTo(MemorySegment destination) {
        Objects.requireNonNull(destination, "destination");
        requireByteSize(destination.byteSize(), "destination");
        readBytes(destination, CudaStream.Lease.NONE);
    }

    /**
     * Overwrites the elements, row-major, with the raw bytes of {@code source} (see
     * {@link #copyTo(MemorySegment)}), whose size must be {@code dtype().bytesFor(numel())}. CUDA
     * destinations must be contiguous; synchronous.
     */
    public void copyFrom(MemorySegment source) {
        Objects.requireNonNull(source, "source");
        requireByteSize(source.byteSize(), "source");
        writeBytes(source, CudaStream.Lease.NONE);
    }

    /**
     * {@link #copyTo(MemorySegment)} into the buffer's next {@code dtype().bytesFor(numel())} bytes,
     * advancing its position (the bytes are in the platform's order whatever the buffer's order setting).
     *
     * @throws java.nio.BufferOverflowException if fewer bytes remain
     */
    public void copyTo(ByteBuffer destination) {
        Objects.requireNonNull(destination, "destination");
        long bytes = byteCount();
        if (destination.remaining() < bytes) throw new java.nio.BufferOverflowException();
        if (destination.isReadOnly()) throw new java.nio.ReadOnlyBufferException();
        readBytes(MemorySegment.ofBuffer(destination).asSlice(0, bytes), CudaStream.Lease.NONE);
        destination.position(destination.position() + (int) bytes);
    }

    /**
     * {@link #copyFrom(MemorySegment)} from the buffer's next {@code dtype().bytesFor(numel())} bytes,
     * advancing its position.
     *
     * @throws java.nio.BufferUnderflowException if fewer bytes remain
     */
    public void copyFrom(ByteBuffer source) {
        Objects.requireNonNull(source, "source");
        long bytes = byteCount();
        if (source.remaining() < bytes) throw new java.nio.BufferUnderflowException();
        writeBytes(MemorySegment.ofBuffer(source).asSlice(0, bytes), CudaStream.Lease.NONE);
        source.position(source.position() + (int) bytes);
    }

    /**
     * The 16-bit patterns of a float16 or bfloat16 tensor's elements, row-major: no rounding, NaN payloads
     * kept.
     *
     * @throws UnsupportedOperationException for a dtype that is not 16 bits wide
     */
    public short[] toShortArray() {
        require16Bit();
        long count = numel();
        if (count > Integer.MAX_VALUE - 8) throw new IllegalStateException("tensor too large for a Java array: " + count);
        short[] bits = new short[(int) count];
        readBytes(MemorySegment.ofArray(bits), CudaStream.Lease.NONE);
        return bits;
    }

    /** Overwrites a float16 or bfloat16 tensor's elements, row-major, with the 16-bit patterns {@code bits}. */
    public void copyFromShorts(short[] bits) {
        Objects.requireNonNull(bits, "bits");
        require16Bit();
        requireValueCount(bits.length, numel(), layout.shape());
        writeBytes(MemorySegment.ofArray(bits), CudaStream.Lease.NONE);
    }

    /**
     * The elements of an int32 tensor, row-major, exactly. Any device, any strides; synchronous.
     *
     * @throws UnsupportedOperationException for a dtype other than int32
     * @throws IllegalStateException         if the tensor is closed or has more elements than a Java array holds
     */
    public int[] toIntArray() {
        if (dtype != DType.INT32) throw new UnsupportedOperationException("toIntArray needs an int32 tensor, not " + dtype);
        long count = numel();
        if (count > MAX_ARRAY_LENGTH) throw new IllegalStateException("tensor too large for a Java array: " + count);
        int[] values = new int[(int) count];
        readBytes(MemorySegment.ofArray(values), CudaStream.Lease.NONE);
        return values;
    }

    private long byteCount() {
        return dtype.bytesFor(numel());
    }

    private void requireByteSize(long given, String what) {
        if (given != byteCount()) {
            throw new IllegalArgumentException(what + " has " + given + " bytes; " + this + " has " + byteCount());
        }
    }

    /** Java arrays handed in must hold exactly the tensor's element count. */
    private static void requireValueCount(int given, long count, long[] shape) {
        if (given != count) throw new IllegalArgumentException(given + " values for a tensor of shape " + Arrays.toString(shape));
    }

    private void require16Bit() {
        if (dtype.bits() != 16) throw new UnsupportedOperationException("raw 16-bit access needs float16 or bfloat16, not " + dtype);
    }

    /** Copies the elements' bytes, packed row-major, into {@code destination} (exactly that size). */
    private void readBytes(MemorySegment destination, CudaStream.Lease stream) {
        try (Storage.Lease lease = lease()) {
            if (device().isCuda() && isContiguous() && destination.isNative()) {
                DeviceCopies.copyBytesToHost(this, destination, byteCount(), stream.handle());
            } else if (device().isCuda()) {
                try (Tensor staged = stageOnHost(stream)) {
                    staged.gatherHost(destination);
                }
            } else {
                gatherHost(destination);
            }
        }
    }

    /** Overwrites the elements, row-major, with the packed bytes of {@code source} (exactly that size). */
    private void writeBytes(MemorySegment source, CudaStream.Lease stream) {
        try (Storage.Lease lease = leaseForWriting()) {
            if (device().isCuda()) {
                requireContiguousDeviceWrite();
                if (source.isNative()) {
                    DeviceCopies.copyBytesFromHost(source, this, byteCount(), stream.handle());
                } else {
                    try (Arena arena = Arena.ofConfined()) {
                        MemorySegment staged = arena.allocate(byteCount(), 64);
                        staged.copyFrom(source);
                        DeviceCopies.copyBytesFromHost(staged, this, byteCount(), stream.handle());
                    }
                }
            } else {
                scatterHost(source);
            }
        }
    }

    private void gatherHost(MemorySegment destination) {
        MemorySegment segment = hostSegment();
        int size = unitBytes();
        if (isContiguous()) {
            MemorySegment.copy(segment, byteOffset(), destination, 0, byteCount());
            return;
        }
        long[] at = {0};
        unitLayout().forEachOffset(offset -> {
            MemorySegment.copy(segment, offset * size, destination, at[0], size);
            at[0] += size;
        });
    }

    private void scatterHost(MemorySegment source) {
        MemorySegment segment = hostSegment();
        int size = unitBytes();
        if (isContiguous()) {
            MemorySegment.copy(source, 0, segment, byteOffset(), byteCount());
            return;
        }
        long[] at = {0};
        unitLayout().forEachOffset(offset -> {
            MemorySegment.copy(source, at[0], segment, offset * size, size);
            at[0] += size;
        });
    }

    /**
     * Frees the memory if this tensor owns it, and retires this tensor. Idempotent, and never fails. For a
     * CUDA tensor that owns its memory, the release is ordered after the work queued so far on the streams
     * that used it (see above), so queued kernels and copies never touch released memory.
     *
     * <p>While a call on another thread is using the memory, the tensor is closed at once but the memory is
     * freed when that call returns, by that call's thread (see "Threads" above).
     */
    @Override
    public void close() {
        if (ownsStorage) storage.close();
        closed = true;
    }

    @Override
    public String toString() {
        return "Tensor(" + dtype + ", " + device() + ", shape " + Arrays.toString(layout.shape()) + ", strides "
                + Arrays.toString(layout.strides()) + (isClosed() ? ", closed" : "") + ")";
    }

    // ---------------------------------------------------------------------------------------------
    // Package-private access for native calls
    // ---------------------------------------------------------------------------------------------

    /** Holds this tensor's memory open for a native call; throws if the tensor is closed. */
    Storage.Lease lease() {
        requireOpen();
        Storage.Lease lease = storage.lease();
        try {
            storage.requireAlive();
            return lease;
        } catch (RuntimeException e) {
            lease.close();
            throw e;
        }
    }

    /** {@link #lease()} for a call that writes this tensor. */
    Storage.Lease leaseForWriting() {
        requireWritable();
        return lease();
    }

    /** Records that work queued on {@code stream} uses this tensor's memory (see {@link CudaStream}). */
    void usedOn(CudaStream stream) {
        storage.usedOn(stream);
    }

    Storage storage() {
        return storage;
    }

    void requireWritable() {
        if (readOnly) throw new IllegalStateException("tensor is read-only (imported as such through DLPack): " + this);
    }

    /** Native address of the storage's byte 0. */
    long baseAddress() {
        return storage.address();
    }

    /** Byte offset of element (0, ..., 0) from the storage's byte 0. */
    long byteOffset() {
        return dtype.bytesFor(layout.offset());  // INT4: the offset is even
    }

    Layout layout() {
        return layout;
    }

    // ---------------------------------------------------------------------------------------------

    private void requireOpen() {
        if (isClosed()) throw new IllegalStateException("tensor is closed: " + this);
    }

    private int normalize(int dim) {
        int d = dim < 0 ? dim + dim() : dim;
        if (d < 0 || d >= dim()) throw new IndexOutOfBoundsException("dimension " + dim + " of a " + dim() + "-d tensor");
        return d;
    }

    private MemorySegment hostSegment() {
        return ((HostStorage) storage).segment();
    }

    /** The layout in units of whole bytes' worth of elements: the elements, or INT4's bytes of two. */
    private Layout unitLayout() {
        return dtype.isPacked() ? layout.packedBytes() : layout;
    }

    /** Bytes of one unit of {@link #unitLayout()}. */
    private int unitBytes() {
        return dtype.isPacked() ? 1 : dtype.byteSize();
    }

    private static int alignment(DType dtype) {
        return dtype.isPacked() ? 1 : dtype.byteSize();
    }

    /** Bytes of {@code count} elements of {@code dtype}, for a tensor of {@code shape}. */
    private static long byteSize(DType dtype, long count, long[] shape) {
        try {
            return dtype.bytesFor(count);
        } catch (ArithmeticException e) {
            throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " is too large: its size in bytes overflows a long", e);
        }
    }

    /** INT4 layouts must keep every row on a byte (see {@link DType#INT4}). */
    private static void requirePackable(DType dtype, Layout layout) {
        if (!dtype.isPacked()) return;
        String problem = layout.packedProblem();
        if (problem != null) throw new IllegalArgumentException(problem + " (" + layout + ")");
    }

    private void readHost(float[] result) {
        MemorySegment segment = hostSegment();
        int[] i = {0};
        layout.forEachOffset(offset -> result[i[0]++] = ElementCodec.get(segment, offset, dtype));
    }

    private void writeHost(float[] values) {
        MemorySegment segment = hostSegment();
        int[] i = {0};
        layout.forEachOffset(offset -> ElementCodec.set(segment, offset, dtype, values[i[0]++]));
    }

    private void requireContiguousDeviceWrite() {
        if (!isContiguous()) {
            throw new UnsupportedOperationException("writing into a non-contiguous CUDA view is not supported: " + this);
        }
    }

    private float[] readAll(CudaStream.Lease stream) {
        long count = numel();
        if (count > MAX_ARRAY_LENGTH) throw new IllegalStateException("tensor too large for a Java array: " + count + " elements");
        float[] result = new float[(int) count];
        try (Storage.Lease lease = lease()) {
            if (count == 0) return result;
            if (device().isCuda()) {
                try (Tensor staged = stageOnHost(stream)) {
                    staged.readHost(result);
                }
            } else {
                readHost(result);
            }
        }
        return result;
    }

    private void writeAll(float[] values, CudaStream.Lease stream) {
        Objects.requireNonNull(values, "values");
        requireValueCount(values.length, numel(), layout.shape());
        try (Storage.Lease lease = leaseForWriting()) {
            if (values.length == 0) return;
            if (device().isCuda()) {
                requireContiguousDeviceWrite();
                try (Tensor staged = empty(dtype, Device.CPU, shape())) {
                    staged.writeHost(values);
                    DeviceCopies.copyBytes(staged, this, byteCount(), stream.handle());
                }
            } else {
                writeHost(values);
            }
        }
    }

    private void copyFrom(Tensor source, CudaStream.Lease stream) {
        Objects.requireNonNull(source, "source");
        if (!Arrays.equals(shape(), source.shape())) {
            throw new IllegalArgumentException("shape " + Arrays.toString(source.shape()) + " cannot be copied into " + Arrays.toString(shape()));
        }
        if (numel() == 0) {
            // Nothing to copy, but closed tensors are still refused (a zero-element view's offset may even
            // lie past the end of its memory, where no copy routine should be pointed).
            try (Storage.Lease a = lease(); Storage.Lease b = source.lease()) {
                return;
            }
        }
        if (source.dtype == dtype && source.isContiguous() && isContiguous() && (source.device().isCuda() || device().isCuda())) {
            try (Storage.Lease a = leaseForWriting(); Storage.Lease b = source.lease()) {
                DeviceCopies.copyBytes(source, this, byteCount(), stream.handle());
            }
            return;
        }
        if (source.dtype == dtype && source.isContiguous() && isContiguous()) {
            try (Storage.Lease a = leaseForWriting(); Storage.Lease b = source.lease()) {
                MemorySegment.copy(source.hostSegment(), source.byteOffset(), hostSegment(), byteOffset(), byteCount());
            }
            return;
        }
        if (source.dtype == dtype) {
            // Through the raw bytes: exact for every dtype (floats would round int32 beyond 2^24).
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment staged = arena.allocate(byteCount(), 64);
                source.readBytes(staged, stream);
                writeBytes(staged, stream);
            }
            return;
        }
        writeAll(source.readAll(stream), stream);
    }

    private Tensor copyTo(Device device, CudaStream.Lease stream) {
        Tensor copy = empty(dtype, device, shape());
        try {
            copy.copyFrom(this, stream);
            return copy;
        } catch (RuntimeException e) {
            copy.close();
            throw e;
        }
    }

    /** Checks that a copy between these devices may run on {@code stream}: every CUDA one is the stream's. */
    private static void requireCopyOn(CudaStream stream, Device destination, Device source) {
        if (source.isCuda()) stream.requireOn(source, "the source tensor");
        if (destination.isCuda() || !source.isCuda()) stream.requireOn(destination, "the destination tensor");
    }

    /** This device view's addressed bytes copied to a host tensor with the same strides. */
    private Tensor stageOnHost(CudaStream.Lease stream) {
        long span = layout.span();
        Tensor host = empty(dtype, Device.CPU, span);
        try {
            DeviceCopies.copyBytes(this, host, dtype.bytesFor(span), stream.handle());
            return new Tensor(host.storage, dtype, new Layout(layout.shapeCopy(), layout.stridesCopy(), 0), true);
        } catch (RuntimeException e) {
            host.close();
            throw e;
        }
    }

    /** Fills a contiguous CUDA tensor (under a lease) from a staged host chunk, without a Java array of its size. */
    private void fillDevice(float value) {
        long count = numel();
        if (count == 0) return;
        long chunk = Math.min(count, FILL_CHUNK_ELEMENTS);
        try (Tensor staged = full(value, dtype, Device.CPU, chunk)) {
            for (long start = 0; start < count; start += chunk) {
                long n = Math.min(chunk, count - start);
                Tensor part = new Tensor(storage, dtype, new Layout(new long[] {n}, new long[] {1}, layout.offset() + start), false);
                DeviceCopies.copyBytes(staged, part, dtype.bytesFor(n), MemorySegment.NULL);
            }
        }
    }

    private void fillBytes(int value) {
        try (Storage.Lease lease = leaseForWriting()) {
            DeviceCopies.fillBytes(this, value, dtype.bytesFor(layout.span()));
        }
    }
}
