package io.github.flashattn4j;

/**
 * Where a tensor's memory lives: host memory ({@link #CPU}) or the memory of one CUDA device.
 *
 * @param kind  CPU or CUDA
 * @param index the CUDA device ordinal; always 0 for the CPU
 */
public record Device(Kind kind, int index) {

    /** Device kinds, with their DLPack {@code DLDeviceType} values. */
    public enum Kind {
        CPU(1),
        CUDA(2);

        private final int dlpackCode;

        Kind(int dlpackCode) {
            this.dlpackCode = dlpackCode;
        }

        /** The DLPack device type of this kind. */
        public int dlpackCode() {
            return dlpackCode;
        }
    }

    /** Host memory. */
    public static final Device CPU = new Device(Kind.CPU, 0);

    public Device {
        if (kind == null) throw new NullPointerException("kind");
        if (index < 0) throw new IllegalArgumentException("device index must be >= 0: " + index);
        if (kind == Kind.CPU && index != 0) throw new IllegalArgumentException("the CPU device has index 0");
    }

    /** The CUDA device with the given ordinal (whether it exists is checked when memory is allocated). */
    public static Device cuda(int index) {
        return new Device(Kind.CUDA, index);
    }

    /** The first CUDA device if one is usable, else the CPU. */
    public static Device best() {
        return Cuda.deviceCount() > 0 ? cuda(0) : CPU;
    }

    public boolean isCuda() {
        return kind == Kind.CUDA;
    }

    @Override
    public String toString() {
        return kind == Kind.CPU ? "cpu" : "cuda:" + index;
    }
}
