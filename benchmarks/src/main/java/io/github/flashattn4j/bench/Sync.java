package io.github.flashattn4j.bench;

import io.github.flashattn4j.Cuda;
import io.github.flashattn4j.Tensor;

/** Waits for queued device work, so timings cover the computation and not just its launch. */
final class Sync {

    private Sync() {}

    static void device(Tensor t) {
        if (t.device().isCuda()) Cuda.synchronize(t.device().index());
    }
}
