package io.github.flashattn4j;

import io.github.flashattn4j.internal.bindings.fa4j_attention_args;
import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.SegmentAllocator;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/** One merge of partial attention results ({@code FA4J_ATTENTION_MERGE}) minus its outputs (out, and lse if wanted). */
record MergeCall(List<AttentionOutput> parts) implements NativeAttentionCall {

    static MergeCall of(List<AttentionOutput> parts) {
        Objects.requireNonNull(parts, "parts");
        List<AttentionOutput> copy = new ArrayList<>(parts.size());
        for (int i = 0; i < parts.size(); i++) copy.add(Objects.requireNonNull(parts.get(i), "parts[" + i + "]"));
        if (copy.isEmpty()) throw new IllegalArgumentException("a merge needs at least one partial result");
        return new MergeCall(List.copyOf(copy));
    }

    @Override
    public List<String> argumentNames() {
        List<String> names = new ArrayList<>();
        for (int i = 0; i < parts.size(); i++) {
            names.add("parts[" + i + "].out");
            names.add("parts[" + i + "].lse");
        }
        return names;
    }

    @Override
    public List<Tensor> arguments() {
        List<Tensor> tensors = new ArrayList<>();
        for (AttentionOutput p : parts) {
            tensors.add(p.out());
            tensors.add(p.lse());
        }
        return tensors;
    }

    @Override
    public List<String> outputNames() {
        return List.of("out", "lse");
    }

    /** The first part's shapes; out in its dtype, lse float32. */
    @Override
    public long[][] outputShapes() {
        return new long[][] {parts.getFirst().out().shape(), parts.getFirst().lse().shape()};
    }

    @Override
    public DType[] outputDtypes() {
        return new DType[] {parts.getFirst().out().dtype(), DType.FLOAT32};
    }

    @Override
    public Device device() {
        return parts.getFirst().out().device();
    }

    @Override
    public void check(CudaStream stream, Tensor[] tensors) {
        AttentionChecks.checkTensors(this, tensors, stream);
        AttentionChecks.requireFloating(parts.getFirst().out(), "parts[0].out", 4, "[batch, seqlen, heads, head_dim]");
        if (parts.getFirst().lse().dim() != 3) {
            throw AttentionChecks.invalid("parts[0].lse must have 3 dimensions [batch, heads, seqlen], has "
                    + parts.getFirst().lse().dim());
        }
    }

    @Override
    public MemorySegment args(SegmentAllocator memory, MemorySegment[] outputs) {
        NativeCalls.ensureLoaded();
        int n = parts.size();
        MemorySegment outs = memory.allocate(ValueLayout.ADDRESS, n);
        MemorySegment lses = memory.allocate(ValueLayout.ADDRESS, n);
        for (int i = 0; i < n; i++) {
            outs.setAtIndex(ValueLayout.ADDRESS, i, TensorDescriptors.describe(parts.get(i).out(), memory));
            lses.setAtIndex(ValueLayout.ADDRESS, i, TensorDescriptors.describe(parts.get(i).lse(), memory));
        }
        MemorySegment a = fa4j_attention_args.allocate(memory);  // zeroed: absent tensors are NULL
        fa4j_attention_args.struct_size(a, fa4j_attention_args.layout().byteSize());
        fa4j_attention_args.direction(a, flashattn4j_h.FA4J_ATTENTION_MERGE());
        fa4j_attention_args.merge_out(a, outs);
        fa4j_attention_args.merge_lse(a, lses);
        fa4j_attention_args.merge_count(a, n);
        fa4j_attention_args.out(a, outputs[0]);
        if (outputs.length > 1) fa4j_attention_args.lse(a, outputs[1]);
        return a;
    }
}
