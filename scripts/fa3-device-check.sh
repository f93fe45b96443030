#!/usr/bin/env bash
# One device-machine call for the Hopper (SM90) forward kernel: build (sm_90a only, CUTLASS from .deps), show
# each instantiation's HGMMA and local-memory (spill) instruction counts, run the CUDA forward test with
# the kernel family forced to SM90 and under AUTO, run the scheduler ablation (sm90_forward_tuning: the
# release kernel against the other tile order and the persistent longest-first scheduler, checked bit for
# bit), then time the variants at the bench shape, ours through the library and the SDPA peers in the
# same run.
# Usage (device tool, carry .deps): bash scripts/fa3-device-check.sh [test|bench|all]   (default all)
# Writes logs under $OUT when set.
set -uo pipefail
what=${1:-all}
out=${OUT:-/tmp/fa3-out}
mkdir -p "$out"
top=$(cd "$(dirname "$0")/.." && pwd)
b=/tmp/b
cmake -S "$top/native" -B $b -DCMAKE_BUILD_TYPE=Release -DFA4J_FETCH_CUTLASS=OFF \
  -DCUTLASS_DIR="$top/.deps/cutlass/usr/include" -DCMAKE_CUDA_ARCHITECTURES=90a-real -DFA4J_CUDA=ON >"$out/cmake.log" 2>&1 \
  || { tail -20 "$out/cmake.log"; exit 1; }
cmake --build $b -j16 >"$out/build.log" 2>&1 || { grep -B2 -A10 -i "error" "$out/build.log" | head -60; exit 1; }
cmake --build $b -j16 --target sm90_forward_tuning >>"$out/build.log" 2>&1 || { grep -B2 -A10 -i "error" "$out/build.log" | head -60; exit 1; }
echo "build ok"
for obj in $(find $b -name "sm90_forward_hdim*_bf16.cu.o" | sort -V); do
  name=$(basename "$obj" .cu.o)
  cuobjdump -sass "$obj" >"$out/$name.sass" 2>/dev/null
  echo "$name: HGMMA $(grep -c HGMMA "$out/$name.sass"), LDL/STL $(grep -c 'LDL\|STL' "$out/$name.sass")"
done
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
if [[ $what == test || $what == all ]]; then
  for k in sm90 auto; do
    timeout 300 $b/cuda_attention_forward_test --kernel $k >"$out/fwd_test_$k.log" 2>&1; rc=$?
    grep -i "^FAIL" "$out/fwd_test_$k.log" | head -10; tail -1 "$out/fwd_test_$k.log"; echo "forward test --kernel $k rc=$rc"
  done
  timeout 300 $b/sm90_forward_tuning --seqlen 2048 --reps 3 >"$out/tuning_check.log" 2>&1; rc=$?
  grep -v "^bf16" "$out/tuning_check.log" | tail -12; echo "scheduler variants bit-for-bit check rc=$rc"
fi
if [[ $what == bench || $what == all ]]; then
  timeout 600 $b/sm90_forward_tuning --reps 20 2>&1 | grep "^bf16"
  bench() { timeout 60 $b/fa4j_bench --dtypes bf16 --no-backward --reps 20 "$@" 2>&1 | grep "^bf16"; }
  echo "ours (default):"; bench --dims 64,128 --causal 0,1
  PYTHONUNBUFFERED=1 timeout 300 python3 "$top/benchmarks/peer_sdpa.py" --ours $b/fa4j_bench --dtypes bf16 >"$out/peer.log" 2>&1
  tail -6 "$out/peer.log"
fi
