package io.github.flashattn4j.bench;

import io.github.flashattn4j.Attention;
import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
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

import java.util.concurrent.TimeUnit;

/**
 * Attention forward and backward through the Java API with preallocated outputs, so the score is the
 * call alone. Shapes are "batch x seqlen x heads x headDim"; the device is the best available unless
 * {@code -p device=cpu}. Convert to TFLOP/s with {@link Attention#forwardFlops} (or use the bench CLI,
 * which prints them).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 2)
@Measurement(iterations = 3, time = 2)
@Fork(value = 1, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
public class AttentionBenchmark {

    @Param({"1x1024x8x64", "1x1024x8x128"})
    public String shape;

    @Param({"BFLOAT16"})
    public DType dtype;

    @Param({"false", "true"})
    public boolean causal;

    @Param({"best"})
    public String device;

    private TensorScope scope;
    private AttentionOptions options;
    private Tensor q, k, v, out, lse, dout, dq, dk, dv;

    @Setup(Level.Trial)
    public void setUp() {
        BenchShape s = BenchShape.parse(shape);
        Device target = device.equals("best") ? Device.best() : device.equals("cpu") ? Device.CPU : Device.cuda(0);
        scope = TensorScope.open();
        options = AttentionOptions.builder().causal(causal).build();
        q = scope.randn(dtype, target, 1, s.batch(), s.seqlen(), s.heads(), s.headDim());
        k = scope.randn(dtype, target, 2, s.batch(), s.seqlen(), s.heads(), s.headDim());
        v = scope.randn(dtype, target, 3, s.batch(), s.seqlen(), s.heads(), s.headDim());
        dout = scope.randn(dtype, target, 4, s.batch(), s.seqlen(), s.heads(), s.headDim());
        out = scope.empty(dtype, target, s.batch(), s.seqlen(), s.heads(), s.headDim());
        lse = scope.empty(DType.FLOAT32, target, s.batch(), s.heads(), s.seqlen());
        dq = scope.empty(dtype, target, s.batch(), s.seqlen(), s.heads(), s.headDim());
        dk = scope.empty(dtype, target, s.batch(), s.seqlen(), s.heads(), s.headDim());
        dv = scope.empty(dtype, target, s.batch(), s.seqlen(), s.heads(), s.headDim());
        Attention.forwardInto(q, k, v, out, lse, options);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        scope.close();
    }

    @Benchmark
    public void forward() {
        Attention.forwardInto(q, k, v, out, lse, options);
        Sync.device(out);
    }

    @Benchmark
    public void backward() {
        Attention.backwardInto(dout, q, k, v, out, lse, dq, dk, dv, options);
        Sync.device(dq);
    }
}
