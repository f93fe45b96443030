#!/usr/bin/env python3
"""Side-by-side benchmark: flashattn4j's native driver against PyTorch SDPA's flash and cuDNN backends.

Runs both on the same shapes, in the same process tree, on the same GPU, and prints one table:
config, ours fwd/bwd TFLOP/s, each peer's fwd/bwd TFLOP/s, and ours / best peer.

FLOPs follow FlashAttention's convention: forward 4*B*H*Nq*Nk*d, halved when causal; backward 2.5x
forward. Peers are timed with CUDA events around `reps` back-to-back calls after warm-up (median of
`samples` such groups), on random inputs (never zeros), as fa4j_bench times ours.

  python3 benchmarks/peer_sdpa.py --ours build/fa4j_bench [--shapes 2x8192x16x128,2x8192x16x64]
                                  [--dtypes bf16] [--causal 0,1] [--csv out.csv]
A shape is BxNxHxD (kv heads = H). Without --ours only the peers are timed.
"""
import argparse
import statistics
import subprocess
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ours", help="path to the fa4j_bench executable")
    p.add_argument("--shapes", default="2x8192x16x128,2x8192x16x64")
    p.add_argument("--dtypes", default="bf16")
    p.add_argument("--causal", default="0,1")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--samples", type=int, default=7)
    p.add_argument("--csv", help="also write the table as CSV here")
    return p.parse_args()


def flops(b, n, h, d, causal, backward):
    f = 4.0 * b * h * n * n * d
    if causal:
        f /= 2
    return f * (2.5 if backward else 1.0)


def run_ours(exe, shape, dtype, causals):
    b, n, h, d = shape
    cmd = [exe, "--batch", str(b), "--seqlen", str(n), "--heads", str(h), "--dims", str(d),
           "--dtypes", dtype, "--causal", ",".join(str(c) for c in causals)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{' '.join(cmd)} failed with {proc.returncode}")
    rows = {}
    for line in proc.stdout.splitlines():
        if not line.startswith("fa4j_bench,"):
            continue
        kv = dict(item.split("=", 1) for item in line.split(",")[1:])
        rows[int(kv["causal"])] = (float(kv["fwd_tflops"]), float(kv["bwd_tflops"]),
                                   kv.get("lse_finite", "1") == "1")
    return rows


def time_peer(torch, backend, shape, dtype, causal, reps, samples):
    """Median TFLOP/s of forward and backward through SDPA pinned to one backend, or None if refused."""
    from torch.nn.attention import sdpa_kernel
    import torch.nn.functional as F
    b, n, h, d = shape
    g = torch.Generator(device="cuda").manual_seed(1234)
    # SDPA wants [B, H, N, d]; transposing a [B, N, H, d] tensor matches the layout our driver uses.
    q, k, v = (torch.randn(b, n, h, d, device="cuda", dtype=dtype, generator=g).transpose(1, 2).requires_grad_()
               for _ in range(3))
    dout = torch.randn(b, n, h, d, device="cuda", dtype=dtype, generator=g).transpose(1, 2)

    def fwd():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))

    try:
        out = fwd()
        out.backward(dout)
    except RuntimeError as e:
        sys.stderr.write(f"peer {backend} refused {shape} causal={causal}: {e}\n")
        return None

    def timed(fn):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        ms = []
        for _ in range(samples):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                fn()
            end.record()
            end.synchronize()
            ms.append(start.elapsed_time(end) / reps)
        return statistics.median(ms)

    fwd_ms = timed(lambda: fwd())
    out = fwd()

    def bwd():
        q.grad = k.grad = v.grad = None
        torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)

    bwd_ms = timed(bwd)
    return (flops(b, n, h, d, causal, False) / fwd_ms / 1e9,
            flops(b, n, h, d, causal, True) / bwd_ms / 1e9)


def main():
    args = parse_args()
    import torch
    from torch.nn.attention import SDPBackend
    peers = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    causals = [int(c) for c in args.causal.split(",")]
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
          f"cudnn {torch.backends.cudnn.version()}")
    header = ("dtype", "B", "N", "H", "d", "causal", "ours_fwd", "ours_bwd", "flash_fwd", "flash_bwd",
              "cudnn_fwd", "cudnn_bwd", "fwd_vs_flash", "bwd_vs_flash", "fwd_vs_best", "bwd_vs_best")
    rows = []
    for dname in args.dtypes.split(","):
        for shape in shapes:
            ours = run_ours(args.ours, shape, dname, causals) if args.ours else {}
            for causal in causals:
                o_f, o_b, finite = ours.get(causal, (float("nan"), float("nan"), True))
                res = {name: time_peer(torch, be, shape, dtypes[dname], causal, args.reps, args.samples)
                       for name, be in peers}
                f_f, f_b = res["flash"] or (float("nan"), float("nan"))
                c_f, c_b = res["cudnn"] or (float("nan"), float("nan"))
                best_f = max(x for x in (f_f, c_f) if x == x) if (f_f == f_f or c_f == c_f) else float("nan")
                best_b = max(x for x in (f_b, c_b) if x == x) if (f_b == f_b or c_b == c_b) else float("nan")
                rows.append((dname, *shape[:3], shape[3], causal, o_f, o_b, f_f, f_b, c_f, c_b,
                             o_f / f_f, o_b / f_b if o_b > 0 else float("nan"), o_f / best_f,
                             o_b / best_b if o_b > 0 else float("nan")))
                if not finite:
                    print(f"WARNING: ours produced a non-finite lse for {shape} causal={causal}")
    print("TFLOP/s (FlashAttention convention); ratios are ours / peer")
    print(" ".join(f"{h:>12}" for h in header))
    for r in rows:
        print(" ".join(f"{x:>12}" if isinstance(x, (str, int)) else f"{x:>12.2f}" for x in r))
    if args.csv:
        with open(args.csv, "w") as f:
            f.write(",".join(header) + "\n")
            for r in rows:
                f.write(",".join(str(x) for x in r) + "\n")


if __name__ == "__main__":
    main()
