package io.github.flashattn4j;

/**
 * A failure reported by the native library, carrying its status and message. The subclasses let callers
 * catch the cases they can act on.
 */
public sealed class FlashAttnException extends RuntimeException
        permits FlashAttnException.InvalidArgument, FlashAttnException.Unsupported, FlashAttnException.OutOfMemory,
                FlashAttnException.Cuda, FlashAttnException.NoDevice {

    private static final long serialVersionUID = 1L;

    /** The native library's status codes ({@code fa4j_status}). */
    public enum Status {
        OK, INVALID_ARGUMENT, UNSUPPORTED, OUT_OF_MEMORY, CUDA, NO_DEVICE, INTERNAL;

        /** The status with the given native code; unknown codes map to {@link #INTERNAL}. */
        public static Status ofCode(int code) {
            Status[] all = values();
            return code >= 0 && code < all.length ? all[code] : INTERNAL;
        }
    }

    private final Status status;

    FlashAttnException(Status status, String message) {
        super(message);
        this.status = status;
    }

    /** What kind of failure this is. */
    public Status status() {
        return status;
    }

    /** The exception for a failed native call. */
    static FlashAttnException of(Status status, String message) {
        return switch (status) {
            case INVALID_ARGUMENT -> new InvalidArgument(message);
            case UNSUPPORTED -> new Unsupported(message);
            case OUT_OF_MEMORY -> new OutOfMemory(message);
            case CUDA -> new Cuda(message);
            case NO_DEVICE -> new NoDevice(message);
            case OK, INTERNAL -> new FlashAttnException(Status.INTERNAL, message);
        };
    }

    /** An argument (shape, stride, dtype, device) does not fit the call. */
    public static final class InvalidArgument extends FlashAttnException {
        private static final long serialVersionUID = 1L;

        InvalidArgument(String message) {
            super(Status.INVALID_ARGUMENT, message);
        }
    }

    /** A well-formed request this build or backend does not implement (for example a head dim). */
    public static final class Unsupported extends FlashAttnException {
        private static final long serialVersionUID = 1L;

        Unsupported(String message) {
            super(Status.UNSUPPORTED, message);
        }
    }

    /** Host or device memory could not be allocated. */
    public static final class OutOfMemory extends FlashAttnException {
        private static final long serialVersionUID = 1L;

        OutOfMemory(String message) {
            super(Status.OUT_OF_MEMORY, message);
        }
    }

    /** The CUDA runtime reported an error. */
    public static final class Cuda extends FlashAttnException {
        private static final long serialVersionUID = 1L;

        Cuda(String message) {
            super(Status.CUDA, message);
        }
    }

    /** No usable CUDA device: no driver, no device, or a library built without CUDA. */
    public static final class NoDevice extends FlashAttnException {
        private static final long serialVersionUID = 1L;

        NoDevice(String message) {
            super(Status.NO_DEVICE, message);
        }
    }
}
