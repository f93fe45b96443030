package io.github.flashattn4j.tests;

import io.github.flashattn4j.AttentionOptions;
import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.KernelFamily;
import io.github.flashattn4j.PackedSequences;
import io.github.flashattn4j.Tensor;
import io.github.flashattn4j.TensorScope;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.Optional;
import java.util.OptionalDouble;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The options builder and {@link PackedSequences}: defaults, every knob kept and copied by
 * {@code toBuilder}, value equality, and the argument checks of the setters (a value no call could accept
 * fails at once, leaving the builder unchanged).
 */
class AttentionOptionsTest {

    @Test
    void defaultsAreFullAttentionWithoutFeatures() {
        AttentionOptions o = AttentionOptions.defaults();
        assertEquals(OptionalDouble.empty(), o.softmaxScale());
        assertEquals((float) (1 / Math.sqrt(64)), o.softmaxScale(64));
        assertFalse(o.causal());
        assertEquals(AttentionOptions.UNBOUNDED, o.windowLeft());
        assertEquals(AttentionOptions.UNBOUNDED, o.windowRight());
        assertEquals(-1, AttentionOptions.UNBOUNDED);
        assertEquals(0f, o.softcap());
        assertEquals(Optional.empty(), o.alibiSlopes());
        assertEquals(KernelFamily.AUTO, o.kernelFamily());
        assertEquals(0, o.numThreads());
        assertEquals(o, AttentionOptions.builder().build());
    }

    @Test
    void everyKnobIsKeptAndCopied() {
        try (Tensor slopes = Tensor.fromArray(new float[] {0.5f, 0.25f}, DType.FLOAT32, Device.CPU, 2)) {
            AttentionOptions o = AttentionOptions.builder().softmaxScale(0.3f).causal(true).window(7, 0).softcap(12.5f)
                    .alibiSlopes(slopes).kernelFamily(KernelFamily.SM80).numThreads(3).build();
            assertEquals(OptionalDouble.of(0.3f), o.softmaxScale());
            assertEquals(0.3f, o.softmaxScale(128));
            assertTrue(o.causal());
            assertEquals(7, o.windowLeft());
            assertEquals(0, o.windowRight());
            assertEquals(12.5f, o.softcap());
            assertSame(slopes, o.alibiSlopes().orElseThrow());
            assertEquals(KernelFamily.SM80, o.kernelFamily());
            assertEquals(3, o.numThreads());

            AttentionOptions copy = o.toBuilder().build();
            assertEquals(o, copy);
            assertEquals(o.hashCode(), copy.hashCode());
            assertEquals(o.toString(), copy.toString());
            // Each knob on its own makes the options differ.
            assertNotEquals(o, o.toBuilder().softmaxScale(0.31f).build());
            assertNotEquals(o, o.toBuilder().causal(false).build());
            assertNotEquals(o, o.toBuilder().window(8, 0).build());
            assertNotEquals(o, o.toBuilder().window(7, 1).build());
            assertNotEquals(o, o.toBuilder().softcap(0).build());
            assertNotEquals(o, o.toBuilder().noAlibiSlopes().build());
            assertNotEquals(o, o.toBuilder().kernelFamily(KernelFamily.SM90).build());
            assertNotEquals(o, o.toBuilder().numThreads(4).build());
            assertEquals(Optional.empty(), o.toBuilder().noAlibiSlopes().build().alibiSlopes());
            // Slopes compare by identity: another tensor with the same values is other options.
            try (Tensor same = slopes.copy()) {
                assertNotEquals(o, o.toBuilder().alibiSlopes(same).build());
            }
            assertTrue(o.toString().contains("window=(7, 0)") && o.toString().contains("softcap=12.5"), o::toString);
        }
    }

    @Test
    void builtOptionsDoNotChangeWithTheirBuilder() {
        AttentionOptions.Builder b = AttentionOptions.builder().window(3, 4).softcap(2);
        AttentionOptions first = b.build();
        b.window(AttentionOptions.UNBOUNDED, 0).softcap(0).causal(true);
        assertEquals(3, first.windowLeft());
        assertEquals(4, first.windowRight());
        assertEquals(2f, first.softcap());
        assertFalse(first.causal());
    }

    @ParameterizedTest
    @ValueSource(ints = {-2, -3, Integer.MIN_VALUE})
    void windowBoundsBelowMinusOneAreRefused(int bad) {
        AttentionOptions.Builder b = AttentionOptions.builder().window(5, 6);
        assertThrows(IllegalArgumentException.class, () -> b.window(bad, 0));
        assertThrows(IllegalArgumentException.class, () -> b.window(0, bad));
        AttentionOptions o = b.build();  // unchanged by the refused calls
        assertEquals(5, o.windowLeft());
        assertEquals(6, o.windowRight());
    }

    @Test
    void windowAcceptsUnboundedAndZeroAndLargeBounds() {
        for (int[] w : new int[][] {{-1, -1}, {-1, 0}, {0, -1}, {0, 0}, {Integer.MAX_VALUE, Integer.MAX_VALUE}}) {
            AttentionOptions o = AttentionOptions.builder().window(w[0], w[1]).build();
            assertEquals(w[0], o.windowLeft());
            assertEquals(w[1], o.windowRight());
        }
    }

    @ParameterizedTest
    @ValueSource(floats = {-1f, -0.001f, -Float.MIN_VALUE, Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY})
    void softcapMustBeFiniteAndNonNegative(float bad) {
        AttentionOptions.Builder b = AttentionOptions.builder().softcap(3);
        assertThrows(IllegalArgumentException.class, () -> b.softcap(bad));
        assertEquals(3f, b.build().softcap());
    }

    @Test
    void softcapZeroMeansNoneAndTinyOrHugeValuesAreKept() {
        assertEquals(0f, AttentionOptions.builder().softcap(5).softcap(0).build().softcap());
        assertEquals(Float.MIN_VALUE, AttentionOptions.builder().softcap(Float.MIN_VALUE).build().softcap());
        assertEquals(Float.MAX_VALUE, AttentionOptions.builder().softcap(Float.MAX_VALUE).build().softcap());
    }

    @Test
    void nullsAndOtherBadArgumentsAreRefused() {
        AttentionOptions.Builder b = AttentionOptions.builder();
        assertThrows(NullPointerException.class, () -> b.alibiSlopes(null));
        assertThrows(NullPointerException.class, () -> b.kernelFamily(null));
        assertThrows(IllegalArgumentException.class, () -> b.numThreads(-1));
        assertThrows(IllegalArgumentException.class, () -> b.softmaxScale(Float.NaN));
        assertThrows(IllegalArgumentException.class, () -> b.softmaxScale(Float.NEGATIVE_INFINITY));
        assertEquals(AttentionOptions.defaults(), b.build());
    }

    @Test
    void kernelFamiliesAreTheFourOfTheHeader() {
        assertEquals(4, KernelFamily.values().length);
        assertEquals(KernelFamily.AUTO, KernelFamily.values()[0]);
    }

    @Test
    void packedSequencesKeepTheirPartsAndCheckArguments() {
        try (TensorScope scope = TensorScope.open()) {
            Tensor tokens = scope.zeros(DType.FLOAT32, Device.CPU, 5, 2, 8);
            Tensor cu = scope.fromInts(new int[] {0, 2, 5}, Device.CPU, 3);
            Tensor used = scope.fromInts(new int[] {1, 3}, Device.CPU, 2);
            PackedSequences p = PackedSequences.of(tokens, cu, 0);
            assertSame(tokens, p.tokens());
            assertSame(cu, p.cuSeqlens());
            assertEquals(0, p.maxSeqlen());
            assertEquals(Optional.empty(), p.usedLengths());
            PackedSequences withUsed = p.withUsedLengths(used);
            assertSame(used, withUsed.usedLengths().orElseThrow());
            assertEquals(Optional.empty(), p.usedLengths(), "withUsedLengths must not change the original");
            assertEquals(withUsed, p.withUsedLengths(used));
            assertNotEquals(p, withUsed);
            assertEquals(p, PackedSequences.of(tokens, cu, 0));
            assertNotEquals(p, PackedSequences.of(tokens, cu, 3));
            assertEquals(4, PackedSequences.of(tokens, cu, 4).maxSeqlen());

            assertThrows(IllegalArgumentException.class, () -> PackedSequences.of(tokens, cu, -1));
            assertThrows(NullPointerException.class, () -> PackedSequences.of(null, cu, 0));
            assertThrows(NullPointerException.class, () -> PackedSequences.of(tokens, null, 0));
            assertThrows(NullPointerException.class, () -> p.withUsedLengths(null));
        }
    }
}
