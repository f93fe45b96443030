package io.github.flashattn4j.tests;

import io.github.flashattn4j.Cuda;
import io.github.flashattn4j.CudaStream;
import io.github.flashattn4j.Device;
import io.github.flashattn4j.internal.NativeLibrary;

/**
 * The main class of the child JVMs of {@link NativeLibraryLoadingTest}: touches the library twice through
 * the public API and prints one line per attempt, "ok PATH" or "failed CLASS: MESSAGE"; with the argument
 * "hold" it then waits to be killed; with "stream-first" it first synchronizes a default stream and prints
 * "first ok" or "first CLASS".
 */
public final class LoaderProbe {

    private LoaderProbe() {}

    public static void main(String[] args) throws InterruptedException {
        if (args.length > 0 && args[0].equals("stream-first")) {
            // The first touch of the library is a call on a default stream, which loads nothing by itself.
            try {
                CudaStream.defaultStream(Device.cuda(0)).synchronize();
                System.out.println("first ok");
            } catch (Throwable t) {
                System.out.println("first " + t.getClass().getName());
            }
        }
        for (int attempt = 0; attempt < 2; attempt++) {
            try {
                Cuda.isCompiled();
                System.out.println("ok " + NativeLibrary.ensureLoaded());
            } catch (Throwable t) {
                System.out.println("failed " + t.getClass().getName() + ": " + t.getMessage().replace('\n', ' '));
            }
        }
        System.out.flush();
        if (args.length > 0 && args[0].equals("hold")) Thread.sleep(120_000);
    }
}
