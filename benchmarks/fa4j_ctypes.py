"""flashattn4j's C ABI through ctypes, on PyTorch tensors, in the calling process.

Used by peer_sdpa.py so that ours and SDPA run in one process, on the same tensors and the same stream.
Loading the library into a process that already holds PyTorch (and its own libstdc++) is itself a test:
the library must export only its C ABI (see native/src/capi/exports.map), or calls resolve into the
wrong C++ runtime and crash.

    lib = Fa4j("/path/to/libflashattn4j.so")
    out, lse = lib.forward(q, k, v, causal=True)         # q, k, v: [B, N, H, d] torch tensors
    dq, dk, dv = lib.backward(dout, q, k, v, out, lse, causal=True)

Every feature of ABI 2 goes through fa4j_attention (fa4j_attention_args): sliding windows, softcap, ALiBi,
a forced kernel family, and variable-length batches (packed [total, H, d] tensors with int32 cu_seqlens):

    opts = dict(causal=True, window=(256, 0), softcap=30.0)
    lib.attention_forward_into(q, k, v, out, lse, **opts)
    lib.attention_backward_into(dout, q, k, v, out, lse, dq, dk, dv, **opts)
    lib.attention_forward_into(q, k, v, out, lse, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=m, max_seqlen_k=m,
                               causal=True)   # q, k, v, out: [total, H, d]; lse: [H, total]
"""
import ctypes
import math

FA4J_OK = 0
DEVICE_CPU, DEVICE_CUDA = 1, 2
CODE_INT, CODE_FLOAT, CODE_BFLOAT = 0, 2, 4
ATTENTION_FORWARD, ATTENTION_BACKWARD = 0, 1
KERNEL_FAMILIES = {"auto": 0, "cpu": 1, "sm80": 2, "sm90": 3}
WINDOW_UNBOUNDED = -1


class Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", Device), ("ndim", ctypes.c_int32), ("dtype", DType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


class AttentionParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("softmax_scale", ctypes.c_float), ("causal", ctypes.c_int32),
                ("num_threads", ctypes.c_int32), ("reserved", ctypes.c_int32)]


class AttentionArgs(ctypes.Structure):
    """fa4j_attention_args of flashattn4j.h (ABI 2), field for field."""
    _fields_ = [("struct_size", ctypes.c_size_t), ("direction", ctypes.c_int32), ("kernel_family", ctypes.c_int32)] + \
               [(name, ctypes.POINTER(Tensor)) for name in ("q", "k", "v", "out", "lse", "dout", "dq", "dk", "dv",
                                                            "cu_seqlens_q", "cu_seqlens_k", "seqused_k", "alibi_slopes")] + \
               [("max_seqlen_q", ctypes.c_int64), ("max_seqlen_k", ctypes.c_int64), ("softmax_scale", ctypes.c_float),
                ("softcap", ctypes.c_float), ("causal", ctypes.c_int32), ("window_left", ctypes.c_int32),
                ("window_right", ctypes.c_int32), ("num_threads", ctypes.c_int32)]


class Fa4jError(RuntimeError):
    pass


class Fa4j:
    def __init__(self, path):
        import torch
        self.torch = torch
        self.lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        self.lib.fa4j_last_error_message.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        ptr = ctypes.POINTER
        self.lib.fa4j_attention_forward.argtypes = [ptr(AttentionParams)] + [ptr(Tensor)] * 5 + [ctypes.c_void_p]
        self.lib.fa4j_attention_backward.argtypes = [ptr(AttentionParams)] + [ptr(Tensor)] * 9 + [ctypes.c_void_p]
        self.lib.fa4j_attention.argtypes = [ptr(AttentionArgs), ctypes.c_void_p]
        abi, major, minor, patch = (ctypes.c_int32() for _ in range(4))
        self._check(self.lib.fa4j_get_version(ctypes.byref(abi), ctypes.byref(major), ctypes.byref(minor),
                                              ctypes.byref(patch)))
        self.version = (abi.value, major.value, minor.value, patch.value)

    def _check(self, status):
        if status != FA4J_OK:
            message = ctypes.c_char_p()
            self.lib.fa4j_last_error_message(ctypes.byref(message))
            raise Fa4jError(f"status {status}: {message.value.decode() if message.value else ''}")

    def _describe(self, t, keep):
        torch = self.torch
        codes = {torch.float32: (CODE_FLOAT, 32), torch.float16: (CODE_FLOAT, 16), torch.bfloat16: (CODE_BFLOAT, 16),
                 torch.int32: (CODE_INT, 32)}
        code, bits = codes[t.dtype]
        shape = (ctypes.c_int64 * t.dim())(*t.shape)
        strides = (ctypes.c_int64 * t.dim())(*t.stride())
        keep += [shape, strides]  # the descriptor points at them: they must outlive the call
        device = Device(DEVICE_CUDA, t.device.index or 0) if t.is_cuda else Device(DEVICE_CPU, 0)
        return Tensor(t.data_ptr(), device, t.dim(), DType(code, bits, 1), shape, strides, 0)

    def _params(self, d, causal, scale):
        return AttentionParams(ctypes.sizeof(AttentionParams), 1.0 / math.sqrt(d) if scale is None else scale,
                               1 if causal else 0, 0, 0)

    def _stream(self, t):
        return ctypes.c_void_p(self.torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0)

    def forward_into(self, q, k, v, out, lse, causal=False, scale=None):
        keep = []
        params = self._params(q.shape[-1], causal, scale)
        args = [ctypes.byref(self._describe(t, keep)) for t in (q, k, v, out, lse)]
        self._check(self.lib.fa4j_attention_forward(ctypes.byref(params), *args, self._stream(q)))

    def forward(self, q, k, v, causal=False, scale=None):
        b, n, h, _ = q.shape
        out = self.torch.empty_like(q)
        lse = self.torch.empty((b, h, n), dtype=self.torch.float32, device=q.device)
        self.forward_into(q, k, v, out, lse, causal, scale)
        return out, lse

    def backward_into(self, dout, q, k, v, out, lse, dq, dk, dv, causal=False, scale=None):
        keep = []
        params = self._params(q.shape[-1], causal, scale)
        args = [ctypes.byref(self._describe(t, keep)) for t in (dout, q, k, v, out, lse, dq, dk, dv)]
        self._check(self.lib.fa4j_attention_backward(ctypes.byref(params), *args, self._stream(q)))

    def backward(self, dout, q, k, v, out, lse, causal=False, scale=None):
        dq, dk, dv = (self.torch.empty_like(t) for t in (q, k, v))
        self.backward_into(dout, q, k, v, out, lse, dq, dk, dv, causal, scale)
        return dq, dk, dv

    # --------------------------------------------------------------------------------------------------
    # fa4j_attention: every feature of ABI 2
    # --------------------------------------------------------------------------------------------------

    def _attention(self, direction, tensors, causal=False, scale=None, window=(WINDOW_UNBOUNDED, WINDOW_UNBOUNDED),
                   softcap=0.0, alibi_slopes=None, kernel_family="auto", cu_seqlens_q=None, cu_seqlens_k=None,
                   seqused_k=None, max_seqlen_q=0, max_seqlen_k=0):
        """fa4j_attention on `tensors` (a dict of the args' tensor fields); queued on q's current stream."""
        keep = []
        args = AttentionArgs()
        args.struct_size = ctypes.sizeof(AttentionArgs)
        args.direction = direction
        args.kernel_family = KERNEL_FAMILIES[kernel_family] if isinstance(kernel_family, str) else int(kernel_family)
        named = dict(tensors, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, seqused_k=seqused_k,
                     alibi_slopes=alibi_slopes)
        for name, t in named.items():
            if t is not None:
                described = self._describe(t, keep)
                keep.append(described)
                setattr(args, name, ctypes.pointer(described))
        q = tensors["q"]
        args.max_seqlen_q, args.max_seqlen_k = int(max_seqlen_q), int(max_seqlen_k)
        args.softmax_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        args.softcap = float(softcap)
        args.causal = 1 if causal else 0
        args.window_left, args.window_right = (int(window[0]), int(window[1]))
        args.num_threads = 0
        self._check(self.lib.fa4j_attention(ctypes.byref(args), self._stream(q)))

    def attention_forward_into(self, q, k, v, out, lse, **options):
        """Forward through fa4j_attention. Dense: [B, N, H, d] tensors, lse [B, H, N]. Varlen (cu_seqlens_q/k
        given, with max_seqlen_q/k): [total, H, d] tensors, lse [H, total]. Options: causal, scale, window
        (left, right; -1 unbounded), softcap, alibi_slopes, kernel_family ("auto", "sm80", "sm90"), seqused_k."""
        self._attention(ATTENTION_FORWARD, dict(q=q, k=k, v=v, out=out, lse=lse), **options)

    def attention_forward(self, q, k, v, **options):
        varlen = options.get("cu_seqlens_q") is not None
        out = self.torch.empty_like(q)
        lse_shape = (q.shape[1], q.shape[0]) if varlen else (q.shape[0], q.shape[2], q.shape[1])
        lse = self.torch.empty(lse_shape, dtype=self.torch.float32, device=q.device)
        self.attention_forward_into(q, k, v, out, lse, **options)
        return out, lse

    def attention_backward_into(self, dout, q, k, v, out, lse, dq, dk, dv, **options):
        """Backward through fa4j_attention, with the options of attention_forward_into."""
        self._attention(ATTENTION_BACKWARD, dict(dout=dout, q=q, k=k, v=v, out=out, lse=lse, dq=dq, dk=dk, dv=dv),
                        **options)

    def attention_backward(self, dout, q, k, v, out, lse, **options):
        dq, dk, dv = (self.torch.empty_like(t) for t in (q, k, v))
        self.attention_backward_into(dout, q, k, v, out, lse, dq, dk, dv, **options)
        return dq, dk, dv
