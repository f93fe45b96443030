package io.github.flashattn4j;

import io.github.flashattn4j.internal.NativeLibrary;
import io.github.flashattn4j.internal.bindings.flashattn4j_h;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * The gate to the generated bindings: {@link #ensureLoaded} before the first binding is touched loads the
 * native library (the bindings' own class initializers would fail without it, and a failed class
 * initializer turns every later use into a {@link NoClassDefFoundError}); {@link #check} turns a native
 * status into a typed exception.
 */
final class NativeCalls {

    private static final long MAX_MESSAGE_BYTES = 1 << 16;

    private NativeCalls() {}

    /**
     * Makes sure the library is loaded.
     *
     * @throws UnsatisfiedLinkError saying why, if it cannot be; the same error on every call
     */
    static void ensureLoaded() {
        NativeLibrary.ensureLoaded();
    }

    /** Throws the exception matching {@code status} with the native message, unless it is {@code FA4J_OK}. */
    static void check(int status) {
        FlashAttnException failure = failure(status);
        if (failure != null) throw failure;
    }

    /**
     * The exception matching {@code status} with the native message, or null for {@code FA4J_OK}; for
     * paths (such as releasing resources) that must go on after a failure and report it later.
     */
    static FlashAttnException failure(int status) {
        if (status == flashattn4j_h.FA4J_OK()) return null;
        return FlashAttnException.of(FlashAttnException.Status.ofCode(status), lastErrorMessage());
    }

    private static String lastErrorMessage() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment holder = arena.allocate(ValueLayout.ADDRESS);
            if (flashattn4j_h.fa4j_last_error_message(holder) != flashattn4j_h.FA4J_OK()) return "(no message)";
            MemorySegment message = holder.get(ValueLayout.ADDRESS, 0);
            return message.equals(MemorySegment.NULL) ? "(no message)" : message.reinterpret(MAX_MESSAGE_BYTES).getString(0);
        }
    }
}
