/**
 * jextract-generated bindings of the flashattn4j C ABI. Internal: only the flashattn4j module may use them.
 */
module io.github.flashattn4j.bindings {
    exports io.github.flashattn4j.internal.bindings to io.github.flashattn4j;
}
