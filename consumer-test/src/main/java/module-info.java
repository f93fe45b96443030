/** The consumer check as a named module: flashattn4j used from the module path. */
module io.github.flashattn4j.consumer {
    requires io.github.flashattn4j;
}
