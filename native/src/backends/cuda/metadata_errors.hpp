// Bad varlen metadata, reported without a synchronisation of its own. cu_seqlens and seqused_k live on the
// device and are not read before a launch (that would need a sync); the kernels clamp whatever they say
// and, when they had to, set a per-device flag in mapped host memory. Every synchronising call of the
// library on that device (stream/device synchronize, the synchronous copies) then reads the flag, a plain
// host load after the sync, and turns it into FA4J_ERROR_INVALID_ARGUMENT once. The flag is process-wide
// per device: the error reaches the next synchronising caller after the faulty kernel finished, which may
// be another thread's; outputs of the faulty call are finite but meaningless.
#pragma once

namespace fa4j::cuda {

// The device pointer of `device`'s flag, allocated (4 bytes of pinned, mapped host memory, kept for the
// process's lifetime) on first use. Throws fa4j::Error on a CUDA error.
int* metadata_error_flag(int device);

// After a synchronisation on `device`: throws FA4J_ERROR_INVALID_ARGUMENT (and clears the flag) when a kernel
// finished since the last report found bad varlen metadata. Costs one load when no varlen call ever ran.
void report_metadata_errors(int device);

}  // namespace fa4j::cuda
