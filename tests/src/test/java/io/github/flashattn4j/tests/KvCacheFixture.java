package io.github.flashattn4j.tests;

import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.KvCache;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The tensors of one KV-cache attention problem on the CPU and its reference: q, dense or paged caches filled
 * up to each sequence's length (random pages of a pool, -1 in unused block table entries), the lengths, the
 * appended keys and values, and a shared prefix; the keys each sequence attends (prefix, cache, new) as
 * arrays; the reference out and lse computed sequence by sequence as dense problems of batch 1 (the
 * definition of decode: {@link ReferenceAttention} on the sequence's keys).
 */
final class KvCacheFixture {

    /**
     * One problem. {@code pageSize} 0: dense caches of {@code capacity} positions; else pages of that size and
     * a block table of {@code capacity / pageSize} entries. {@code prefix} -1: no shared prefix.
     */
    record Spec(DType dtype, int[] lengths, int seqQ, int headsQ, int headsKv, int headDim, int pageSize, int capacity,
                int appended, int prefix, boolean causal, Problem.Features features) {
        int batch() {
            return lengths.length;
        }

        int group() {
            return headsQ / headsKv;
        }

        Spec withDtype(DType d) {
            return new Spec(d, lengths, seqQ, headsQ, headsKv, headDim, pageSize, capacity, appended, prefix, causal, features);
        }

        @Override
        public String toString() {
            return dtype + " L" + Arrays.toString(lengths) + " Nq" + seqQ + " H" + headsQ + "/" + headsKv + " d" + headDim
                    + (pageSize > 0 ? " paged" + pageSize : " dense") + " cap" + capacity + (appended > 0 ? " append" + appended : "")
                    + (prefix >= 0 ? " prefix" + prefix : "") + (causal ? " causal" : "") + features;
        }
    }

    final Spec spec;
    final Tensor q, kCache, vCache, blockTable, cacheSeqlens, kNew, vNew, prefixK, prefixV, alibi;
    final float[] qa, kBefore, vBefore, kNewA, vNewA, prefixKa, prefixVa;
    final int[] table;
    final int maxPages, numPages;

    KvCacheFixture(Spec s, TensorScope scope, long seed) {
        this.spec = s;
        SplittableRandom random = new SplittableRandom(seed);
        int b = s.batch(), d = s.headDim();
        q = scope.randn(s.dtype(), Device.CPU, random.nextLong(), b, s.seqQ(), s.headsQ(), d);
        if (s.pageSize() == 0) {
            maxPages = 1;
            numPages = b;
            table = null;
            kCache = scope.randn(s.dtype(), Device.CPU, random.nextLong(), b, s.capacity(), s.headsKv(), d);
            vCache = scope.randn(s.dtype(), Device.CPU, random.nextLong(), b, s.capacity(), s.headsKv(), d);
            blockTable = null;
        } else {
            maxPages = s.capacity() / s.pageSize();
            int used = 0;
            for (int l : s.lengths()) used += pages(l + s.appended());
            numPages = used + 2;
            List<Integer> pool = new ArrayList<>();
            for (int p = 0; p < numPages; p++) pool.add(p);
            Collections.shuffle(pool, new java.util.Random(random.nextLong()));
            table = new int[b * maxPages];
            Arrays.fill(table, -1);
            int next = 0;
            for (int i = 0; i < b; i++) {
                for (int l = 0; l < pages(s.lengths()[i] + s.appended()); l++) table[i * maxPages + l] = pool.get(next++);
            }
            kCache = scope.randn(s.dtype(), Device.CPU, random.nextLong(), numPages, s.pageSize(), s.headsKv(), d);
            vCache = scope.randn(s.dtype(), Device.CPU, random.nextLong(), numPages, s.pageSize(), s.headsKv(), d);
            blockTable = scope.fromInts(table, Device.CPU, b, maxPages);
        }
        cacheSeqlens = scope.fromInts(s.lengths(), Device.CPU, b);
        if (s.appended() > 0) {
            kNew = scope.randn(s.dtype(), Device.CPU, random.nextLong(), b, s.appended(), s.headsKv(), d);
            vNew = scope.randn(s.dtype(), Device.CPU, random.nextLong(), b, s.appended(), s.headsKv(), d);
        } else {
            kNew = vNew = null;
        }
        if (s.prefix() >= 0) {
            prefixK = scope.randn(s.dtype(), Device.CPU, random.nextLong(), s.prefix(), s.headsKv(), d);
            prefixV = scope.randn(s.dtype(), Device.CPU, random.nextLong(), s.prefix(), s.headsKv(), d);
        } else {
            prefixK = prefixV = null;
        }
        double[] slopes = s.features().alibi();
        if (slopes != null) {
            float[] f = new float[slopes.length];
            for (int i = 0; i < f.length; i++) f[i] = (float) slopes[i];
            alibi = scope.fromArray(f, DType.FLOAT32, Device.CPU, b, s.headsQ());
        } else {
            alibi = null;
        }
        qa = q.toFloatArray();
        kBefore = kCache.toFloatArray();
        vBefore = vCache.toFloatArray();
        kNewA = kNew == null ? new float[0] : kNew.toFloatArray();
        vNewA = vNew == null ? new float[0] : vNew.toFloatArray();
        prefixKa = prefixK == null ? new float[0] : prefixK.toFloatArray();
        prefixVa = prefixV == null ? new float[0] : prefixV.toFloatArray();
    }

    private int pages(int positions) {
        return (positions + spec.pageSize() - 1) / spec.pageSize();
    }

    /** The cache the call attends: the caches, the append and the prefix of the spec. */
    KvCache cache() {
        KvCache c = blockTable == null ? KvCache.dense(kCache, vCache, cacheSeqlens)
                : KvCache.paged(kCache, vCache, blockTable, cacheSeqlens);
        if (kNew != null) c = c.withAppend(kNew, vNew);
        if (prefixK != null) c = c.withSharedPrefix(prefixK, prefixV);
        return c;
    }

    /** Index in a cache array of sequence b's position p, head h, element 0. */
    int cacheIndex(int b, int p, int h) {
        Spec s = spec;
        int row = s.pageSize() == 0 ? b * s.capacity() + p : table[b * maxPages + p / s.pageSize()] * s.pageSize() + p % s.pageSize();
        return (row * s.headsKv() + h) * s.headDim();
    }

    /** The keys (or values) sequence b attends, [prefix + L_b + appended, heads_kv, head_dim]. */
    float[] keysOf(int b, boolean values) {
        Spec s = spec;
        int row = s.headsKv() * s.headDim(), pre = Math.max(s.prefix(), 0), own = s.lengths()[b] + s.appended();
        float[] out = new float[(pre + own) * row];
        System.arraycopy(values ? prefixVa : prefixKa, 0, out, 0, pre * row);
        float[] cache = values ? vBefore : kBefore, fresh = values ? vNewA : kNewA;
        for (int p = 0; p < s.lengths()[b]; p++) {
            for (int h = 0; h < s.headsKv(); h++) System.arraycopy(cache, cacheIndex(b, p, h), out, ((pre + p) * s.headsKv() + h) * s.headDim(), s.headDim());
        }
        System.arraycopy(fresh, b * s.appended() * row, out, (pre + s.lengths()[b]) * row, s.appended() * row);
        return out;
    }

    /**
     * The reference of the whole batch: out {@code [B, Nq, Hq, d]}, lse {@code [B, Hq, Nq]}, each sequence a
     * dense problem over its keys (with a prefix: the concatenated attention, whose causal mask leaves every
     * prefix key visible as long as a sequence has at least seqQ - 1 keys of its own).
     */
    ReferenceAttention.Forward reference(ReferenceAttention impl, double scale) {
        Spec s = spec;
        int qRow = s.headsQ() * s.headDim();
        double[] out = new double[s.batch() * s.seqQ() * qRow], lse = new double[s.batch() * s.headsQ() * s.seqQ()];
        for (int b = 0; b < s.batch(); b++) {
            float[] k = keysOf(b, false), v = keysOf(b, true);
            Problem.Features f = s.features();
            if (f.alibi() != null) {
                f = new Problem.Features(f.softcap(), f.windowLeft(), f.windowRight(),
                        Arrays.copyOfRange(f.alibi(), b * s.headsQ(), (b + 1) * s.headsQ()));
            }
            Problem p = new Problem(1, s.seqQ(), k.length / (s.headsKv() * s.headDim()), s.headsQ(), s.headsKv(), s.headDim(),
                    s.causal(), scale, f);
            float[] qb = Arrays.copyOfRange(qa, b * s.seqQ() * qRow, (b + 1) * s.seqQ() * qRow);
            ReferenceAttention.Forward r = impl.forward(p, qb, k, v);
            System.arraycopy(r.out(), 0, out, b * s.seqQ() * qRow, r.out().length);
            System.arraycopy(r.lse(), 0, lse, b * s.headsQ() * s.seqQ(), r.lse().length);
        }
        return new ReferenceAttention.Forward(out, lse);
    }

    /** The caches hold exactly what they held, except the appended rows: bit for bit kNew's and vNew's. */
    void assertCachesAppended() {
        assertCaches(true, kCache, vCache);
    }

    /** The caches hold exactly what they held before the call. */
    void assertCachesUntouched() {
        assertCaches(false, kCache, vCache);
    }

    /**
     * The problem's tensors copied to {@code device} (owned by {@code scope}): its cache as {@link #cache()}
     * describes it, q, and the copies of the caches and ALiBi slopes.
     */
    record OnDevice(KvCache cache, Tensor q, Tensor kCache, Tensor vCache, Tensor alibi) {}

    OnDevice on(Device device, TensorScope scope) {
        Tensor k = scope.track(kCache.to(device)), v = scope.track(vCache.to(device));
        Tensor lengths = scope.track(cacheSeqlens.to(device));
        KvCache c = blockTable == null ? KvCache.dense(k, v, lengths) : KvCache.paged(k, v, scope.track(blockTable.to(device)), lengths);
        if (kNew != null) c = c.withAppend(scope.track(kNew.to(device)), scope.track(vNew.to(device)));
        if (prefixK != null) c = c.withSharedPrefix(scope.track(prefixK.to(device)), scope.track(prefixV.to(device)));
        return new OnDevice(c, scope.track(q.to(device)), k, v, alibi == null ? null : scope.track(alibi.to(device)));
    }

    /** {@link #assertCachesAppended()} (appended) or {@link #assertCachesUntouched()} for copies of the caches. */
    void assertCaches(boolean appended, Tensor kNow, Tensor vNow) {
        Spec s = spec;
        for (boolean values : new boolean[] {false, true}) {
            float[] expected = (values ? vBefore : kBefore).clone();
            float[] fresh = values ? vNewA : kNewA;
            if (appended) {
                for (int b = 0; b < s.batch(); b++) {
                    for (int t = 0; t < s.appended(); t++) {
                        for (int h = 0; h < s.headsKv(); h++) {
                            System.arraycopy(fresh, ((b * s.appended() + t) * s.headsKv() + h) * s.headDim(), expected,
                                    cacheIndex(b, s.lengths()[b] + t, h), s.headDim());
                        }
                    }
                }
            }
            float[] actual = (values ? vNow : kNow).toFloatArray();
            assertEquals(expected.length, actual.length);
            assertArrayEquals(expected, actual, (values ? "v" : "k") + "_cache content after the call");
        }
    }

    static float[] toFloat(double[] a) {
        float[] f = new float[a.length];
        for (int i = 0; i < a.length; i++) f[i] = (float) a[i];
        return f;
    }

    static double[] toDouble(float[] a) {
        double[] d = new double[a.length];
        for (int i = 0; i < a.length; i++) d[i] = a[i];
        return d;
    }
}
