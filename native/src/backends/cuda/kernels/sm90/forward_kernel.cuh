// The Hopper forward kernel (FlashAttention-3 design, written for this library): out = softmax(transformed,
// masked scores) · v and the row logsumexp, on sm_90a, composed of
//   a mainloop   (mainloop.cuh: TMA producer, wgmma consumers, the pipeline between them),
//   an epilogue  (epilogue.cuh: normalise, stage O through shared memory, store O and lse),
//   a scheduler  (tile_scheduler.cuh: which (m_block, head, batch) work tiles a CTA runs).
// One CTA has 1 + kConsumers warpgroups: the producer warpgroup gives most of its registers away
// (setmaxnreg) and one thread of it issues every TMA load; each consumer warpgroup owns 64 query rows of
// the work tile.
#pragma once

#include <cuda_runtime.h>

#include "backends/cuda/kernels/sm90/epilogue.cuh"
#include "backends/cuda/kernels/sm90/forward_shared.cuh"
#include "backends/cuda/kernels/sm90/mainloop.cuh"
#include "backends/cuda/kernels/sm90/primitives.cuh"
#include "backends/cuda/kernels/sm90/tile_scheduler.cuh"

namespace fa4j::cuda::sm90 {

template <class Mainloop_, class Epilogue_, class Scheduler_>
struct ForwardKernel {
    using Mainloop = Mainloop_;
    using Epilogue = Epilogue_;
    using Scheduler = Scheduler_;
    using Tile = typename Mainloop::Tile;
    using Smem = typename Mainloop::Smem;
    static constexpr int kThreads = Tile::kThreads;
    static constexpr int kSmemBytes = Tile::kSmemBytes;

    __device__ static WorkTile work_tile(const kernels::ForwardParams& p, const TileCoord& t) {
        return WorkTile::of<Tile::kBlockM, Tile::kBlockN>(p, t);
    }

    __device__ static void run(const ForwardKernelParams& kp, unsigned char* smem_raw) {
        const kernels::ForwardParams& p = kp.p;
        const Smem sm(smem_raw);
        const int tid = static_cast<int>(threadIdx.x);
        const int warpgroup = tid / kWarpgroupThreads;

        Scheduler scheduler(kp.sched);
        TileCoord coord;
        if (!scheduler.first(coord)) return;  // a CTA of the grid's padding
        if constexpr (!Scheduler::kPersistent) {
            // The tile is past its sequence's end (varlen: the grid covers the longest): nothing to do.
            const WorkTile w = work_tile(p, coord);
            if (w.rows <= 0) {
                if (tid == 0) w.seq.report(p);
                return;
            }
        }

        if (tid == 0) sm.init_barriers();
        __syncthreads();

        if (warpgroup == 0) {
            // ---------------- producer ----------------
            setmaxnreg_decrease<Tile::kProducerRegisters>();
            if (tid == 0) {
                tma_prefetch_descriptor(&kp.tma.q);
                tma_prefetch_descriptor(&kp.tma.k);
                tma_prefetch_descriptor(&kp.tma.v);
                PipelineState st;
                WorkTile w = work_tile(p, coord);  // each role computes its tiles after setmaxnreg
                while (true) {
                    w.seq.report(p);  // clamped varlen metadata raises the call's flag (one thread per tile)
                    if (w.has_keys()) Mainloop::template load<Scheduler::kPersistent>(kp, sm, w, st);
                    if (!scheduler.next(coord)) break;
                    w = work_tile(p, coord);
                }
            }
        } else {
            // ---------------- consumers ----------------
            setmaxnreg_increase<Tile::kConsumerRegisters>();
            const int consumer = warpgroup - 1;
            const int ctid = tid - warpgroup * kWarpgroupThreads;
            PipelineState st;
            WorkTile w = work_tile(p, coord);
            while (true) {
                if (w.rows > 0) {
                    float o[Tile::kORegs];
                    typename Mainloop::Softmax softmax(p);
                    const bool has_keys = w.has_keys();
                    if (has_keys) {
                        Mainloop::mma(kp, sm, w, st, consumer, ctid, o, softmax);
                    } else {
#pragma unroll
                        for (int i = 0; i < Tile::kORegs; ++i) o[i] = 0.f;
                    }
                    Epilogue::store(kp, sm, w, consumer, ctid, o, softmax, has_keys);
                    if constexpr (Scheduler::kPersistent) {
                        // The epilogue is done with the Q buffer (its shared-memory reads were consumed by
                        // the global stores): the producer may load the next tile's Q there.
                        if (has_keys) {
                            fence_proxy_async_shared();
                            __syncwarp();
                            if (ctid % 32 == 0) mbarrier_arrive(sm.q_empty());
                        }
                    }
                }
                if (!scheduler.next(coord)) break;
                w = work_tile(p, coord);
            }
        }
    }
};

template <class Kernel>
__global__ void __launch_bounds__(Kernel::kThreads, 1) forward_kernel(const __grid_constant__ ForwardKernelParams kp) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ unsigned char smem_raw[];
    Kernel::run(kp, smem_raw);
#else
    (void)kp;
    FA4J_SM90_UNAVAILABLE();
#endif
}

}  // namespace fa4j::cuda::sm90
