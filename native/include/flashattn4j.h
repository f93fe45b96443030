/*
 * flashattn4j — the C ABI of the native attention library.
 *
 * Rules every function here follows:
 *  - It returns an fa4j_status. On failure a message describing the problem is kept in thread-local
 *    storage; fa4j_last_error_message() returns it on the same thread until the next failing call.
 *  - Only plain C types cross this boundary; no C++ or CUDA type appears here.
 *  - Structs that may grow start with `struct_size`, which the caller sets to sizeof(the struct) as it
 *    knows it, so that older callers keep working when fields are appended.
 *  - Tensors cross as fa4j_tensor, which has the memory layout of DLPack's DLTensor (v0.8+), so a
 *    DLTensor* can be passed where an fa4j_tensor* is expected.
 *  - Nothing here takes ownership of memory it is handed; memory it hands out (fa4j_cuda_malloc,
 *    fa4j_cuda_stream_create) is returned through the matching release function.
 *
 * Java bindings are generated from this header by jextract (see bindings/regenerate.sh).
 */
#ifndef FLASHATTN4J_H
#define FLASHATTN4J_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define FA4J_API __declspec(dllexport)
#else
#define FA4J_API __attribute__((visibility("default")))
#endif

/* The ABI version this header describes. The library reports its own through fa4j_get_version();
 * a caller compiled against a different FA4J_ABI_VERSION must refuse to use the library. */
#define FA4J_ABI_VERSION 3

/* ---------------------------------------------------------------------------------------------- */
/* Status                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

typedef enum fa4j_status {
    FA4J_OK = 0,
    /* A null pointer, a shape, stride, dtype or device that does not fit the call. */
    FA4J_ERROR_INVALID_ARGUMENT = 1,
    /* A well-formed request that this build or backend does not implement (e.g. a head dim). */
    FA4J_ERROR_UNSUPPORTED = 2,
    /* Host or device memory could not be allocated. */
    FA4J_ERROR_OUT_OF_MEMORY = 3,
    /* The CUDA runtime reported an error; the message carries its name and text. */
    FA4J_ERROR_CUDA = 4,
    /* No CUDA device is usable: no driver, no device, or a library built without CUDA. */
    FA4J_ERROR_NO_DEVICE = 5,
    /* A bug in this library. */
    FA4J_ERROR_INTERNAL = 6
} fa4j_status;

/* The message of the last failing call on this thread, or "" if none failed yet. The pointer stays
 * valid until the next call into this library on this thread. Never fails when message is non-null. */
FA4J_API fa4j_status fa4j_last_error_message(const char** message);

/* ABI version (FA4J_ABI_VERSION of the library's own header) and the library's release version. */
FA4J_API fa4j_status fa4j_get_version(int32_t* abi_version, int32_t* major, int32_t* minor, int32_t* patch);

/* ---------------------------------------------------------------------------------------------- */
/* Tensors (DLPack-compatible layout)                                                              */
/* ---------------------------------------------------------------------------------------------- */

/* Values of DLPack's DLDeviceType that this library understands. */
typedef enum fa4j_device_type {
    FA4J_DEVICE_CPU = 1,  /* kDLCPU  */
    FA4J_DEVICE_CUDA = 2  /* kDLCUDA */
} fa4j_device_type;

/* Values of DLPack's DLDataTypeCode that this library understands (the float8 codes are DLPack 1.1's,
 * include/dlpack/dlpack.h of dmlc/dlpack v1.1). */
typedef enum fa4j_dtype_code {
    FA4J_DTYPE_CODE_INT = 0,              /* kDLInt    */
    FA4J_DTYPE_CODE_UINT = 1,             /* kDLUInt   */
    FA4J_DTYPE_CODE_FLOAT = 2,            /* kDLFloat  */
    FA4J_DTYPE_CODE_BFLOAT = 4,           /* kDLBfloat */
    FA4J_DTYPE_CODE_FLOAT8_E4M3FN = 10,   /* kDLFloat8_e4m3fn */
    FA4J_DTYPE_CODE_FLOAT8_E5M2 = 12      /* kDLFloat8_e5m2   */
} fa4j_dtype_code;

/*
 * The dtypes (code, bits), all with lanes = 1:
 *   float32 (FLOAT, 32), float16 (FLOAT, 16), bfloat16 (BFLOAT, 16)   attention's inputs and outputs
 *   int32 (INT, 32)                                                   sequence offsets and lengths
 *   float8_e4m3fn (FLOAT8_E4M3FN, 8)  1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinity, NaN is
 *                                     S.1111.111; largest finite ±448, smallest subnormal 2^-9
 *   float8_e5m2 (FLOAT8_E5M2, 8)      1 sign, 5 exponent (bias 15), 2 mantissa bits (IEEE-like, the top
 *                                     byte of a float16); ±infinity; largest finite ±57344
 *   int8 (INT, 8)                     two's complement
 *   int4 (INT, 4), packed             two's complement nibbles, two per byte, "little bit-endian" as
 *                                     DLPack 1.1 specifies for packed sub-byte types: the element at even
 *                                     element offset e lives in the LOW nibble (bits 0-3) of byte e/2,
 *                                     the element at odd offset e + 1 in the HIGH nibble (bits 4-7).
 * Quantized attention (fa4j_attention_args, "quantization") consumes float8_e4m3fn, int8 and int4 tensors;
 * float8_e5m2 is a storage and exchange dtype only.
 *
 * Packed int4 tensors. Shapes and strides count elements (nibbles), byte_offset counts bytes, and every
 * row of the innermost dimension starts on a byte: an int4 tensor has ndim >= 1, an innermost dimension of
 * even size with stride 1, and even strides in every other dimension of size > 1 (strides are free when
 * the tensor has no element). Element (i0, ..., in) is nibble  sum(ik * strides[k])  counted from (char*)data + byte_offset.
 * A tensor that breaks this rule is refused (FA4J_ERROR_INVALID_ARGUMENT), also on DLPack import, which
 * further refuses int4 tensors whose producer set DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED (one element
 * per byte). For every other dtype, element (i0, ..., in) lives at
 *     (char*)data + byte_offset + (bits / 8) * sum(ik * strides[k]).
 */

/* DLDevice. device_type holds an fa4j_device_type value. */
typedef struct fa4j_device {
    int32_t device_type;
    int32_t device_id;
} fa4j_device;

/* DLDataType. code holds an fa4j_dtype_code value; lanes is 1 for every dtype this library uses (see the
 * list of dtypes above). */
typedef struct fa4j_dtype {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
} fa4j_dtype;

/* DLTensor. Strides are in elements and must be given (never null here); the element at index
 * (i0, ..., in) lives at (char*)data + byte_offset + sizeof(element) * sum(ik * strides[k]) (packed int4:
 * see above). */
typedef struct fa4j_tensor {
    void* data;
    fa4j_device device;
    int32_t ndim;
    fa4j_dtype dtype;
    int64_t* shape;
    int64_t* strides;
    uint64_t byte_offset;
} fa4j_tensor;

/* ---------------------------------------------------------------------------------------------- */
/* CUDA devices, memory and streams                                                                */
/* ---------------------------------------------------------------------------------------------- */

/* A CUDA stream (cudaStream_t). NULL is the device's legacy default stream. */
typedef struct fa4j_stream_opaque* fa4j_stream;

typedef enum fa4j_memcpy_kind {
    FA4J_MEMCPY_HOST_TO_DEVICE = 1,
    FA4J_MEMCPY_DEVICE_TO_HOST = 2,
    FA4J_MEMCPY_DEVICE_TO_DEVICE = 3
} fa4j_memcpy_kind;

typedef struct fa4j_device_properties {
    size_t struct_size;
    char name[256];
    int32_t compute_capability_major;
    int32_t compute_capability_minor;
    int32_t multiprocessor_count;
    int32_t reserved;
    uint64_t total_global_memory_bytes;
    uint64_t shared_memory_per_block_optin_bytes;
} fa4j_device_properties;

/* Number of usable CUDA devices. Sets 0 (and returns FA4J_OK) when there is no driver, no device,
 * or the library was built without CUDA: asking is never an error. */
FA4J_API fa4j_status fa4j_cuda_device_count(int32_t* count);

/* Whether this build of the library contains the CUDA backend (1) or not (0). */
FA4J_API fa4j_status fa4j_cuda_compiled(int32_t* compiled);

FA4J_API fa4j_status fa4j_cuda_get_device_properties(int32_t device, fa4j_device_properties* properties);

/* Free and total memory of the device, in bytes (cudaMemGetInfo). */
FA4J_API fa4j_status fa4j_cuda_mem_get_info(int32_t device, size_t* free_bytes, size_t* total_bytes);

/* Plain device memory (cudaMalloc/cudaFree: the free synchronizes the device). bytes == 0 yields a null
 * pointer; fa4j_cuda_free(device, NULL) does nothing. Buffers (below) are the stream-ordered way. */
FA4J_API fa4j_status fa4j_cuda_malloc(int32_t device, size_t bytes, void** pointer);
FA4J_API fa4j_status fa4j_cuda_free(int32_t device, void* pointer);

/* Copies `bytes` on `stream` and waits for that stream to finish, so host memory may be pageable
 * and may be reused as soon as the call returns. */
FA4J_API fa4j_status fa4j_cuda_memcpy(int32_t device, void* destination, const void* source, size_t bytes,
                                      int32_t kind, fa4j_stream stream);

/* Sets `bytes` bytes to `value`, ordered on `stream` (asynchronous). */
FA4J_API fa4j_status fa4j_cuda_memset(int32_t device, void* pointer, int32_t value, size_t bytes,
                                      fa4j_stream stream);

FA4J_API fa4j_status fa4j_cuda_stream_create(int32_t device, fa4j_stream* stream);
FA4J_API fa4j_status fa4j_cuda_stream_destroy(int32_t device, fa4j_stream stream);
FA4J_API fa4j_status fa4j_cuda_stream_synchronize(int32_t device, fa4j_stream stream);
FA4J_API fa4j_status fa4j_cuda_device_synchronize(int32_t device);

/* ---------------------------------------------------------------------------------------------- */
/* Buffers: memory the library owns, reference-counted, freed in stream order                      */
/* ---------------------------------------------------------------------------------------------- */

/*
 * A block of host or device memory with a reference count. The library hands out one reference with
 * each buffer it creates; fa4j_buffer_retain adds one; fa4j_buffer_release drops one and frees the memory
 * with the last. Buffers back the tensors of language bindings and cross DLPack (below) without copies.
 *
 * Device buffers come from a memory pool the library keeps per device (a CUDA stream-ordered pool of its
 * own, so other libraries' pools and limits are untouched). Allocation and release are ordered on CUDA
 * streams and never synchronize the device:
 *  - fa4j_buffer_allocate on stream S returns memory that work queued on S may use at once; work on
 *    another stream may use it after it has been ordered after S (synchronize S, or an event).
 *  - fa4j_buffer_release(buffer, streams, n) says: "the work queued so far on each of these streams may
 *    still use the memory". The memory is reused only after all of it has finished, whichever reference
 *    goes last. A release with no streams means no queued work uses it (e.g. a DLPack deleter); the memory
 *    is then ordered after the device's legacy default stream, which covers blocking streams.
 * The rule for tensors used on several streams is therefore: name every stream that used the memory when
 * releasing it (language bindings track this for their tensors), or synchronize those streams first.
 *
 * Host buffers are zero-filled, 64-byte aligned, and freed at once by the last release (host work of this
 * library never outlives a call). Releasing the last reference of memory still used by a running call on
 * another thread is the caller's bug, as with free().
 */
typedef struct fa4j_buffer_opaque* fa4j_buffer;

/* A new buffer of `bytes` bytes (0 is allowed: data is then non-null but must not be dereferenced) on
 * `device` (CPU: stream must be NULL), ordered on `stream` for CUDA. */
FA4J_API fa4j_status fa4j_buffer_allocate(fa4j_device device, size_t bytes, fa4j_stream stream, fa4j_buffer* buffer);

/* The buffer's first byte, size and device. Any output may be NULL. */
FA4J_API fa4j_status fa4j_buffer_info(fa4j_buffer buffer, void** data, size_t* bytes, fa4j_device* device);

FA4J_API fa4j_status fa4j_buffer_retain(fa4j_buffer buffer);

/* Drops one reference; see above for `streams` (stream_count entries, each of the buffer's device; NULL
 * entries name the legacy default stream). Device streams only matter for device buffers. */
FA4J_API fa4j_status fa4j_buffer_release(fa4j_buffer buffer, const fa4j_stream* streams, int32_t stream_count);

/* Bytes of device memory in use by live buffers and workspaces, and bytes the device's pool holds
 * (in use plus cached for reuse). Both 0 for a device the library has not allocated on yet. */
FA4J_API fa4j_status fa4j_cuda_pool_get_info(int32_t device, uint64_t* used_bytes, uint64_t* reserved_bytes);

/* Returns cached, unused pool memory to the device until the pool holds at most `keep_bytes` beyond what
 * is in use. Memory freed by still-queued work is returned once that work has finished. */
FA4J_API fa4j_status fa4j_cuda_pool_trim(int32_t device, uint64_t keep_bytes);

/* Makes work queued on `waiting` from now on wait for the work queued so far on `waited` (an event
 * recorded on one, waited for by the other; neither the host nor the device synchronizes). */
FA4J_API fa4j_status fa4j_cuda_stream_wait(int32_t device, fa4j_stream waiting, fa4j_stream waited);

/* ---------------------------------------------------------------------------------------------- */
/* DLPack                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

/*
 * Zero-copy exchange with other libraries through DLPack's C structs: DLManagedTensorVersioned (DLPack
 * 1.x; `versioned` = 1) or the legacy DLManagedTensor (`versioned` = 0). They are passed as void* so this
 * header does not depend on dlpack.h; their layouts are DLPack's, and fa4j_tensor is DLTensor.
 *
 * Export: fa4j_dlpack_export writes a new managed tensor describing `tensor` (shape and strides are
 * copied; strides are always set) whose memory is kept alive by one reference on `owner`, taken here and
 * dropped by the managed tensor's deleter. The consumer owns the managed tensor and must call its deleter
 * exactly once, from any thread, at any time (even after the exporting thread or language runtime has
 * gone). `owner` may be NULL when the caller guarantees the memory outlives the consumer's use. `flags`
 * become the versioned struct's flags (e.g. DLPACK_FLAG_BITMASK_READ_ONLY = 1); legacy export takes 0.
 * Device memory: the consumer must order its use after the producer's work (the producer synchronizes
 * its stream, or hands over a stream to wait on); the deleter's release names no stream (see buffers).
 *
 * Import: fa4j_dlpack_import checks a managed tensor (DLPack major version 1 for versioned structs, a
 * device and dtype this library knows, a CUDA device this process has (else FA4J_ERROR_NO_DEVICE),
 * ndim 0..32, sizes and strides that fit in 63 bits) and takes ownership of it: `owner` receives a buffer
 * whose last release calls the managed tensor's deleter (a NULL deleter is allowed). `tensor` receives a
 * pointer to the DLTensor inside the managed struct, valid while the owner lives; its strides may be NULL
 * (compact row-major, as DLPack allows), and `flags` receives the versioned flags (0 for legacy). On
 * failure nothing is taken: the caller still owns the managed tensor and its deleter has not been called.
 */
#define FA4J_DLPACK_MAJOR_VERSION 1
#define FA4J_DLPACK_MINOR_VERSION 1

FA4J_API fa4j_status fa4j_dlpack_export(fa4j_buffer owner, const fa4j_tensor* tensor, int32_t versioned,
                                        uint64_t flags, void** managed);
FA4J_API fa4j_status fa4j_dlpack_import(void* managed, int32_t versioned, const fa4j_tensor** tensor,
                                        uint64_t* flags, fa4j_buffer* owner);

/* ---------------------------------------------------------------------------------------------- */
/* Attention                                                                                       */
/* ---------------------------------------------------------------------------------------------- */

/*
 * Layouts, in flash-attn's vocabulary:
 *   q, out, dout, dq : [batch, seqlen_q, heads_q,  head_dim]
 *   k, v, dk, dv     : [batch, seqlen_k, heads_kv, head_dim]   heads_q % heads_kv == 0 (GQA/MQA)
 *   lse              : [batch, heads_q, seqlen_q], float32, natural-log logsumexp of each score row
 * Strides of batch, sequence and head are free (non-negative; outputs must not overlap themselves or
 * any other argument); head_dim must be contiguous (stride 1). q, k, v, out, dout, dq, dk, dv share
 * one dtype: float32, float16 or bfloat16; arithmetic accumulates in float32 (quantized attention,
 * fa4j_attention_args.quant_mode, takes quantized q, k, v: see "Quantized attention" at the end). All tensors must be on
 * one device, which selects the backend.
 *
 * Causal masking is aligned to the bottom-right corner, as in flash-attn >= 2.1: query i may attend
 * key j iff j <= i + seqlen_k - seqlen_q. A query row that may attend no key gets out = 0 and
 * lse = -infinity, and contributes nothing to the gradients.
 *
 * Head dims: multiples of 8 from 8 to 256.
 *
 * The CUDA backend supports less: float16 and bfloat16, and 16-byte alignment (every tensor's first
 * element at a multiple of 16 bytes, and batch, sequence and head strides that are multiples of 8
 * elements). Its v2 kernels implement every head dim up to 256 in the forward (128 in the backward),
 * windows, softcap, ALiBi and varlen batches; a build offers a kernel only once it has passed the GPU
 * suite on hardware (builds configured with FA4J_UNVERIFIED_KERNELS offer the others too), so a release
 * build may refuse some of these: fa4j_attention_support says what this build runs. Anything else returns
 * FA4J_ERROR_UNSUPPORTED with a message saying what is missing; nothing is written then.
 *
 * Representable range. Results are finite, and within the FlashAttention tolerance of a float64
 * reference, when every element of q, k, v and dout lies within the float16 range (|x| <= 65504: any
 * float16 tensor, and float32 or bfloat16 tensors of such values) and
 *     |softmax_scale| * head_dim * 65504^2 <= 2^126     (|softmax_scale| <= 3.1e26 at head_dim 64);
 * then scale·q·k, lse and every float32 sum of products stay finite. A larger scale is refused with
 * FA4J_ERROR_INVALID_ARGUMENT (this also covers scale·log2(e), the kernels' exp2 factor, overflowing
 * float). Within the range:
 *  - scores too large for a soft maximum (a scale of 1e10, inputs of 1e4) give the hard maximum: the
 *    largest score's probability is exactly 1, and never more than 1 anywhere;
 *  - a result whose exact value exceeds the output dtype saturates at its largest finite value instead
 *    of becoming infinite: ±65504 for float16 (e.g. dv of inputs near 65504), ±3.3895e38 for bfloat16,
 *    ±FLT_MAX for float32 and for lse;
 *  - the backward recomputes P = exp(scale·q·k - lse), capped at 1, so an lse that does not belong to
 *    the scores cannot make it overflow. lse is a float32 and rounds by |lse|·2^-24: on the CPU, rows
 *    with |lse| > 128 rerun the forward's softmax statistics instead (exact). On CUDA, where the
 *    rounding exceeds the spread of a row's top scores (|lse| beyond ~1e7, scores tied within it),
 *    their probabilities are recomputed up to that factor, and with scores that large dq and dk of
 *    one-hot rows also carry the float32 rounding difference of dO·v and rowsum(dO∘out) times the
 *    scale (the two are equal in exact arithmetic there), as FlashAttention's do. The CUDA float16
 *    backward rounds dS = P∘(dP - D) to float16 for the tensor cores, saturating where |dS| > 65504.
 * Beyond the range (float32 or bfloat16 inputs larger than 65504) nothing is guaranteed.
 */
typedef struct fa4j_attention_params {
    size_t struct_size;
    /* Multiplies q·kᵀ before the softmax; must be finite and within the representable range described
     * above (callers usually pass 1/sqrt(head_dim)). */
    float softmax_scale;
    /* Non-zero: causal mask as above. */
    int32_t causal;
    /* CPU backend: worker threads to use; 0 means the library's default (all hardware threads, or the
     * FA4J_NUM_THREADS environment variable; read once per process). Ignored by the CUDA backend. */
    int32_t num_threads;
    int32_t reserved;
} fa4j_attention_params;

/* Computes out = softmax(scale · q·kᵀ [masked]) · v and lse. On CUDA the work is queued on
 * `stream` and the call returns before it finishes; on the CPU it finishes before returning. */
FA4J_API fa4j_status fa4j_attention_forward(const fa4j_attention_params* params, const fa4j_tensor* q,
                                            const fa4j_tensor* k, const fa4j_tensor* v, const fa4j_tensor* out,
                                            const fa4j_tensor* lse, fa4j_stream stream);

/* Gradients of the forward pass: given dout and the forward's q, k, v, out and lse, writes dq, dk and
 * dv (overwriting them; they need not be zeroed). */
FA4J_API fa4j_status fa4j_attention_backward(const fa4j_attention_params* params, const fa4j_tensor* dout,
                                             const fa4j_tensor* q, const fa4j_tensor* k, const fa4j_tensor* v,
                                             const fa4j_tensor* out, const fa4j_tensor* lse,
                                             const fa4j_tensor* dq, const fa4j_tensor* dk, const fa4j_tensor* dv,
                                             fa4j_stream stream);

/* ---------------------------------------------------------------------------------------------- */
/* Attention with every feature: one arguments struct                                             */
/* ---------------------------------------------------------------------------------------------- */

/* Which kernels run a call. AUTO picks the best the device and the call allow; the others force a
 * family, for tests and comparisons (e.g. the sm_80 kernels on a Hopper GPU). A family that cannot run
 * the call is refused with FA4J_ERROR_UNSUPPORTED and a message saying why. */
typedef enum fa4j_kernel_family {
    FA4J_KERNEL_AUTO = 0,
    FA4J_KERNEL_CPU = 1,   /* the CPU backend: CPU tensors */
    FA4J_KERNEL_SM80 = 2,  /* FlashAttention-2 style kernels on mma.sync: CUDA tensors, any GPU from sm_80 */
    FA4J_KERNEL_SM90 = 3   /* Hopper kernels on TMA + wgmma: CUDA tensors on sm_90 */
} fa4j_kernel_family;

/* What a call computes; each direction reads and writes its own set of the arguments struct's tensors.
 * KV-cache attention is a direction of its own rather than a flag on FORWARD because its contract differs:
 * it reads caches, cache lengths and a block table instead of k and v, and it writes into its inputs (the
 * append). As a direction it is one validation path that refuses every field it does not use, and one
 * answer of the capability query; a flag would pair with backward and varlen fields that would each need
 * a refusal of their own. */
typedef enum fa4j_attention_direction {
    FA4J_ATTENTION_FORWARD = 0,
    FA4J_ATTENTION_BACKWARD = 1,
    /* Forward of new tokens' queries against a KV cache, appending their keys and values first (the KV
     * cache block of fa4j_attention_args). */
    FA4J_ATTENTION_DECODE = 2,
    /* Merges partial attention results (out, lse) of the same queries over disjoint key sets into the
     * attention over their union (the KV cache block of fa4j_attention_args). */
    FA4J_ATTENTION_MERGE = 3
} fa4j_attention_direction;

/* window_left / window_right value meaning "no bound on that side". */
#define FA4J_WINDOW_UNBOUNDED (-1)

/*
 * Everything one attention call needs. New features are new fields at the end: callers set struct_size
 * to sizeof(fa4j_attention_args) as they know it, and fields past it read as zero (the defaults below).
 * Zero-initialise the struct, then set what you use.
 *
 * Tensors (NULL where the direction does not use them: a call given a tensor of another direction is
 * refused with FA4J_ERROR_INVALID_ARGUMENT):
 *   forward:  q, k, v in; out, lse out.
 *   backward: dout, q, k, v, out, lse in; dq, dk, dv out (overwritten).
 *   decode:   q, k_cache, v_cache, block_table, cache_seqlens, k_new, v_new, prefix_k, prefix_v in; out, lse
 *             (optional) out; k_cache, v_cache written where k_new, v_new are appended (see below the struct).
 *   merge:    merge_out[], merge_lse[] in; out, lse (optional) out (see below the struct).
 * Dense layouts are those of fa4j_attention_forward. Variable-length ("varlen") batches, as
 * flash_attn_varlen_func: set cu_seqlens_q and cu_seqlens_k (int32 [batch + 1], non-decreasing, from 0:
 * sequence b's tokens are rows cu_seqlens[b] .. cu_seqlens[b+1] - 1) and pass q, out, dout, dq as
 * [total_q, heads_q, head_dim], k, v, dk, dv as [total_k, heads_kv, head_dim] and lse as float32
 * [heads_q, total_q]. seqused_k (optional, int32 [batch]) limits sequence b to its first seqused_k[b]
 * keys. max_seqlen_q / max_seqlen_k bound the sequence lengths (0: derive them, which needs the lengths on
 * the host). Causal masks and windows are aligned bottom-right per sequence.
 *
 * Score of query i and key j, in this order (flash-attn's reference semantics), with i' = i + Nk - Nq the
 * query's position aligned to the keys' end (Nq, Nk: the lengths of its sequence):
 *   s = softmax_scale · q_i·k_j
 *   s = softcap · tanh(s / softcap)                 if softcap > 0
 *   s = s - alibi_slope(head) · |i' - j|            if alibi_slopes is given (float32 [heads_q] or
 *                                                   [batch, heads_q], finite: checked for CPU tensors;
 *                                                   a bias beyond float saturates at ±FLT_MAX)
 *   masked (excluded) unless i' - window_left <= j <= i' + window_right; causal sets window_right = 0;
 *   a bound of FA4J_WINDOW_UNBOUNDED (-1) is no bound.
 * A query row that may attend no key gets out = 0, lse = -infinity and zero gradients.
 *
 * The capability query fa4j_attention_support answers, without running anything, whether a call is
 * supported by the kernels it would run on, and if not why: the same status and message fa4j_attention
 * would fail with.
 *
 * quant_mode (and the fields after it) make the call quantized attention: see "Quantized attention" below.
 */
typedef struct fa4j_attention_args {
    size_t struct_size;
    int32_t direction;     /* fa4j_attention_direction */
    int32_t kernel_family; /* fa4j_kernel_family; 0 = AUTO */
    const fa4j_tensor* q;
    const fa4j_tensor* k;
    const fa4j_tensor* v;
    const fa4j_tensor* out;
    const fa4j_tensor* lse;
    const fa4j_tensor* dout;
    const fa4j_tensor* dq;
    const fa4j_tensor* dk;
    const fa4j_tensor* dv;
    const fa4j_tensor* cu_seqlens_q;
    const fa4j_tensor* cu_seqlens_k;
    const fa4j_tensor* seqused_k;
    const fa4j_tensor* alibi_slopes;
    int64_t max_seqlen_q;
    int64_t max_seqlen_k;
    float softmax_scale;   /* must be finite, within the representable range (see above) */
    float softcap;         /* 0: none */
    int32_t causal;        /* non-zero: causal (window_right = 0) */
    int32_t window_left;   /* keys before the aligned query position; -1 (or any negative): unbounded */
    int32_t window_right;  /* keys after it; -1 (or any negative): unbounded */
    int32_t num_threads;   /* CPU backend worker threads; 0 = default */
    /* ---- quantization ---- (quantized attention, below; all zero: none) */
    int32_t quant_mode;            /* fa4j_quant_mode; 0 = FA4J_QUANT_NONE */
    uint32_t quant_flags;          /* FA4J_QUANT_NO_SMOOTH_K | FA4J_QUANT_NO_SMOOTH_Q; 0 = smoothing on */
    const fa4j_tensor* q_scale;    /* non-NULL: q is pre-quantized and this is its scale; NULL: q is */
    const fa4j_tensor* k_scale;    /*   float32/float16/bfloat16 and the library quantizes it (k, v alike) */
    const fa4j_tensor* v_scale;
    const fa4j_tensor* k_mean;     /* optional, pre-quantized k only: float32 [batch, heads_kv, head_dim],
                                    * the mean the caller subtracted from k (lse correction) */

    /* ---- KV cache (decode) ----
     * Used by FA4J_ATTENTION_DECODE and FA4J_ATTENTION_MERGE (described below the struct); NULL / 0 for
     * the other directions. */
    const fa4j_tensor* k_cache;        /* decode: dense [batch, capacity, heads_kv, head_dim] or paged
                                        * [num_pages, page_size, heads_kv, head_dim] */
    const fa4j_tensor* v_cache;        /* decode: the shape of k_cache */
    const fa4j_tensor* block_table;    /* decode, paged caches: int32 [batch, max_pages]; NULL: dense caches */
    const fa4j_tensor* cache_seqlens;  /* decode: int32 [batch], keys each sequence's cache holds before the call */
    const fa4j_tensor* k_new;          /* decode, optional: [batch, seqlen_new, heads_kv, head_dim], appended */
    const fa4j_tensor* v_new;          /* decode, optional: the shape of k_new, appended */
    const fa4j_tensor* prefix_k;       /* decode, optional: [prefix_len, heads_kv, head_dim], shared by all sequences */
    const fa4j_tensor* prefix_v;       /* decode, optional: the shape of prefix_k */
    const fa4j_tensor* const* merge_out; /* merge: merge_count partial outputs [batch, seqlen, heads, head_dim] */
    const fa4j_tensor* const* merge_lse; /* merge: their float32 lse [batch, heads, seqlen] */
    int32_t merge_count;               /* merge: number of partial results, >= 1 */
    int32_t num_splits;                /* decode: key splits per sequence; 0 = heuristic, 1..FA4J_DECODE_MAX_SPLITS forced */

    /* ---- determinism ---- */
    int32_t deterministic;  /* non-zero: the results must be bitwise identical run to run for the same inputs,
                             * device and library. The CPU backend always is (whatever its thread count), and
                             * so is every CUDA forward kernel (each output element is written by one block);
                             * the CUDA backward kernels are not (dQ is accumulated in the order blocks
                             * arrive), so a deterministic backward on CUDA tensors is refused with
                             * FA4J_ERROR_UNSUPPORTED until a kernel offers it. 0: no such promise. */
} fa4j_attention_args;

/* The largest num_splits a decode call may force. */
#define FA4J_DECODE_MAX_SPLITS 256

/*
 * ---- KV-cache attention: direction FA4J_ATTENTION_DECODE ----
 * flash_attn_with_kvcache's semantics. Sequence b of the batch has a cache of keys and values, of which the
 * first cache_seqlens[b] = L_b positions are filled; the call
 *   1. appends the new tokens' keys and values, when k_new and v_new are given: k_new[b, t] is written to
 *      position L_b + t of k_cache (likewise v), for t < seqlen_new, in place. cache_seqlens is not written:
 *      the caller advances it by seqlen_new afterwards;
 *   2. computes attention of q against positions 0 .. Nk_b - 1 of the cache, Nk_b = L_b + seqlen_new
 *      (seqlen_new = 0 without k_new), into out and, if given, lse.
 * Tensors:
 *   q, out          [batch, seqlen_q, heads_q, head_dim]; out has q's dtype, or float32 (partial results to
 *                   merge without rounding); lse (optional, NULL: not written) float32 [batch, heads_q, seqlen_q]
 *   k_cache, v_cache dense: [batch, capacity, heads_kv, head_dim], position p of sequence b at [b, p];
 *                   paged: [num_pages, page_size, heads_kv, head_dim] with block_table int32 [batch, max_pages]:
 *                   position p of sequence b is slot p % page_size of page block_table[b, p / page_size];
 *                   capacity = max_pages * page_size. page_size: any multiple of 8. Entries past a sequence's
 *                   used pages (ceil(Nk_b / page_size)) are never read (e.g. -1).
 *   cache_seqlens   int32 [batch], contiguous
 *   k_new, v_new    [batch, seqlen_new, heads_kv, head_dim], both or neither
 *   prefix_k/v      a shared prefix (cascade attention, Hydragen): keys and values that precede every
 *                   sequence's own keys, stored once. Each query then attends prefix_len + Nk_b keys: every
 *                   prefix key (never masked) and its own keys as above. Computed as attention of all the
 *                   queries of the batch against the prefix, read once, merged with the per-sequence results
 *                   by log-sum-exp. Windows and ALiBi are refused with a prefix (FA4J_ERROR_UNSUPPORTED).
 * q, the caches, k_new, v_new and the prefix share one dtype (float32, float16 or bfloat16); every tensor is
 * on one device; head_dim is contiguous, other strides are free. Unused fields must be NULL / 0: k, v, dout,
 * dq, dk, dv, cu_seqlens_q/k, seqused_k, max_seqlen_q/k, merge_*.
 * Scores are those of fa4j_attention_args with Nq = seqlen_q and Nk = Nk_b: masks and ALiBi are aligned to the
 * end of the sequence's keys (bottom-right), so with seqlen_new == seqlen_q and causal, new token t attends
 * positions 0 .. L_b + t (itself and the tokens before it), as in speculative decoding and chunked prefill.
 * GQA/MQA, softcap, windows, ALiBi, any head dim of fa4j_attention_args. seqlen_q may be 0 (append only).
 *
 * Refused before anything is written (FA4J_ERROR_INVALID_ARGUMENT unless said otherwise): everything
 * fa4j_attention checks for a forward, shapes of the caches, block table and lengths, outputs overlapping
 * inputs (the caches count as outputs when appending), and, for CPU tensors, whose metadata is read on the
 * host: cache_seqlens[b] outside 0 .. capacity; an append past capacity (L_b + seqlen_new > capacity); a
 * block table entry of a used page outside 0 .. num_pages - 1; a page an append writes to that appears
 * anywhere else among the used entries of the block table (another sequence's, or twice in one). For CUDA
 * tensors these values are not read on the host: the CUDA decode kernel (AUTO or SM80 family; offered, as
 * the attention kernels are, once it has passed the GPU suite) clamps what they say, never reads or writes
 * outside the tensors, skips the whole append of a sequence whose L_b + seqlen_new exceeds the capacity,
 * treats keys on a page outside 0 .. num_pages - 1 as masked, and reports such metadata through the
 * per-device flag that the next synchronising call turns into FA4J_ERROR_INVALID_ARGUMENT, as for varlen
 * metadata. It merges at most 16 splits of each key range (a forced num_splits above 16 is
 * FA4J_ERROR_UNSUPPORTED) and takes batches of up to 65535 sequences.
 *
 * Split-KV: each sequence's keys (and the prefix) are cut into splits of consecutive keys, computed
 * independently into float32 partial results and merged exactly as FA4J_ATTENTION_MERGE does, in key order
 * (prefix splits first). num_splits = 0 lets a heuristic choose from batch, heads, key counts and the
 * device's parallelism (CPU: its threads); a forced count gives the same result up to float32 rounding.
 * The query heads that share a KV head are processed together, so each key and value row is read once
 * per split (GQA packing).
 *
 * ---- Merging partial results: direction FA4J_ATTENTION_MERGE ----
 * merge_count partial results (merge_out[s], merge_lse[s]) of attention of the same queries over disjoint
 * key sets: merge_out[s] [batch, seqlen, heads, head_dim] of any float dtype, merge_lse[s] float32
 * [batch, heads, seqlen]. Writes out [batch, seqlen, heads, head_dim] (any float dtype, saturating) and,
 * if given, lse [batch, heads, seqlen]: the attention over the union of the key sets. Per row, in float32,
 * s ascending:
 *     m = max_s lse_s;   w_s = exp(lse_s - m);   W = sum_s w_s;
 *     out = sum_s (w_s / W) * out_s;   lse = m + log(W)
 * A result with lse_s = -inf (its queries attended no key) has weight 0 and its out_s is not read; if every
 * lse_s is -inf, out = 0 and lse = -inf. A NaN or +inf lse_s gives NaN. This is what a shared prefix needs:
 * out = merge((out_prefix, lse_prefix), (out_suffix, lse_suffix)). Varlen results ([total, heads, head_dim],
 * lse [heads, total]) merge as batch 1 views. Outputs may not overlap the inputs. Unused fields must be
 * NULL / 0 (q, k, v, alibi_slopes, the KV cache tensors, num_splits, ...); the score options (softmax_scale,
 * softcap, causal, windows) are ignored; num_threads and kernel_family apply. head_dim: any. CUDA tensors run
 * the merge kernel (AUTO or SM80 family; at most 32 partial results per call, FA4J_ERROR_UNSUPPORTED beyond:
 * merge in groups), offered as the attention kernels are, once it has passed the GPU suite.
 */

/* Runs the call `args` describes: queued on `stream` on CUDA, finished on return on the CPU. */
FA4J_API fa4j_status fa4j_attention(const fa4j_attention_args* args, fa4j_stream stream);

/* Whether fa4j_attention(args) would be accepted: *status = FA4J_OK, or the status fa4j_attention would
 * return (FA4J_ERROR_INVALID_ARGUMENT, FA4J_ERROR_UNSUPPORTED, FA4J_ERROR_NO_DEVICE, ...) with its message
 * copied into `reason` (NUL-terminated, truncated to reason_capacity; reason may be NULL when
 * reason_capacity is 0). Validates exactly as fa4j_attention does (arguments, shapes, devices, features,
 * kernel family) but launches nothing, allocates nothing and reads no tensor data except host-side
 * sequence lengths, cache lengths, block tables and ALiBi slopes, so outputs may be described at addresses
 * that hold no memory. Returns FA4J_OK
 * whenever it could answer, also for a call that would fail. */
FA4J_API fa4j_status fa4j_attention_support(const fa4j_attention_args* args, int32_t* status, char* reason,
                                            size_t reason_capacity);

/* ---------------------------------------------------------------------------------------------- */
/* Quantized attention                                                                             */
/* ---------------------------------------------------------------------------------------------- */

/*
 * Quantized attention (forward only) computes q·kᵀ and P·v in low precision with float32 accumulation:
 * SageAttention2 style (INT8 or INT4 q·kᵀ, FP8 or FP16 P·v) or FlashAttention-3 style (FP8 throughout).
 * fa4j_attention_args.quant_mode selects it. Each of q, k, v arrives either in high precision (float32,
 * float16 or bfloat16; all such inputs of a call share one dtype), and the library quantizes it by the
 * rules below, or pre-quantized in the mode's dtype for that operand with its scale tensor (q_scale,
 * k_scale, v_scale are non-NULL exactly for the pre-quantized operands), e.g. as fa4j_quantize made it.
 * out and lse are as for plain attention; out is float32, float16 or bfloat16: the high-precision
 * inputs' dtype when there are any.
 *
 *   mode            q, k            v               q scale       k scale                  v scale
 *   SAGE_INT8_FP8   int8            float8_e4m3fn   [B, Hq, Nq]   [B, Hkv, ceil(Nk/128)]   [B, Hkv, D]
 *   SAGE_INT8_FP16  int8            float16 (*)     [B, Hq, Nq]   [B, Hkv, ceil(Nk/128)]   -
 *   SAGE_INT4_FP8   int4 (packed)   float8_e4m3fn   [B, Hq, Nq]   [B, Hkv, ceil(Nk/128)]   [B, Hkv, D]
 *   SAGE_INT4_FP16  int4 (packed)   float16 (*)     [B, Hq, Nq]   [B, Hkv, ceil(Nk/128)]   -
 *   FP8             float8_e4m3fn   float8_e4m3fn   [B, Hq]       [B, Hkv]                 [B, Hkv]
 * B batch, Hq and Hkv query and key/value heads, Nq and Nk sequence lengths, D head dim; scales are
 * contiguous float32 tensors on the call's device. (*) P·v runs in float16: v is converted to float16
 * (round to nearest even, saturated at ±65504) unless it is float16; it has no scale.
 *
 * Granularity (the groups that share a scale), independent of any kernel's tiles:
 *  - q, SAGE modes: one scale per token (a row of one head). It costs no kernel anything: the factor
 *    joins the per-row softmax scale. Finer than SageAttention2's per-warp groups, so never less accurate.
 *  - k, SAGE modes: one scale per block of 128 keys [128t, 128t + 128) of one (batch, kv head): one scalar
 *    per 128-key tile (a Hopper kernel's tile; a kernel with 64-key tiles uses it for two tiles). A scale
 *    per key would cost every score a multiply and every thread a register per column.
 *  - v, FP8 P·v: one scale per channel of one (batch, kv head), over all its keys: applied once, to the
 *    output's columns.
 *  - FP8 mode: one descale per (batch, query head) for q and per (batch, kv head) for k and v, as in
 *    FlashAttention-3 (which keeps q's per kv head; per query head is finer and as cheap).
 *
 * Quantizers: exact, so fa4j_quantize and every backend produce the same bits. Inputs are read as float32
 * (exact from every input dtype); arithmetic is float32, round to nearest even, no fused multiply-add
 * unless stated.
 *  - amax of a group: the largest |x|; a NaN or an infinity in the group makes it non-finite.
 *  - Integers (qmax = 127 for int8, 7 for int4): scale = amax / qmax and
 *    q = clamp(rint(x * (qmax / amax)), -qmax, qmax) (rint: to nearest even); dequantized: q * scale.
 *  - float8_e4m3fn: scale = amax / 448 and q = e4m3(x * (448 / amax)), rounded to nearest even and
 *    saturated at ±448 (PTX cvt.rn.satfinite); dequantized: q * scale.
 *  - amax < 2^-100, all-zero groups included: scale 0 and every value 0. A non-finite group: scale NaN and
 *    every value 0 (integers) or NaN (float8); attention then gives NaN in every row that sees the group.
 *  - K smoothing (every mode, when the library quantizes k, unless FA4J_QUANT_NO_SMOOTH_K): k - mean is
 *    quantized instead of k, the mean taken per channel over the keys of one (batch, kv head):
 *    mean = S / Nk, S = the sum in ascending order of the sums of consecutive 128-key chunks, each summed
 *    in ascending key order starting from 0. It changes no output: q_i·mean is the same for every key of
 *    row i, and the softmax is invariant to such a shift; lse gets softmax_scale * (q_i·mean) added back
 *    (float32 products summed in channel order; q_i as given, or dequantized if pre-quantized).
 *  - Q smoothing (SAGE_INT4_* modes, when the library quantizes q, unless FA4J_QUANT_NO_SMOOTH_Q): each
 *    block of 64 query rows [64u, 64u + 64) of one (batch, query head) has its per-channel mean m_u
 *    (summed in row order, divided by the block's row count) subtracted before quantization, and the exact
 *    contribution m_u·k_j added to each score s_ij of the block: a chain of float32 fused multiply-adds in
 *    channel order over m_u and the (smoothed) k_j before quantization; for a pre-quantized k, its
 *    dequantized values.
 *  - A pre-quantized k is smoothed (or not) by its producer; k_mean, if given, is the mean it subtracted,
 *    and serves the lse correction only.
 *
 * Scores and softmax (the rules up to the scores are exact; exponentials are each backend's own):
 *  - SAGE: s_ij = float(sum_c q_ic * k_jc) * (q_scale_i * k_scale_t) [+ m_u·k_j], the integer dot product
 *    exact in int32. FP8: s_ij = (float32 dot product of the e4m3 values) * (q_descale * k_descale).
 *    Then softmax_scale, ALiBi, windows and the causal mask act as in plain attention (softcap is refused:
 *    it would break the shift invariance smoothing relies on).
 *  - Each row walks its visible keys in the 128-key blocks above, in ascending order, with a running
 *    maximum m of its scaled scores x_j updated once per block before that block's p_j = exp(x_j - m) are
 *    formed. The row sum l adds the float32 p_j. P·v multiplies P quantized with v's quantized values:
 *    FP8 P·v: e4m3(448 * p_j) (to nearest even, saturated; 448, the e4m3 maximum, is a static scale, as
 *    p_j <= 1); FP16 P·v: float16(p_j). A block's products are summed in float32 and added into the float32
 *    accumulator, which is rescaled by exp(m_old - m_new) when m grows.
 *  - out = acc * v_scale / (448 * l) per channel (FP8 P·v; FP8 mode: the v descale), acc / l (FP16 P·v);
 *    lse = m + log(l), plus the K smoothing correction.
 *
 * Accuracy against float64: docs/ACCURACY.md (measured with the CPU reference implementation).
 * Restrictions: forward only, dense batches (no cu_seqlens), no softcap. The CPU backend runs every mode
 * (the reference implementation of the arithmetic above); the CUDA backend has no quantized kernels yet
 * and refuses them with FA4J_ERROR_UNSUPPORTED. A quantized dtype (int8, int4, float8) for q, k or v
 * without a quant_mode is FA4J_ERROR_INVALID_ARGUMENT.
 */
typedef enum fa4j_quant_mode {
    FA4J_QUANT_NONE = 0,
    FA4J_QUANT_SAGE_INT8_FP8 = 1,   /* INT8 q·kᵀ, FP8 P·v: Hopper (sm_90) and Ada (sm_89) */
    FA4J_QUANT_SAGE_INT8_FP16 = 2,  /* INT8 q·kᵀ, FP16 P·v: any GPU from sm_80 */
    FA4J_QUANT_SAGE_INT4_FP8 = 3,   /* INT4 q·kᵀ, FP8 P·v: Ada (sm_89) */
    FA4J_QUANT_SAGE_INT4_FP16 = 4,  /* INT4 q·kᵀ, FP16 P·v: Ampere (sm_80, sm_86) */
    FA4J_QUANT_FP8 = 5              /* FP8 q·kᵀ and P·v (FlashAttention-3 style): Hopper and Ada */
} fa4j_quant_mode;

/* fa4j_attention_args.quant_flags and fa4j_quantize_args.flags. */
#define FA4J_QUANT_NO_SMOOTH_K 0x1u  /* quantize k as given, without subtracting its mean */
#define FA4J_QUANT_NO_SMOOTH_Q 0x2u  /* SAGE_INT4_*: quantize q without subtracting its block means */

/* Which input of attention a tensor is, for fa4j_quantize. */
typedef enum fa4j_quant_operand {
    FA4J_QUANT_OPERAND_Q = 0,
    FA4J_QUANT_OPERAND_K = 1,
    FA4J_QUANT_OPERAND_V = 2
} fa4j_quant_operand;

/*
 * Quantizes one input of attention as fa4j_attention with the same mode would: the same bits, so that
 * quantizing once (e.g. a key/value cache) and passing the results as pre-quantized inputs gives what the
 * call on the high-precision tensors gives, except that Q smoothing needs the library to quantize q
 * itself (fa4j_quantize never smooths q).
 *   input:  float32, float16 or bfloat16 [batch, seq, heads, head_dim], head_dim contiguous
 *   output: the operand's quantized dtype in the mode's table above, the same shape (any strides the
 *           dtype allows); SAGE_*_FP16 modes do not quantize v (refused)
 *   scale:  float32, contiguous, the operand's scale shape
 *   mean:   K with smoothing only, optional: float32 [batch, heads, head_dim], receives the subtracted mean
 *           (pass it as fa4j_attention_args.k_mean for an exact lse); NULL otherwise
 * The outputs may not overlap the input or each other. CPU tensors only for now (CUDA:
 * FA4J_ERROR_UNSUPPORTED). Fields past struct_size read as zero.
 */
typedef struct fa4j_quantize_args {
    size_t struct_size;
    int32_t mode;         /* fa4j_quant_mode, not NONE */
    int32_t operand;      /* fa4j_quant_operand */
    uint32_t flags;       /* FA4J_QUANT_NO_SMOOTH_K (operand k) */
    int32_t num_threads;  /* CPU backend worker threads; 0 = default */
    const fa4j_tensor* input;
    const fa4j_tensor* output;
    const fa4j_tensor* scale;
    const fa4j_tensor* mean;
} fa4j_quantize_args;

/* Writes output, scale (and mean) from input as described above; finished on return on the CPU. */
FA4J_API fa4j_status fa4j_quantize(const fa4j_quantize_args* args, fa4j_stream stream);

#ifdef __cplusplus
}
#endif

#endif /* FLASHATTN4J_H */
