#!/usr/bin/env bash
# One device-machine call for the Hopper forward kernel: build (sm_90a only, CUTLASS from .deps, with the
# measurement-only tile variants of FA4J_FWD_TUNING), show the kernels' resources and HGMMA count, run
# the CUDA forward test (default tiles in full, the other variants on small shapes), time each variant,
# then ours (default tiles), the FlashAttention-2 kernel (FA4J_CUDA_FORWARD=fa2) and the SDPA peers in
# the same run.
# Usage (device tool, carry .deps): bash scripts/fa3-device-check.sh [test|bench|all]   (default all)
# Writes logs under $OUT when set.
set -uo pipefail
what=${1:-all}
out=${OUT:-/tmp/fa3-out}
mkdir -p "$out"
top=$(cd "$(dirname "$0")/.." && pwd)
b=/tmp/b
cmake -S "$top/native" -B $b -DCMAKE_BUILD_TYPE=Release -DFA4J_FETCH_CUTLASS=OFF -DCMAKE_CUDA_FLAGS=-DFA4J_FWD_TUNING \
  -DCUTLASS_DIR="$top/.deps/cutlass/usr/include" -DCMAKE_CUDA_ARCHITECTURES=90a-real -DFA4J_CUDA=ON >"$out/cmake.log" 2>&1 \
  || { tail -20 "$out/cmake.log"; exit 1; }
cmake --build $b -j16 >"$out/build.log" 2>&1 || { grep -B2 -A10 -i "error" "$out/build.log" | head -60; exit 1; }
echo "build ok"
for d in 128 64; do
  obj=$(find $b -name "fa3_forward_hdim$d.cu.o" | head -1)
  cuobjdump -sass "$obj" >"$out/fa3_$d.sass" 2>/dev/null
  echo "d$d: HGMMA $(grep -c HGMMA "$out/fa3_$d.sass"), LDL/STL $(grep -c 'LDL\|STL' "$out/fa3_$d.sass")"
done
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
if [[ $what == test || $what == all ]]; then
  timeout 300 $b/cuda_attention_forward_test >"$out/fwd_test.log" 2>&1; rc=$?
  grep -i "^FAIL" "$out/fwd_test.log" | head -10; tail -1 "$out/fwd_test.log"; echo "forward test (default tiles) rc=$rc"
  for v in 1 2 3; do
    FA4J_FA3_VARIANT=$v timeout 120 $b/cuda_attention_forward_test --small >"$out/fwd_test_v$v.log" 2>&1; rc=$?
    grep -i "^FAIL" "$out/fwd_test_v$v.log" | head -5; echo "variant $v (small): $(tail -1 "$out/fwd_test_v$v.log") rc=$rc"
  done
fi
if [[ $what == bench || $what == all ]]; then
  bench() { timeout 60 $b/fa4j_bench --dtypes bf16 --no-backward --reps 20 "$@" 2>&1 | grep "^bf16"; }
  for v in 0 1; do echo "d128 variant $v:"; FA4J_FA3_VARIANT=$v bench --dims 128 --causal 0,1; done
  for v in 0 1 2 3; do echo "d64 variant $v:"; FA4J_FA3_VARIANT=$v bench --dims 64 --causal 0,1; done
  for o in 0 1; do echo "causal, block order heads_fastest=$o:"; FA4J_FA3_ORDER=$o bench --dims 128,64 --causal 1; done
  echo "FA2 kernel:"; FA4J_CUDA_FORWARD=fa2 bench --dims 128,64 --causal 0,1
  PYTHONUNBUFFERED=1 timeout 300 python3 "$top/benchmarks/peer_sdpa.py" --ours $b/fa4j_bench --dtypes bf16 >"$out/peer.log" 2>&1
  tail -6 "$out/peer.log"
fi
