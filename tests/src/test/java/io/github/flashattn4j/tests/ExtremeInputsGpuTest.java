package io.github.flashattn4j.tests;

import io.github.flashattn4j.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.stream.Stream;

import static io.github.flashattn4j.DType.BFLOAT16;
import static io.github.flashattn4j.DType.FLOAT16;

/**
 * {@link ExtremeInputsTest}'s cases on cuda:0 (float16 and bfloat16), forward and backward on the GPU. The
 * bounds add the accumulation allowance ({@link ExtremeInputs#allowance}): in these regimes the tensor
 * cores' summation order alone moves dq and dk further than the plain implementation's error. Skipped
 * without a GPU.
 */
class ExtremeInputsGpuTest extends GpuTest {

    static Stream<ExtremeInputs.Case> cases() {
        return ExtremeInputs.cases(FLOAT16, BFLOAT16).stream();
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void finiteAndWithinToleranceOfFloat64(ExtremeInputs.Case c) {
        ExtremeInputs.check(c, CUDA0, true);
    }

    @Test
    void scaleBeyondTheRangeIsRefused() {
        for (DType dtype : new DType[] {FLOAT16, BFLOAT16}) ExtremeInputs.checkRefused(CUDA0, dtype, 1e38f);
    }
}
