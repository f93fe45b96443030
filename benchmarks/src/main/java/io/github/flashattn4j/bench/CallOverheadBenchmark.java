package io.github.flashattn4j.bench;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.DecodeOptions;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.KvCache;
import io.github.flashattn4j.PagedKvCache;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import io.github.flashattn4j.internal.bindings.fa4j_attention_args;
import io.github.flashattn4j.internal.bindings.fa4j_device;
import io.github.flashattn4j.internal.bindings.fa4j_dtype;
import io.github.flashattn4j.internal.bindings.fa4j_tensor;
import io.github.flashattn4j.internal.bindings.flashattn4j_h;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.concurrent.TimeUnit;

/**
 * The Java API's cost per attention call, on problems so small that the native work is about a microsecond: one
 * query of float32 d{@code dim} against {@code keys} keys, one head, {@code num_threads} 1 (parameter
 * {@code threads}), CPU. The calls:
 * <ul>
 *   <li>{@code forwardInto}, {@code decodeInto}: {@link Attention#forwardInto} and {@link Attention#decodeInto}
 *       into preallocated outputs (decode: a dense cache of {@code keys} tokens, no append), as an application
 *       makes them;</li>
 *   <li>{@code forwardBindings}, {@code decodeBindings}: the same {@code fa4j_attention} calls through the
 *       generated bindings with every descriptor and the args struct written once in setup: the floor an FFM
 *       call reaches (the native validation and kernel plus the downcall);</li>
 *   <li>{@code pagedDecodeInto}: a step of a decode loop on a {@link PagedKvCache} holding the same keys,
 *       without the append;</li>
 *   <li>{@code forwardAllocating}, {@code decodeAllocating}: {@link Attention#forward} and {@link Attention#decode}
 *       allocating their outputs (closed at once), which adds a support query and two allocations.</li>
 * </ul>
 * The Java overhead is the difference to the bindings; {@code native/bench/fa4j_call_bench.cpp} times the same
 * two calls from C, the floor without the JVM. Run with {@code -prof gc} for the bytes allocated per call.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Warmup(iterations = 5, time = 1)
@Measurement(iterations = 10, time = 1)
@Fork(value = 2, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
public class CallOverheadBenchmark {

    @Param({"8"})
    public int keys;

    @Param({"8"})
    public int dim;

    /** {@code num_threads} of every call: 1 runs inline; 0 (all hardware threads) goes through the CPU thread pool. */
    @Param({"1"})
    public int threads;

    private TensorScope scope;
    private Arena arena;
    private Tensor q, k, v, out, lse;
    private AttentionOptions options;
    private DecodeOptions decodeOptions;
    private KvCache cache;
    private PagedKvCache paged;
    private final int[] sequences = new int[1];
    private MemorySegment forwardArgs, decodeArgs;

    @Setup(Level.Trial)
    public void setUp() {
        scope = TensorScope.open();
        q = scope.randn(DType.FLOAT32, Device.CPU, 1, 1, 1, 1, dim);
        k = scope.randn(DType.FLOAT32, Device.CPU, 2, 1, keys, 1, dim);
        v = scope.randn(DType.FLOAT32, Device.CPU, 3, 1, keys, 1, dim);
        out = scope.empty(DType.FLOAT32, Device.CPU, 1, 1, 1, dim);
        lse = scope.empty(DType.FLOAT32, Device.CPU, 1, 1, 1);
        Tensor lengths = scope.fromInts(new int[] {keys}, Device.CPU, 1);
        options = AttentionOptions.builder().numThreads(threads).build();
        decodeOptions = DecodeOptions.of(options);
        cache = KvCache.dense(k, v, lengths);
        // Loads the library (the bindings need it) and checks that both calls are accepted.
        Attention.forwardInto(q, k, v, out, lse, options);
        Attention.decodeInto(q, cache, out, lse, decodeOptions);
        // The same keys in a paged cache (pages of 8), as a server's decode loop holds them.
        paged = PagedKvCache.builder().dtype(DType.FLOAT32).device(Device.CPU).kvHeads(1).headDim(dim).pageSize(8)
                .numPages((keys + 7) / 8).maxSequences(1).maxSequenceLength(keys).build();
        sequences[0] = paged.newSequence();
        paged.append(sequences, k, v);

        arena = Arena.ofShared();
        forwardArgs = args(flashattn4j_h.FA4J_ATTENTION_FORWARD());
        fa4j_attention_args.k(forwardArgs, describe(k));
        fa4j_attention_args.v(forwardArgs, describe(v));
        decodeArgs = args(flashattn4j_h.FA4J_ATTENTION_DECODE());
        fa4j_attention_args.k_cache(decodeArgs, describe(k));
        fa4j_attention_args.v_cache(decodeArgs, describe(v));
        fa4j_attention_args.cache_seqlens(decodeArgs, describe(lengths));
    }

    private MemorySegment args(int direction) {
        MemorySegment a = fa4j_attention_args.allocate(arena);
        fa4j_attention_args.struct_size(a, fa4j_attention_args.layout().byteSize());
        fa4j_attention_args.direction(a, direction);
        fa4j_attention_args.q(a, describe(q));
        fa4j_attention_args.out(a, describe(out));
        fa4j_attention_args.lse(a, describe(lse));
        fa4j_attention_args.softmax_scale(a, options.softmaxScale(dim));
        fa4j_attention_args.window_left(a, AttentionOptions.UNBOUNDED);
        fa4j_attention_args.window_right(a, AttentionOptions.UNBOUNDED);
        fa4j_attention_args.num_threads(a, threads);
        return a;
    }

    /** A contiguous CPU tensor's {@code fa4j_tensor}, in the benchmark's arena. */
    private MemorySegment describe(Tensor t) {
        MemorySegment d = fa4j_tensor.allocate(arena);
        fa4j_tensor.data(d, MemorySegment.ofAddress(t.asSegment().address()));
        MemorySegment device = fa4j_tensor.device(d);
        fa4j_device.device_type(device, flashattn4j_h.FA4J_DEVICE_CPU());
        fa4j_device.device_id(device, 0);
        fa4j_tensor.ndim(d, t.dim());
        MemorySegment dtype = fa4j_tensor.dtype(d);
        boolean ints = t.dtype() == DType.INT32;
        fa4j_dtype.code(dtype, (byte) (ints ? flashattn4j_h.FA4J_DTYPE_CODE_INT() : flashattn4j_h.FA4J_DTYPE_CODE_FLOAT()));
        fa4j_dtype.bits(dtype, (byte) 32);
        fa4j_dtype.lanes(dtype, (short) 1);
        fa4j_tensor.shape(d, arena.allocateFrom(ValueLayout.JAVA_LONG, t.shape()));
        fa4j_tensor.strides(d, arena.allocateFrom(ValueLayout.JAVA_LONG, t.strides()));
        return d;
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        arena.close();
        paged.close();
        scope.close();
    }

    @Benchmark
    public void forwardInto() {
        Attention.forwardInto(q, k, v, out, lse, options);
    }

    @Benchmark
    public void decodeInto() {
        Attention.decodeInto(q, cache, out, lse, decodeOptions);
    }

    /**
     * One step of a paged decode loop without the append (so the cache stays {@code keys} long):
     * {@link PagedKvCache#prepare} (the batch's lengths and block table written into the cache's tensors) and
     * {@link Attention#decodeInto} on the view it returns.
     */
    @Benchmark
    public void pagedDecodeInto() {
        Attention.decodeInto(q, paged.prepare(sequences, 0), out, lse, decodeOptions);
    }

    /** {@link Attention#forward} allocating out and lse, which are closed at once: the allocating path. */
    @Benchmark
    public void forwardAllocating() {
        Attention.forward(q, k, v, options).close();
    }

    /** {@link Attention#decode} allocating out and lse, which are closed at once. */
    @Benchmark
    public void decodeAllocating() {
        Attention.decode(q, cache, decodeOptions).close();
    }

    @Benchmark
    public int forwardBindings() {
        return check(flashattn4j_h.fa4j_attention(forwardArgs, MemorySegment.NULL));
    }

    @Benchmark
    public int decodeBindings() {
        return check(flashattn4j_h.fa4j_attention(decodeArgs, MemorySegment.NULL));
    }

    private static int check(int status) {
        if (status != flashattn4j_h.FA4J_OK()) throw new IllegalStateException("fa4j_attention failed: status " + status);
        return status;
    }
}
