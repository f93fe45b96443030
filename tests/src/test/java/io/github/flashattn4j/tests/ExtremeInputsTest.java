package io.github.flashattn4j.tests;

import io.github.flashattn4j.DType;
import io.github.flashattn4j.Device;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.stream.Stream;

import static io.github.flashattn4j.DType.BFLOAT16;
import static io.github.flashattn4j.DType.FLOAT16;
import static io.github.flashattn4j.DType.FLOAT32;

/**
 * Finite but extreme inputs (issue 6) on the CPU backend: the fuzzer's reproductions (scale 1e10 on
 * [1, 40, 1, 64], inputs times 1e4, values near the float16 maximum) give finite outputs within the
 * FlashAttention tolerance of the float64 reference in every dtype, results beyond a dtype's range
 * saturated; its scale 1e38 on [1, 4, 1, 8] is past the documented range and refused. See
 * {@link ExtremeInputs}.
 */
class ExtremeInputsTest {

    static Stream<ExtremeInputs.Case> cases() {
        return ExtremeInputs.cases(FLOAT32, FLOAT16, BFLOAT16).stream();
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void finiteAndWithinToleranceOfFloat64(ExtremeInputs.Case c) {
        // The CPU backend sums D in dP's order, so it meets the plain rule without an allowance.
        ExtremeInputs.check(c, Device.CPU, false);
    }

    @Test
    void scaleBeyondTheRangeIsRefused() {
        for (DType dtype : new DType[] {FLOAT32, FLOAT16, BFLOAT16}) {
            ExtremeInputs.checkRefused(Device.CPU, dtype, 1e38f);
            ExtremeInputs.checkRefused(Device.CPU, dtype, -1e38f);
            ExtremeInputs.checkRefused(Device.CPU, dtype, Math.nextUp(Math.nextUp(ExtremeInputs.largestScale(8))));
        }
    }
}
