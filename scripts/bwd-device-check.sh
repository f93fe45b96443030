#!/usr/bin/env bash
# One device-machine call for the CUDA backward kernels: build (sm_90a only, CUTLASS from .deps), show the
# main kernels' registers/spills and their local-memory instructions, run the backward test, time each
# variant, then ours against the SDPA peers in the same run.
#
# Usage (device tool, carry .deps):  bash scripts/bwd-device-check.sh [tune|tune2|final]
#   tune:  builds with -DFA4J_BWD_TUNING; tests (--small) and times every FA4J_BWD_VARIANT (see
#          fa2_backward_hdim{64,128}.cu) and FA4J_BWD_STAGGER 0/1, and profiles the default with ncu.
#   tune2: the same build; a shorter list of variants and ncu's stall reasons for the d=64 default.
#   final: the shipped build (no tuning hook): test, peers.
# Logs go under $OUT when set (else /tmp/bwd-out); the last lines printed are the summary.
set -uo pipefail
mode=${1:-tune}
out=${OUT:-/tmp/bwd-out}
mkdir -p "$out"
top=$(cd "$(dirname "$0")/.." && pwd)
b=/tmp/bwd-build
flags=""
[[ $mode == tune* ]] && flags="-DFA4J_BWD_TUNING"
t0=$(date +%s)
cmake -S "$top/native" -B $b -DCMAKE_BUILD_TYPE=Release -DFA4J_FETCH_CUTLASS=OFF \
  -DCUTLASS_DIR="$top/.deps/cutlass/usr/include" -DCMAKE_CUDA_ARCHITECTURES=90a-real -DFA4J_CUDA=ON \
  -DCMAKE_CUDA_FLAGS="$flags" >"$out/cmake.log" 2>&1 || { tail -20 "$out/cmake.log"; exit 1; }
cmake --build $b -j16 --target cuda_attention_backward_test fa4j_bench >"$out/build.log" 2>&1 \
  || { grep -B2 -A10 -i "error" "$out/build.log" | head -60; exit 1; }
echo "build ok ($(( $(date +%s) - t0 )) s)"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader

# Registers, spills and local-memory instructions of every main kernel.
for d in 64 128; do
  obj=$(find $b -name "fa2_backward_hdim$d.cu.o" | head -1)
  cuobjdump -res-usage "$obj" 2>/dev/null | grep -A1 "bwd_main" | paste - - |
    sed -E 's/.*BwdTileI(.*)EEELb([01])ELb([01])E.*(REG:[0-9]+).*(STACK:[0-9]+).*(LOCAL:[0-9]+).*/\1 causal\2 vec\3 \4 \5 \6/' |
    awk '{sub(/LNS1_7DqWriteE/, "w", $1); gsub(/ELi|Li/, ",", $1); print}' | sort | uniq >"$out/res$d.txt"
  cuobjdump -sass "$obj" >"$out/sass$d.txt" 2>/dev/null
  awk '/Function :/ {f=$3} /bwd_main/ && /Function :/ {n[f]=0} /LDL|STL/ {c[f]++} END {for (k in n) print "LDL+STL", c[k]+0, k}' \
    "$out/sass$d.txt" | sed -E 's/_ZN.*BwdTileI(.*)EEELb([01])ELb([01])E.*/\1 causal\2 vec\3/' | grep "vec1" | sort >>"$out/res$d.txt"
done
cat "$out/res128.txt" "$out/res64.txt"

if [[ $mode == tune ]]; then
  variants="0 1 2 3 4 5"
elif [[ $mode == tune2 ]]; then
  variants="0 3 4"
else
  variants="0"
fi
for v in $variants; do
  small=""
  [[ $v != 0 ]] && small="--small"
  FA4J_BWD_VARIANT=$v timeout 200 $b/cuda_attention_backward_test $small >"$out/test_v$v.log" 2>&1; rc=$?
  echo "test variant $v $small: rc=$rc $(grep -ci 'FAIL' "$out/test_v$v.log") FAIL lines; $(tail -1 "$out/test_v$v.log")"
  grep -i "fail" "$out/test_v$v.log" | head -5
done

bench() {  # $1 = label; environment picks the variant
  timeout 120 $b/fa4j_bench --dims 128,64 --dtypes bf16 --causal 0,1 --reps 20 --warmup 3 2>&1 |
    grep "^fa4j_bench," | sed -E "s/^fa4j_bench,dtype=bf16,d=([0-9]+),causal=([01]).*bwd_ms=([0-9.]+),bwd_tflops=([0-9.]+).*/$1 d\1 causal\2 bwd_ms=\3 bwd_tflops=\4/"
}
if [[ $mode == tune ]]; then
  for v in 1 2 3 4 5; do FA4J_BWD_VARIANT=$v bench "v$v stagger1" | tee -a "$out/bench.log"; done
  for v in 1 3; do FA4J_BWD_VARIANT=$v FA4J_BWD_STAGGER=0 bench "v$v stagger0" | tee -a "$out/bench.log"; done
  # Profile of the default variant, d128 and d64 non-causal (clocks as found, no cache flush).
  for d in 128 64; do
    timeout 90 ncu --clock-control none --cache-control none -k regex:bwd_main --launch-count 1 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      --section WarpStateStats --section LaunchStats --section Occupancy \
      $b/fa4j_bench --dims $d --dtypes bf16 --causal 0 --reps 1 --warmup 0 >"$out/ncu$d.txt" 2>&1
    grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|L1/TEX Hit|L2 Hit|Shared|Issue Slots Busy|Warp Cycles Per Issued|Stall|Registers|Local" "$out/ncu$d.txt" | head -40 | sed "s/^/ncu d$d: /"
  done
fi
if [[ $mode == tune2 ]]; then
  for vs in 0:0 3:0 4:0 0:1 0:0; do v=${vs%:*}; st=${vs#*:}
    FA4J_BWD_VARIANT=$v FA4J_BWD_STAGGER=$st bench "v$v stagger$st" | tee -a "$out/bench.log"; done
  stalls=smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_dispatch_stall_per_issue_active.ratio,smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_no_instruction_per_issue_active.ratio,smsp__average_warps_issue_stalled_branch_resolving_per_issue_active.ratio,smsp__average_warps_issue_stalled_membar_per_issue_active.ratio,smsp__average_warps_issue_stalled_misc_per_issue_active.ratio,smsp__average_warps_issue_stalled_tex_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_drain_per_issue_active.ratio,smsp__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.avg.pct_of_peak_sustained_elapsed,smsp__inst_executed.sum
  for v in 0; do for d in 64; do
    FA4J_BWD_VARIANT=$v timeout 90 ncu --clock-control none --cache-control none -k regex:bwd_main --launch-count 1 --metrics $stalls \
      $b/fa4j_bench --dims $d --dtypes bf16 --causal 0 --reps 1 --warmup 0 >"$out/stall_v${v}_d$d.txt" 2>&1
    grep -E "smsp__|l1tex__" "$out/stall_v${v}_d$d.txt" | sed -E "s/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//; s/^ +/v$v d$d /; s/ +/ /g"
  done; done
fi
echo "--- peer (ours = default variant) ---"
PYTHONUNBUFFERED=1 timeout 240 python3 "$top/benchmarks/peer_sdpa.py" --ours $b/fa4j_bench --dtypes bf16 >"$out/peer.log" 2>&1
tail -6 "$out/peer.log"
echo "--- summary ---"
[[ -f "$out/bench.log" ]] && cat "$out/bench.log"
echo "elapsed $(( $(date +%s) - t0 )) s"
