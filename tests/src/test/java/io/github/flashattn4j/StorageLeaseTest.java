package io.github.flashattn4j;

import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The lease/close state machine of {@link Storage}, seen from inside the package: whether host memory has
 * really been released shows in its public segment, whose arena the release closes.
 */
class StorageLeaseTest {

    /** A storage of {@code bytes} and a segment that dies when its memory is released. */
    private record Watched(HostStorage storage, MemorySegment segment) {
        static Watched allocate(long bytes) {
            HostStorage storage = HostStorage.allocate(bytes);
            return new Watched(storage, storage.publicSegment());
        }

        boolean freed() {
            return !segment.scope().isAlive();
        }
    }

    @Test
    void closeWithoutLeasesFreesAtOnce() {
        Watched watched = Watched.allocate(64);
        HostStorage storage = watched.storage();
        assertFalse(watched.freed());
        storage.close();
        assertTrue(storage.isClosed());
        assertTrue(watched.freed());
        assertDoesNotThrow(storage::close);
        assertThrows(IllegalStateException.class, storage::lease);
    }

    @Test
    void closeUnderLeasesIsDeferredToTheLastRelease() {
        Watched watched = Watched.allocate(64);
        HostStorage storage = watched.storage();
        Storage.Lease first = storage.lease(), second = storage.lease();
        storage.close();
        assertTrue(storage.isClosed(), "closed for new users at once");
        assertThrows(IllegalStateException.class, storage::lease);
        assertFalse(watched.freed(), "freed under a lease");
        first.close();
        first.close();  // a lease released twice counts once
        assertFalse(watched.freed(), "freed while a lease is still held");
        second.close();
        assertTrue(watched.freed(), "not freed by the last release");
    }

    @Test
    void leasesReleasedBeforeCloseLeaveTheFreeToClose() {
        Watched watched = Watched.allocate(64);
        HostStorage storage = watched.storage();
        try (Storage.Lease lease = storage.lease()) {
            assertFalse(storage.isClosed());
        }
        assertFalse(watched.freed());
        storage.close();
        assertTrue(watched.freed());
    }

    @Test
    void tensorCloseUnderALeaseIsDeferredToo() {
        Tensor t = Tensor.full(3f, DType.FLOAT32, Device.CPU, 16);
        Storage.Lease lease = t.lease();
        assertDoesNotThrow(t::close);
        assertTrue(t.isClosed());
        assertThrows(IllegalStateException.class, t::toFloatArray);
        lease.close();
        assertThrows(IllegalStateException.class, t::lease);
    }

    @Test
    void racingLeasesAndOneCloseFreeExactlyWhenTheLastLeaseEnds() throws Exception {
        int threads = 8;
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        try {
            for (int round = 0; round < 200; round++) {
                Watched watched = Watched.allocate(4096);
                HostStorage storage = watched.storage();
                AtomicBoolean closed = new AtomicBoolean();
                CountDownLatch go = new CountDownLatch(1);
                List<Future<?>> users = new ArrayList<>();
                for (int i = 0; i < threads; i++) {
                    users.add(pool.submit(() -> {
                        go.await();
                        while (true) {
                            Storage.Lease lease;
                            try {
                                lease = storage.lease();
                            } catch (IllegalStateException e) {
                                assertTrue(closed.get(), "lease refused before close");
                                return null;
                            }
                            try (lease) {
                                // Memory under a lease is always there, closed or not.
                                watched.segment().set(ValueLayout.JAVA_BYTE, 4095, (byte) 1);
                            }
                        }
                    }));
                }
                go.countDown();
                Thread.onSpinWait();
                closed.set(true);
                storage.close();
                for (Future<?> user : users) user.get(30, TimeUnit.SECONDS);
                assertTrue(watched.freed(), "round " + round + ": every lease ended but the memory was not freed");
            }
        } finally {
            pool.shutdownNow();
        }
    }
}
