#!/usr/bin/env python3
"""Side-by-side benchmark and in-process check: flashattn4j against PyTorch SDPA's flash and cuDNN backends.

Our library is loaded into this PyTorch process through ctypes (fa4j_ctypes.py) and called on the same
tensors and the same CUDA stream as the peers, so the comparison is same-process, same-inputs, and the
load itself shows that the library coexists with PyTorch's own C++ runtime.

  python3 benchmarks/peer_sdpa.py --lib build/libflashattn4j.so [--shapes 2x8192x16x128,2x8192x16x64]
                                  [--dtypes bf16] [--causal 0,1] [--samples 7] [--csv out.csv]
  python3 benchmarks/peer_sdpa.py --lib build/libflashattn4j.so --check-only
  python3 benchmarks/peer_sdpa.py --lib build/libflashattn4j.so --no-check --acceptance [--samples 7]

--check (on by default) first runs ours forward and backward on CPU and CUDA tensors of small ragged
shapes (GQA, causal and not) and compares them with a float64 reference computed by PyTorch, by
FlashAttention's rule: error(ours) <= 2 * error(same-dtype PyTorch) + 1e-5 for CUDA (SDPA math backend in
the tensor dtype), and a float32 bound on the CPU. A failing check exits non-zero.

Timing: a shape is BxNxHxD (kv heads = H). For each row the implementations are timed interleaved: each
of `samples` rounds times every implementation once (CUDA events around `reps` back-to-back calls after
warm-up), and the row reports each one's median. FLOPs follow FlashAttention's convention: forward
4*B*H*Nq*Nk*d, halved when causal; backward 2.5x forward.

--acceptance prints the table of the "Attention kernels v2" issue instead (bf16, forward and backward): rows
d64 (H 32) and d128 (H 16), causal and not, N = 1k, 2k, 8k, 16k with 16k tokens in all (B = 16k/N, H*d = 2048),
and d256 (H 8) at N = 4k and 8k; each row times ours against cuDNN (SDPA's CUDNN_ATTENTION backend), or SDPA
flash where cuDNN refuses the shape (the row says so), interleaved, median of --samples (>= 7) samples, with
the spread (min-max over the samples) and the ratio ours/peer; then the geometric mean and the minimum of the
ratios. Then: a varlen row (64 sequences of 128..4096 tokens drawn with a fixed seed, d128, H 16, causal,
FLOPs summed per sequence, ours through fa4j_attention with cu_seqlens) against our dense rate at N = 2k; a
tiny-sequence row (B 4096, H 32, N 16, d 64); and rows for a sliding window (left 256, causal) and softcap
(30), which SDPA has no equivalent of (ours only, against our plain causal rate on the same shape). A shape
an implementation refuses is reported as n/a and the run goes on.
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
    p.add_argument("--acceptance", action="store_true", help="print the acceptance table of the v2 issue and stop")
    p.add_argument("--acceptance-forward-only", action="store_true", help="acceptance table without the backward")
    p.add_argument("--varlen-seed", type=int, default=1234, help="seed of the acceptance varlen row's lengths")
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


# ------------------------------------------------------------------------------------------------------
# The acceptance table of the "Attention kernels v2" issue
# ------------------------------------------------------------------------------------------------------

ACCEPTANCE_TOKENS = 16384


def acceptance_shapes():
    """(d, H, N, B, causal) of the dense rows: H*d = 2048 at d64/d128, H 8 at d256; 16k tokens per row."""
    rows = []
    for d, h in ((64, 32), (128, 16)):
        for causal in (False, True):
            for n in (1024, 2048, 8192, 16384):
                rows.append((d, h, n, ACCEPTANCE_TOKENS // n, causal))
    for causal in (False, True):
        for n in (4096, 8192):
            rows.append((256, 8, n, ACCEPTANCE_TOKENS // n, causal))
    return rows


def short_error(e):
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]


def time_safely(torch, fns, reps, samples):
    """Like time_interleaved, but an fn that raises (a refused shape) is dropped with its error instead of
    ending the run: returns ({name: (median_ms, min_ms, max_ms)}, {name: error})."""
    errors = {}
    live = {}
    for name, fn in fns.items():
        if fn is None:
            continue
        try:
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
            live[name] = fn
        except Exception as e:  # refused or failed: reported as n/a, the run goes on
            errors[name] = short_error(e)
            try:
                torch.cuda.synchronize()
            except Exception:
                pass
    ms = {name: [] for name in live}
    for _ in range(samples):
        for name in list(live):
            fn = live[name]
            try:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(reps):
                    fn()
                end.record()
                end.synchronize()
                ms[name].append(start.elapsed_time(end) / reps)
            except Exception as e:
                errors[name] = short_error(e)
                del live[name]
                ms.pop(name, None)
    return {name: (statistics.median(v), min(v), max(v)) for name, v in ms.items() if v}, errors


def sdpa_fns(torch, backend, q, k, v, dout, causal):
    """SDPA forward and backward of one backend on [B, N, H, d] tensors (transposed views), each None if the
    backend refuses it; raises nothing."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    b = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]
    qt, kt, vt = (t.detach().transpose(1, 2).requires_grad_() for t in (q, k, v))
    dt = dout.transpose(1, 2)

    def fwd():
        with sdpa_kernel(b):
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
    try:
        o = fwd()
        torch.cuda.synchronize()
    except Exception as e:
        return None, None, short_error(e)
    try:
        torch.autograd.grad(o, (qt, kt, vt), dt, retain_graph=True)
        torch.cuda.synchronize()
        bwd = lambda: torch.autograd.grad(o, (qt, kt, vt), dt, retain_graph=True)
        error = None
    except Exception as e:
        bwd, error = None, short_error(e)
    return fwd, bwd, error


def rate(flop, t):
    """TFLOP/s median, min and max over the samples of a (median_ms, min_ms, max_ms) timing."""
    return flop / t[0] / 1e9, flop / t[2] / 1e9, flop / t[1] / 1e9


def fmt_rate(r):
    return "n/a" if r is None else f"{r[0]:7.1f} [{r[1]:.1f}-{r[2]:.1f}]"


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def acceptance(torch, fa4j, args):
    samples = max(7, args.samples)
    reps = args.reps
    dt = torch.bfloat16
    passes = ("fwd",) if args.acceptance_forward_only else ("fwd", "bwd")
    print(f"acceptance table: bf16, TFLOP/s (FlashAttention convention) median [min-max] of {samples} interleaved "
          f"samples of {reps} calls; ratio = ours / peer (peer: cuDNN, or SDPA flash where cuDNN refuses)")
    ratios = {p: [] for p in passes}
    peers_used = {p: set() for p in passes}
    csv_rows = []
    header = f"{'d':>4} {'H':>3} {'N':>6} {'B':>3} {'causal':>6}"
    for p in passes:
        header += f" | {p} {'ours':>22} {'peer':>6} {'peer TF/s':>22} {'ratio':>6}"
    print(header)
    for d, h, n, b, causal in acceptance_shapes():
        line = f"{d:>4} {h:>3} {n:>6} {b:>3} {int(causal):>6}"
        notes = []
        try:
            g = torch.Generator(device="cuda").manual_seed(1234 + n + d)
            q, k, v, dout = (torch.randn(b, n, h, d, device="cuda", dtype=dt, generator=g) for _ in range(4))
            out, lse = torch.empty_like(q), torch.empty((b, h, n), device="cuda", dtype=torch.float32)
            grads = tuple(torch.empty_like(t) for t in (q, k, v))
            ours = {"fwd": lambda: fa4j.forward_into(q, k, v, out, lse, causal=causal),
                    "bwd": lambda: fa4j.backward_into(dout, q, k, v, out, lse, *grads, causal=causal)}
            cudnn = sdpa_fns(torch, "cudnn", q, k, v, dout, causal)
            flash = None
            for p in passes:
                idx = 0 if p == "fwd" else 1
                peer_name, peer_fn = "cudnn", cudnn[idx]
                if peer_fn is None:
                    if flash is None:
                        flash = sdpa_fns(torch, "flash", q, k, v, dout, causal)
                    peer_name, peer_fn = "flash", flash[idx]
                    notes.append(f"{p}: cuDNN refused ({cudnn[2]})" + ("" if peer_fn else f"; flash refused ({flash[2]})"))
                if p == "bwd":
                    try:
                        fa4j.forward_into(q, k, v, out, lse, causal=causal)  # the backward's out and lse
                    except Exception as e:
                        notes.append(f"ours fwd: {short_error(e)}")
                times, errors = time_safely(torch, {"ours": ours[p], peer_name: peer_fn}, reps, samples)
                flop = flops(b, n, h, d, causal, p == "bwd")
                r_ours = rate(flop, times["ours"]) if "ours" in times else None
                r_peer = rate(flop, times[peer_name]) if peer_name in times else None
                ratio = r_ours[0] / r_peer[0] if r_ours and r_peer else None
                if ratio is not None:
                    ratios[p].append((ratio, f"d{d} N{n} causal={int(causal)}"))
                    peers_used[p].add(peer_name)
                for name, e in errors.items():
                    notes.append(f"{p} {name}: n/a ({e})")
                line += f" | {p} {fmt_rate(r_ours):>22} {peer_name if peer_fn else 'none':>6} {fmt_rate(r_peer):>22} " \
                        f"{('%.3f' % ratio) if ratio is not None else 'n/a':>6}"
                csv_rows.append([p, f"d{d} H{h} N{n} B{b} causal={int(causal)}", "ours", r_ours[0] if r_ours else "",
                                 peer_name, r_peer[0] if r_peer else "", ratio if ratio is not None else ""])
            del q, k, v, dout, out, lse, grads, ours, cudnn, flash
        except Exception as e:
            notes.append(f"row failed: {short_error(e)}")
        print(line + ("   # " + "; ".join(notes) if notes else ""))
        sys.stdout.flush()
        torch.cuda.empty_cache()
    for p in passes:
        r = ratios[p]
        if r:
            worst = min(r)
            print(f"acceptance: {p} ours/peer over {len(r)} rows: geometric mean {geomean([x for x, _ in r]):.3f}, "
                  f"min {worst[0]:.3f} ({worst[1]}); peers {'/'.join(sorted(peers_used[p]))}")
        else:
            print(f"acceptance: {p}: no row had both ours and a peer")
    acceptance_extra_rows(torch, fa4j, args, samples, reps, passes, csv_rows)
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("pass,row,impl,tflops,peer,peer_tflops,ratio\n")
            for r in csv_rows:
                f.write(",".join(f'"{x}"' if isinstance(x, str) and "," in x else str(x) for x in r) + "\n")


def acceptance_extra_rows(torch, fa4j, args, samples, reps, passes, csv_rows):
    """The varlen, tiny-sequence, sliding-window and softcap rows."""
    import random
    dt = torch.bfloat16

    def timed_rows(label, fns, flop_of, note=""):
        """fns: {name: {pass: fn}}; prints one line per pass with each implementation's rate."""
        for p in passes:
            times, errors = time_safely(torch, {name: f.get(p) for name, f in fns.items()}, reps, samples)
            parts = []
            rates = {}
            for name in fns:
                if name in times:
                    rates[name] = rate(flop_of(name, p), times[name])
                    parts.append(f"{name} {fmt_rate(rates[name])}")
                else:
                    parts.append(f"{name} n/a ({errors.get(name, 'not run')})")
            names = list(fns)
            ratio = None
            if len(names) >= 2 and names[0] in rates and names[1] in rates:
                ratio = rates[names[0]][0] / rates[names[1]][0]
            print(f"{label} {p}: " + ", ".join(parts) + (f"  {names[0]}/{names[1]} {ratio:.3f}" if ratio is not None else "")
                  + (f"   # {note}" if note else ""))
            second = names[1] if len(names) > 1 else ""
            csv_rows.append([p, label, names[0], rates[names[0]][0] if names[0] in rates else "", second,
                             rates[second][0] if second in rates else "", ratio if ratio is not None else ""])
            sys.stdout.flush()

    # Varlen: 64 sequences, lengths uniform in 128..4096 (fixed seed), d128, H16, causal, against our dense N = 2k.
    try:
        h, d = 16, 128
        rng = random.Random(args.varlen_seed)
        lengths = [rng.randint(128, 4096) for _ in range(64)]
        offsets = [0]
        for length in lengths:
            offsets.append(offsets[-1] + length)
        total, longest = offsets[-1], max(lengths)
        cu = torch.tensor(offsets, dtype=torch.int32, device="cuda")
        g = torch.Generator(device="cuda").manual_seed(99)
        q, k, v, dout = (torch.randn(total, h, d, device="cuda", dtype=dt, generator=g) for _ in range(4))
        out, lse = torch.empty_like(q), torch.empty((h, total), device="cuda", dtype=torch.float32)
        grads = tuple(torch.empty_like(t) for t in (q, k, v))
        vopts = dict(causal=True, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=longest, max_seqlen_k=longest)
        fa4j.attention_forward_into(q, k, v, out, lse, **vopts)
        b2, n2 = ACCEPTANCE_TOKENS // 2048, 2048
        q2, k2, v2, do2 = (torch.randn(b2, n2, h, d, device="cuda", dtype=dt, generator=g) for _ in range(4))
        o2, l2 = torch.empty_like(q2), torch.empty((b2, h, n2), device="cuda", dtype=torch.float32)
        g2 = tuple(torch.empty_like(t) for t in (q2, k2, v2))
        fa4j.forward_into(q2, k2, v2, o2, l2, causal=True)
        varlen_flop = sum(flops(1, length, h, d, True, False) for length in lengths)
        timed_rows(f"varlen 64 seqs ({min(lengths)}..{longest}, {total} tokens, seed {args.varlen_seed}) d{d} H{h} causal",
                   {"ours-varlen": {"fwd": lambda: fa4j.attention_forward_into(q, k, v, out, lse, **vopts),
                                    "bwd": lambda: fa4j.attention_backward_into(dout, q, k, v, out, lse, *grads, **vopts)},
                    "ours-dense-N2k": {"fwd": lambda: fa4j.forward_into(q2, k2, v2, o2, l2, causal=True),
                                       "bwd": lambda: fa4j.backward_into(do2, q2, k2, v2, o2, l2, *g2, causal=True)}},
                   lambda name, p: (varlen_flop if name == "ours-varlen" else flops(b2, n2, h, d, True, False))
                   * (2.5 if p == "bwd" else 1.0),
                   note="FLOPs summed per sequence; SDPA has no varlen entry point, so the comparison is our dense rate")
        del q, k, v, dout, out, lse, grads, q2, k2, v2, do2, o2, l2, g2, cu
    except Exception as e:
        print(f"varlen row: n/a ({short_error(e)})")
    torch.cuda.empty_cache()

    # Tiny sequences: B 4096, H 32, N 16, d 64, against cuDNN and flash.
    try:
        b, h, n, d = 4096, 32, 16, 64
        g = torch.Generator(device="cuda").manual_seed(5)
        q, k, v, dout = (torch.randn(b, n, h, d, device="cuda", dtype=dt, generator=g) for _ in range(4))
        out, lse = torch.empty_like(q), torch.empty((b, h, n), device="cuda", dtype=torch.float32)
        grads = tuple(torch.empty_like(t) for t in (q, k, v))
        fa4j.forward_into(q, k, v, out, lse)
        fns = {"ours": {"fwd": lambda: fa4j.forward_into(q, k, v, out, lse),
                        "bwd": lambda: fa4j.backward_into(dout, q, k, v, out, lse, *grads)}}
        for backend in ("cudnn", "flash"):
            f, bw, _ = sdpa_fns(torch, backend, q, k, v, dout, False)
            fns[backend] = {"fwd": f, "bwd": bw}
        timed_rows(f"tiny B{b} H{h} N{n} d{d}", fns, lambda name, p: flops(b, n, h, d, False, p == "bwd"))
        del q, k, v, dout, out, lse, grads, fns
    except Exception as e:
        print(f"tiny row: n/a ({short_error(e)})")
    torch.cuda.empty_cache()

    # Sliding window (left 256, causal) and softcap 30: ours only, against our plain causal rate on the shape.
    try:
        b, h, n, d = ACCEPTANCE_TOKENS // 8192, 16, 8192, 128
        g = torch.Generator(device="cuda").manual_seed(6)
        q, k, v, dout = (torch.randn(b, n, h, d, device="cuda", dtype=dt, generator=g) for _ in range(4))
        # Each implementation its own out and lse (its backward reads the forward it belongs to).
        out, lse = torch.empty_like(q), torch.empty((b, h, n), device="cuda", dtype=torch.float32)
        out_p, lse_p = torch.empty_like(q), torch.empty((b, h, n), device="cuda", dtype=torch.float32)
        grads = tuple(torch.empty_like(t) for t in (q, k, v))
        fa4j.forward_into(q, k, v, out_p, lse_p, causal=True)
        left = 256
        window_pairs = sum(min(i + 1, left + 1) for i in range(n))  # keys each query attends
        window_flop = 4.0 * b * h * d * window_pairs
        for label, opts, flop_of, note in (
                (f"window (left {left}, causal) B{b} H{h} N{n} d{d}", dict(causal=True, window=(left, 0)),
                 lambda name, p: (window_flop if name == "ours-window" else flops(b, n, h, d, True, False))
                 * (2.5 if p == "bwd" else 1.0),
                 "ours only: SDPA's flash and cuDNN backends take no sliding window; FLOPs count the window's pairs"),
                (f"softcap 30 causal B{b} H{h} N{n} d{d}", dict(causal=True, softcap=30.0),
                 lambda name, p: flops(b, n, h, d, True, p == "bwd"),
                 "ours only: SDPA has no softcap")):
            name = "ours-window" if "window" in opts else "ours-softcap"
            try:
                fa4j.attention_forward_into(q, k, v, out, lse, **opts)
            except Exception as e:
                print(f"{label}: ours n/a ({short_error(e)})   # {note}")
                continue
            timed_rows(label, {name: {"fwd": lambda o=opts: fa4j.attention_forward_into(q, k, v, out, lse, **o),
                                      "bwd": lambda o=opts: fa4j.attention_backward_into(dout, q, k, v, out, lse, *grads, **o)},
                               "ours-plain-causal": {"fwd": lambda: fa4j.forward_into(q, k, v, out_p, lse_p, causal=True),
                                                     "bwd": lambda: fa4j.backward_into(dout, q, k, v, out_p, lse_p, *grads,
                                                                                       causal=True)}},
                       flop_of, note=note)
        del q, k, v, dout, out, lse, out_p, lse_p, grads
    except Exception as e:
        print(f"window/softcap rows: n/a ({short_error(e)})")
    torch.cuda.empty_cache()


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
    if args.acceptance:
        if fa4j is None:
            raise SystemExit("--acceptance needs --lib (ours is what it measures)")
        acceptance(torch, fa4j, args)
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
