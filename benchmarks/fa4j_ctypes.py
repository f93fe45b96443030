"""flashattn4j's C ABI through ctypes, on PyTorch tensors, in the calling process.

Used by peer_sdpa.py so that ours and SDPA run in one process, on the same tensors and the same stream.
Loading the library into a process that already holds PyTorch (and its own libstdc++) is itself a test:
the library must export only its C ABI (see native/src/capi/exports.map), or calls resolve into the
wrong C++ runtime and crash.

    lib = Fa4j("/path/to/libflashattn4j.so")
    out, lse = lib.forward(q, k, v, causal=True)         # q, k, v: [B, N, H, d] torch tensors
    dq, dk, dv = lib.backward(dout, q, k, v, out, lse, causal=True)
"""
import ctypes
import math

FA4J_OK = 0
DEVICE_CPU, DEVICE_CUDA = 1, 2
CODE_FLOAT, CODE_BFLOAT = 2, 4


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
        codes = {torch.float32: (CODE_FLOAT, 32), torch.float16: (CODE_FLOAT, 16), torch.bfloat16: (CODE_BFLOAT, 16)}
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
