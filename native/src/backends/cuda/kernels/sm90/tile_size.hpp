// The tile shape of the Hopper forward kernel per head-dim instantiation, in one place (the head dims
// themselves are defined in cmake/Fa4jInstantiations.cmake). Plain C++: constexpr data only.
//
// Constraints each choice meets (forward_tile.cuh static_asserts them):
//   - shared memory: Q (block_m x padded head dim) + stages x (K + V) (block_n x padded head dim each),
//     16-bit, + barriers + 1 KB of alignment slack, within the 227 KB a CTA may have;
//   - registers: after setmaxnreg a consumer thread of 2 consumer warpgroups has 240 (3: 160) and holds
//     S (block_n / 2 floats), P (block_n / 4) and O (padded head dim / 2) across the loop;
//   - wgmma atoms: block_n and the padded head dim are N sizes CUTLASS 3.4 has (64, 96, 128, 192, 256).
// Head dims that are not a multiple of 64 (96) keep their K/V/Q tiles 64-column padded (TMA zero-fills
// the columns past the call's head dim): Q·Kᵀ runs over the real head dim, P·V over the padded one.
#pragma once

namespace fa4j::cuda::sm90 {

struct ForwardTileSize {
    int block_n;    // keys per pipeline step
    int consumers;  // consumer warpgroups of 64 query rows: block_m = 64 x consumers
    int stages;     // K and V buffers in the shared-memory ring
    bool pingpong;  // consumers take turns issuing their products
};

// | head dim | tile (M x N) | stages | smem    | consumer regs S + P + O |
// | 64       | 192 x 128    | 4      | 153 KB  | 64 + 32 + 32 (of 160)   |
// | 96       | 128 x 128    | 2      | 161 KB  | 64 + 32 + 64 (of 240)   |  padded to 128 columns
// | 128      | 128 x 128    | 2      | 161 KB  | 64 + 32 + 64 (of 240)   |
// | 192      | 128 x 96     | 2      | 193 KB  | 48 + 24 + 96 (of 240)   |
// | 256      | 128 x 64     | 2      | 193 KB  | 32 + 16 + 128 (of 240)  |
// 64 and 128 are the measured v1/v2 shapes (docs/PERF.md); 192 and 256 take the widest block_n whose S,
// P and O fit the consumers' registers and whose stages fit shared memory (FlashAttention-3 uses 112 and
// 80 there, N sizes CUTLASS 3.4 has no wgmma atom for).
constexpr ForwardTileSize forward_tile_size(int head_dim) {
    return head_dim <= 64    ? ForwardTileSize{128, 3, 4, true}
           : head_dim <= 128 ? ForwardTileSize{128, 2, 2, true}
           : head_dim <= 192 ? ForwardTileSize{96, 2, 2, true}
                             : ForwardTileSize{64, 2, 2, true};
}

}  // namespace fa4j::cuda::sm90
