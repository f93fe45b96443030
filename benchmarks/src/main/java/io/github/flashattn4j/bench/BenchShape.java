package io.github.flashattn4j.bench;

/** A benchmark shape written "batch x seqlen x heads x headDim", e.g. {@code 2x8192x16x128}. */
record BenchShape(long batch, long seqlen, long heads, long headDim) {

    static BenchShape parse(String text) {
        String[] parts = text.trim().split("x");
        if (parts.length != 4) throw new IllegalArgumentException("shape must be BxNxHxD, got " + text);
        return new BenchShape(Long.parseLong(parts[0]), Long.parseLong(parts[1]), Long.parseLong(parts[2]),
                Long.parseLong(parts[3]));
    }

    @Override
    public String toString() {
        return batch + "x" + seqlen + "x" + heads + "x" + headDim;
    }
}
