#!/usr/bin/env python3
"""Side-by-side benchmark and in-process check: flashattn4j against PyTorch SDPA's flash and cuDNN backends.

Our library is loaded into this PyTorch process through ctypes (fa4j_ctypes.py) and called on the same
tensors and the same CUDA stream as the peers, so the comparison is same-process, same-inputs, and the
load itself shows that the library coexists with PyTorch's own C++ runtime.

  python3 benchmarks/peer_sdpa.py --lib build/libflashattn4j.so [--shapes 2x8192x16x128,2x8192x16x64]
                                  [--dtypes bf16] [--causal 0,1] [--samples 7] [--csv out.csv]
  python3 benchmarks/peer_sdpa.py --lib build/libflashattn4j.so --check-only

--check (on by default) first runs ours forward and backward on CPU and CUDA tensors of small ragged
shapes (GQA, causal and not) and compares them with a float64 reference computed by PyTorch, by
FlashAttention's rule: error(ours) <= 2 * error(same-dtype PyTorch) + 1e-5 for CUDA (SDPA math backend in
the tensor dtype), and a float32 bound on the CPU. A failing check exits non-zero.

Timing: a shape is BxNxHxD (kv heads = H). For each row the implementations are timed interleaved: each
of `samples` rounds times every implementation once (CUDA events around `reps` back-to-back calls after
warm-up), and the row reports each one's median. FLOPs follow FlashAttention's convention: forward
4*B*H*Nq*Nk*d, halved when causal; backward 2.5x forward.
"""
import argparse
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lib", help="path to libflashattn4j.so (without it only the peers are timed)")
    p.add_argument("--shapes", default="2x8192x16x128,2x8192x16x64")
    p.add_argument("--dtypes", default="bf16")
    p.add_argument("--causal", default="0,1")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--samples", type=int, default=7)
    p.add_argument("--csv", help="also write the table as CSV here")
    p.add_argument("--no-check", action="store_true", help="skip the in-process correctness check")
    p.add_argument("--check-only", action="store_true", help="run the correctness check and stop")
    return p.parse_args()


def flops(b, n, h, d, causal, backward):
    f = 4.0 * b * h * n * n * d
    if causal:
        f /= 2
    return f * (2.5 if backward else 1.0)


# ------------------------------------------------------------------------------------------------------
# Correctness, in process
# ------------------------------------------------------------------------------------------------------

def attention_with_grads(torch, q, k, v, dout, causal, in_float64):
    """Attention and its gradients on [B, N, H, d] tensors (GQA by repeating kv heads), causal bottom-right
    aligned like ours and flash-attn's: in float64 (the reference), or in the tensors' own dtype with a
    float32 softmax (the 'plain implementation' of FlashAttention's tolerance rule)."""
    cast = (lambda t: t.double()) if in_float64 else (lambda t: t.clone())
    qd, kd, vd = (cast(t.detach()).requires_grad_() for t in (q, k, v))
    group = q.shape[2] // k.shape[2]
    kr, vr = (t.repeat_interleave(group, dim=2) for t in (kd, vd))
    s = torch.einsum("bqhd,bkhd->bhqk", qd, kr) / math.sqrt(q.shape[-1])
    nq, nk = q.shape[1], k.shape[1]
    if causal:
        i = torch.arange(nq, device=q.device)[:, None]
        j = torch.arange(nk, device=q.device)[None, :]
        s = s.masked_fill(j > i + nk - nq, float("-inf"))
    p = torch.softmax(s if in_float64 else s.float(), dim=-1).nan_to_num(0.0).to(qd.dtype)  # no key: out = 0
    out = torch.einsum("bhqk,bkhd->bqhd", p, vr)
    out.backward(cast(dout))
    return out.detach(), qd.grad, kd.grad, vd.grad


def check(torch, fa4j):
    """Ours vs float64 on CPU and CUDA tensors in this process; returns the number of failures."""
    cases = [  # B, Nq, Nk, Hq, Hkv, d, causal
        (2, 17, 17, 4, 4, 64, False), (1, 128, 333, 8, 2, 128, True), (2, 333, 128, 8, 1, 64, True),
        (1, 256, 256, 4, 4, 128, False), (3, 1, 77, 6, 3, 64, True)]
    failures = 0
    g = torch.Generator().manual_seed(7)
    for device in ("cpu", "cuda"):
        for dtype in (torch.bfloat16, torch.float16):
            for b, nq, nk, hq, hkv, d, causal in cases:
                q = torch.randn(b, nq, hq, d, generator=g).to(device, dtype)
                k = torch.randn(b, nk, hkv, d, generator=g).to(device, dtype)
                v = torch.randn(b, nk, hkv, d, generator=g).to(device, dtype)
                dout = torch.randn(b, nq, hq, d, generator=g).to(device, dtype)
                out, lse = fa4j.forward(q, k, v, causal=causal)
                out.fill_(float("nan"))  # poisoned: every element must be written again
                fa4j.forward_into(q, k, v, out, lse, causal=causal)
                dq, dk, dv = (torch.full_like(t, float("nan")) for t in (q, k, v))
                fa4j.backward_into(dout, q, k, v, out, lse, dq, dk, dv, causal=causal)
                if device == "cuda":
                    torch.cuda.synchronize()
                ref = attention_with_grads(torch, q, k, v, dout, causal, in_float64=True)
                plain = attention_with_grads(torch, q, k, v, dout, causal, in_float64=False)
                report = []
                ok = True
                for name, got, r, pl in zip(("out", "dq", "dk", "dv"), (out, dq, dk, dv), ref, plain):
                    err = (got.double() - r).abs().max().item()
                    bound = 2 * (pl.double() - r).abs().max().item() + 1e-5
                    good = math.isfinite(err) and err <= bound
                    ok &= good
                    report.append(f"{name} {err:.2e}/{bound:.2e}{'' if good else ' FAIL'}")
                failures += 0 if ok else 1
                print(f"check {device} {str(dtype)[6:]} B{b} Nq{nq} Nk{nk} H{hq}/{hkv} d{d} causal={int(causal)}: "
                      f"{'ok' if ok else 'FAILED'}  " + ", ".join(report))
    print(f"in-process check: {failures} failed")
    return failures


# ------------------------------------------------------------------------------------------------------
# Timing, interleaved
# ------------------------------------------------------------------------------------------------------

def implementations(torch, fa4j, q, k, v, dout, causal):
    """name -> (forward fn, backward fn) on the same [B, N, H, d] tensors; None where refused."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    impls = {}
    if fa4j is not None:
        out, lse = fa4j.forward(q, k, v, causal=causal)
        grads = tuple(torch.empty_like(t) for t in (q, k, v))
        impls["ours"] = (lambda: fa4j.forward_into(q, k, v, out, lse, causal=causal),
                         lambda: fa4j.backward_into(dout, q, k, v, out, lse, *grads, causal=causal))
    # SDPA wants [B, H, N, d]: transposed views of the same tensors.
    qt, kt, vt = (t.detach().transpose(1, 2).requires_grad_() for t in (q, k, v))
    dt = dout.transpose(1, 2)
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
        def fwd(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
        try:
            o = fwd()
            torch.autograd.grad(o, (qt, kt, vt), dt, retain_graph=True)
        except RuntimeError as e:
            sys.stderr.write(f"peer {name} refused {tuple(q.shape)} causal={causal}: {e}\n")
            impls[name] = None
            continue
        impls[name] = (fwd, lambda o=o: torch.autograd.grad(o, (qt, kt, vt), dt, retain_graph=True))
    return impls


def time_interleaved(torch, fns, reps, samples):
    """Median ms per call of each fn, timed in rounds that visit every fn once."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    torch.cuda.synchronize()
    ms = {name: [] for name in fns}
    for _ in range(samples):
        for name, fn in fns.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                fn()
            end.record()
            end.synchronize()
            ms[name].append(start.elapsed_time(end) / reps)
    return {name: (statistics.median(v), min(v), max(v)) for name, v in ms.items()}


def main():
    args = parse_args()
    import torch
    fa4j = None
    if args.lib:
        from fa4j_ctypes import Fa4j
        fa4j = Fa4j(args.lib)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  cudnn {torch.backends.cudnn.version()}"
          + (f"  flashattn4j ABI {fa4j.version[0]} v{'.'.join(map(str, fa4j.version[1:]))} in process" if fa4j else ""))
    if fa4j is not None and not args.no_check:
        if check(torch, fa4j) != 0:
            raise SystemExit("in-process correctness check failed")
    if args.check_only:
        return
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    causals = [bool(int(c)) for c in args.causal.split(",")]
    names = ["ours", "flash", "cudnn"]
    header = ["dtype", "B", "N", "H", "d", "causal"] + [f"{n}_{p}" for p in ("fwd", "bwd") for n in names] + \
             ["fwd/flash", "fwd/cudnn", "bwd/flash", "bwd/cudnn", "ours_fwd_spread"]
    rows = []
    nan = float("nan")
    for dname in args.dtypes.split(","):
        for b, n, h, d in shapes:
            g = torch.Generator(device="cuda").manual_seed(1234)
            q, k, v, dout = (torch.randn(b, n, h, d, device="cuda", dtype=dtypes[dname], generator=g) for _ in range(4))
            for causal in causals:
                impls = implementations(torch, fa4j, q, k, v, dout, causal)
                live = {name: fns for name, fns in impls.items() if fns is not None}
                fwd = time_interleaved(torch, {name: fns[0] for name, fns in live.items()}, args.reps, args.samples)
                bwd = time_interleaved(torch, {name: fns[1] for name, fns in live.items()}, args.reps, args.samples)
                tf = {name: flops(b, n, h, d, causal, False) / fwd[name][0] / 1e9 if name in fwd else nan for name in names}
                tb = {name: flops(b, n, h, d, causal, True) / bwd[name][0] / 1e9 if name in bwd else nan for name in names}
                spread = (fwd["ours"][2] - fwd["ours"][1]) / fwd["ours"][0] if "ours" in fwd else nan
                rows.append([dname, b, n, h, d, int(causal)] + [tf[x] for x in names] + [tb[x] for x in names] +
                            [tf["ours"] / tf["flash"], tf["ours"] / tf["cudnn"], tb["ours"] / tb["flash"],
                             tb["ours"] / tb["cudnn"], spread])
                del impls, live
    print(f"TFLOP/s (FlashAttention convention), median of {args.samples} interleaved samples; ratios are ours / peer")
    print(" ".join(f"{x:>12}" for x in header))
    for r in rows:
        print(" ".join(f"{x:>12}" if isinstance(x, (str, int)) else f"{x:>12.3f}" for x in r))
    if args.csv:
        with open(args.csv, "w") as f:
            f.write(",".join(header) + "\n")
            for r in rows:
                f.write(",".join(str(x) for x in r) + "\n")


if __name__ == "__main__":
    main()
