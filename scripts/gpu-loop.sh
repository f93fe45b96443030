#!/usr/bin/env bash
# The GPU loop, for a CUDA machine with no network and no Java (prepare .bundle/ first with
# scripts/gpu-bundle.sh on a machine that has them). One command that:
#   1. builds the native library for the local GPU's architectures (CUTLASS from the bundled .deb),
#   2. runs the native tests (ctest: CPU and CUDA drivers),
#   3. runs the Java test suite (JUnit console, bundled jlink runtime) against that library,
#   4. runs compute-sanitizer memcheck on the CUDA forward/backward tests with small sizes,
#   5. runs the benchmarks (native driver + PyTorch SDPA peers, and the Java bench CLI),
# and prints a summary. Logs go to $OUT (when set) or ./gpu-out.
#   scripts/gpu-loop.sh [--skip-bench] [--skip-sanitizer] [--shapes 2x8192x16x128,2x8192x16x64]
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bundle="$top/.bundle"
logs=${OUT:-$top/gpu-out}
work=${FA4J_GPU_WORK:-/tmp/fa4j-gpu}
skip_bench=0 skip_sanitizer=0 shapes="2x8192x16x128,2x8192x16x64"
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-bench) skip_bench=1 ;;
    --skip-sanitizer) skip_sanitizer=1 ;;
    --shapes) shapes=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$logs" "$work"
summary=()
step() {  # step NAME LOGFILE COMMAND...: runs, logs, records pass/fail
  local name=$1 log=$2; shift 2
  local start=$SECONDS
  "$@" >"$logs/$log" 2>&1
  local rc=$?
  summary+=("$(printf '%-28s %-6s %4ds  %s' "$name" "$([ $rc -eq 0 ] && echo ok || echo FAILED)" $((SECONDS - start)) "$(grep -E 'passed|Tests run|tests successful|tests failed|ERROR SUMMARY|demo:' "$logs/$log" | tail -n 2 | tr '\n' ' ')")")
  return $rc
}

[ -d "$bundle" ] || { echo "no .bundle/: run scripts/gpu-bundle.sh first" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$logs/gpu.txt" 2>&1
echo "GPU: $(cat "$logs/gpu.txt")"

# Java runtime and CUTLASS from the bundle.
rm -rf "$work/jre" "$work/cutlass" && tar xzf "$bundle/jre.tgz" -C "$work"
dpkg -x "$bundle"/cutlass/libcutlass-dev_*.deb "$work/cutlass"
java="$work/jre/bin/java"

build_native() {
  cmake -S native -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DFA4J_CUDA=ON -DFA4J_FETCH_CUTLASS=OFF \
        -DCUTLASS_DIR="$work/cutlass/usr/include" && cmake --build "$work/build" --parallel "$(nproc)"
}
step "native build" build.log build_native || { printf '%s\n' "${summary[@]}"; exit 1; }
lib="$work/build/libflashattn4j.so"

step "native tests (ctest)" ctest.log ctest --test-dir "$work/build" --output-on-failure

run_java_tests() {
  rm -rf "$work/test-classes" && tar xzf "$bundle/test-classes.tgz" -C "$work"
  local cp="$work/test-classes"
  for j in "$bundle"/jars/flashattn4j-0*.jar "$bundle"/jars/flashattn4j-bindings-*.jar "$bundle"/jars/jqwik-*.jar; do cp="$cp:$j"; done
  "$java" --enable-native-access=ALL-UNNAMED -Xmx8g -Dflashattn4j.library.path="$lib" \
    -Dfa4j.header="$top/native/include/flashattn4j.h" -Dfa4j.bindings.sources="$top/bindings/src/main/java" \
    -jar "$bundle"/jars/junit-platform-console-standalone-*.jar execute --class-path "$cp" --scan-class-path \
    --disable-banner --details=tree
}
step "java tests (JUnit)" java-tests.log run_java_tests

# Our library loaded into a PyTorch process (its own libstdc++ already loaded) and checked against a
# float64 reference there, on CPU and CUDA tensors: the coexistence test of the exported-symbols rule.
step "in-process check (PyTorch)" inprocess-check.log python3 benchmarks/peer_sdpa.py --lib "$lib" --check-only

if [ $skip_sanitizer -eq 0 ]; then
  for t in "$work"/build/cuda_*_test; do
    [ -x "$t" ] || continue
    step "memcheck $(basename "$t")" "memcheck-$(basename "$t").log" \
      env FA4J_TEST_SMALL=1 compute-sanitizer --tool memcheck --error-exitcode 1 "$t" --small
  done
fi

if [ $skip_bench -eq 0 ]; then
  if [ -f benchmarks/peer_sdpa.py ]; then
    step "bench: ours vs SDPA peers (in process)" bench-peers.log python3 benchmarks/peer_sdpa.py --lib "$lib" --no-check --shapes "$shapes"
  fi
  # Java API against the native driver on the same shapes, native before and after Java so that a
  # warmer (slower-clocked) GPU late in the run does not pass for Java overhead.
  bench_native() {
    local shape
    for shape in ${shapes//,/ }; do
      IFS=x read -r b n h d <<<"$shape"
      "$work/build/fa4j_bench" --batch "$b" --seqlen "$n" --heads "$h" --dims "$d" --dtypes bf16 --causal 0,1 | grep -v '^fa4j_bench,'
    done
  }
  step "bench: native driver" bench-native-1.log bench_native
  # Java API against the native driver: the default stream and Gaussian inputs (what users get), then the
  # native driver's own conditions one at a time (its own non-blocking stream; its input distribution), so
  # that a gap between Java and native is attributed rather than guessed at.
  bench_java() {
    local stream inputs
    for stream in "" --stream; do
      for inputs in gaussian uniform4; do
        "$java" --enable-native-access=ALL-UNNAMED -Dflashattn4j.library.path="$lib" \
          -cp "$bundle/jars/flashattn4j-benchmarks.jar" io.github.flashattn4j.bench.BenchCli --device cuda:0 \
          --shapes "$shapes" --warmup 5 --iters 30 $stream --inputs "$inputs" || return 1
      done
    done
  }
  step "bench: Java API" bench-java.log bench_java
  step "bench: native driver again" bench-native-2.log bench_native
  step "bench: allocation per step" bench-alloc.log "$java" --enable-native-access=ALL-UNNAMED -Dflashattn4j.library.path="$lib" \
    -cp "$bundle/jars/flashattn4j-benchmarks.jar" io.github.flashattn4j.bench.AllocationBench
fi

echo
echo "=== GPU loop summary ($(cat "$logs/gpu.txt")) ==="
printf '%s\n' "${summary[@]}"
for f in inprocess-check.log bench-peers.log bench-native-1.log bench-java.log bench-native-2.log bench-alloc.log; do [ -f "$logs/$f" ] && { echo "--- $f"; grep -v '^PASS\|^check ' "$logs/$f" | tail -n 30; }; done
