package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.fa4j_attention_args;
import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.SegmentAllocator;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;

/**
 * One KV-cache attention call ({@code FA4J_ATTENTION_DECODE}) minus its outputs (out, and lse if wanted).
 * The caches count as written when the call appends to them.
 */
record DecodeCall(Tensor q, KvCache cache, DecodeOptions options) implements NativeAttentionCall {

    static DecodeCall of(Tensor q, KvCache cache, DecodeOptions options) {
        Objects.requireNonNull(cache, "cache");
        return new DecodeCall(q, cache, options);
    }

    private boolean appends() {
        return cache.kNew().isPresent();
    }

    @Override
    public List<String> argumentNames() {
        List<String> names = new ArrayList<>(List.of("q", "k_cache", "v_cache"));
        if (cache.isPaged()) names.add("block_table");
        names.add("cache_seqlens");
        if (appends()) names.addAll(List.of("k_new", "v_new"));
        if (cache.prefixK().isPresent()) names.addAll(List.of("prefix_k", "prefix_v"));
        if (options != null && options.attention().alibiSlopes().isPresent()) names.add("alibi_slopes");
        return names;
    }

    @Override
    public List<Tensor> arguments() {
        List<Tensor> tensors = new ArrayList<>(Arrays.asList(q, cache.k(), cache.v()));
        cache.blockTable().ifPresent(tensors::add);
        tensors.add(cache.cacheSeqlens());
        if (appends()) {
            tensors.add(cache.kNew().orElseThrow());
            tensors.add(cache.vNew().orElseThrow());
        }
        if (cache.prefixK().isPresent()) {
            tensors.add(cache.prefixK().orElseThrow());
            tensors.add(cache.prefixV().orElseThrow());
        }
        if (options != null) options.attention().alibiSlopes().ifPresent(tensors::add);
        return tensors;
    }

    @Override
    public List<String> outputNames() {
        return List.of("out", "lse");
    }

    /** out: q's shape and dtype; lse: float32 {@code [batch, heads_q, seqlen_q]}. */
    @Override
    public long[][] outputShapes() {
        long[] s = q.shape();
        return new long[][] {s, {s[0], s[2], s[1]}};
    }

    @Override
    public DType[] outputDtypes() {
        return new DType[] {q.dtype(), DType.FLOAT32};
    }

    @Override
    public Device device() {
        return q.device();
    }

    @Override
    public void check(CudaStream stream, Tensor[] tensors) {
        Objects.requireNonNull(options, "options");
        AttentionChecks.checkTensors(this, tensors, stream);
        AttentionChecks.requireFloating(q, "q", 4, "[batch, seqlen_q, heads_q, head_dim]");
        if (appends()) {
            AttentionChecks.requireWritable(cache.k(), "k_cache (appended to)");
            AttentionChecks.requireWritable(cache.v(), "v_cache (appended to)");
        }
    }

    @Override
    public MemorySegment args(SegmentAllocator memory, MemorySegment[] outputs) {
        NativeCalls.ensureLoaded();
        AttentionOptions o = options.attention();
        MemorySegment a = fa4j_attention_args.allocate(memory);  // zeroed: absent tensors are NULL
        fa4j_attention_args.struct_size(a, fa4j_attention_args.layout().byteSize());
        fa4j_attention_args.direction(a, flashattn4j_h.FA4J_ATTENTION_DECODE());
        fa4j_attention_args.kernel_family(a, o.kernelFamily().nativeCode());
        fa4j_attention_args.q(a, TensorDescriptors.describe(q, memory));
        fa4j_attention_args.k_cache(a, TensorDescriptors.describe(cache.k(), memory));
        fa4j_attention_args.v_cache(a, TensorDescriptors.describe(cache.v(), memory));
        cache.blockTable().ifPresent(t -> fa4j_attention_args.block_table(a, TensorDescriptors.describe(t, memory)));
        fa4j_attention_args.cache_seqlens(a, TensorDescriptors.describe(cache.cacheSeqlens(), memory));
        cache.kNew().ifPresent(t -> fa4j_attention_args.k_new(a, TensorDescriptors.describe(t, memory)));
        cache.vNew().ifPresent(t -> fa4j_attention_args.v_new(a, TensorDescriptors.describe(t, memory)));
        cache.prefixK().ifPresent(t -> fa4j_attention_args.prefix_k(a, TensorDescriptors.describe(t, memory)));
        cache.prefixV().ifPresent(t -> fa4j_attention_args.prefix_v(a, TensorDescriptors.describe(t, memory)));
        fa4j_attention_args.out(a, outputs[0]);
        if (outputs.length > 1) fa4j_attention_args.lse(a, outputs[1]);
        o.alibiSlopes().ifPresent(slopes -> fa4j_attention_args.alibi_slopes(a, TensorDescriptors.describe(slopes, memory)));
        fa4j_attention_args.softmax_scale(a, o.softmaxScale(q.size(-1)));
        fa4j_attention_args.softcap(a, o.softcap());
        fa4j_attention_args.causal(a, o.causal() ? 1 : 0);
        fa4j_attention_args.window_left(a, o.windowLeft());
        fa4j_attention_args.window_right(a, o.windowRight());
        fa4j_attention_args.num_threads(a, o.numThreads());
        fa4j_attention_args.deterministic(a, o.deterministic() ? 1 : 0);
        fa4j_attention_args.num_splits(a, options.numSplits());
        return a;
    }
}
