#!/usr/bin/env bash
# One device-machine call for the CUDA backward kernels (kernels/sm80/backward_*): build (sm_90a only, CUTLASS
# from .deps), show the main kernels' registers/spills and their local-memory instructions, run the backward
# test, then time ours against the SDPA peers in the same run.
#
# Usage (device tool, carry .deps):  bash scripts/bwd-device-check.sh [--small]
#   --small: the backward test's small shapes only (e.g. under compute-sanitizer time limits).
# Logs go under $OUT when set (else /tmp/bwd-out); the last lines printed are the summary.
set -uo pipefail
small=${1:-}
out=${OUT:-/tmp/bwd-out}
mkdir -p "$out"
top=$(cd "$(dirname "$0")/.." && pwd)
b=/tmp/bwd-build
t0=$(date +%s)
cmake -S "$top/native" -B $b -DCMAKE_BUILD_TYPE=Release -DFA4J_FETCH_CUTLASS=OFF \
  -DCUTLASS_DIR="$top/.deps/cutlass/usr/include" -DCMAKE_CUDA_ARCHITECTURES=90a-real -DFA4J_CUDA=ON \
  >"$out/cmake.log" 2>&1 || { tail -20 "$out/cmake.log"; exit 1; }
cmake --build $b -j16 --target cuda_attention_backward_test fa4j_bench >"$out/build.log" 2>&1 \
  || { grep -B2 -A10 -i "error" "$out/build.log" | head -60; exit 1; }
echo "build ok ($(( $(date +%s) - t0 )) s)"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader

# Registers, spills and local-memory instructions of every main kernel (one object per head dim and dtype).
for obj in $(find $b -name "sm80_backward_hdim*.cu.o" | sort); do
  name=$(basename "$obj" .cu.o)
  cuobjdump -res-usage "$obj" 2>/dev/null | grep -A1 "backward_main" | paste - - |
    sed -E 's/.*BwdTileI(.*)EEELb([01])ELb([01])E.*(REG:[0-9]+).*(STACK:[0-9]+).*(LOCAL:[0-9]+).*/transform\2 vec\3 \4 \5 \6/' |
    sed "s/^/$name /" >>"$out/res.txt"
  cuobjdump -sass "$obj" 2>/dev/null |
    awk -v n="$name" '/Function :/ {f=$3} /LDL|STL/ {c[f]++} END {for (k in c) print n, "LDL+STL", c[k], k}' |
    grep backward_main | sed -E 's/_ZN.*ELb([01])ELb([01])E.*/transform\1 vec\2/' >>"$out/res.txt"
done
cat "$out/res.txt"

timeout 400 $b/cuda_attention_backward_test $small >"$out/test.log" 2>&1; rc=$?
echo "cuda_attention_backward_test $small: rc=$rc $(grep -ci 'FAIL' "$out/test.log") FAIL lines; $(tail -1 "$out/test.log")"
grep -i "fail" "$out/test.log" | head -5

echo "--- peer ---"
PYTHONUNBUFFERED=1 timeout 240 python3 "$top/benchmarks/peer_sdpa.py" --ours $b/fa4j_bench --dtypes bf16 >"$out/peer.log" 2>&1
tail -6 "$out/peer.log"
echo "elapsed $(( $(date +%s) - t0 )) s"
