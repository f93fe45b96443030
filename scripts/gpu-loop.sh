#!/usr/bin/env bash
# The GPU loop, for a CUDA machine with no network and no Java (prepare .bundle/ first with
# scripts/gpu-bundle.sh on a machine that has them). One command that:
#   1. builds the native library for the local GPU's architectures (CUTLASS from the bundled .deb),
#   2. runs the native tests (ctest: CPU and CUDA drivers),
#   3. runs the Java test suite (JUnit console, bundled jlink runtime) against that library,
#   4. runs the Java device soak (DeviceSoakGpuTest) once with 10^6 allocate/attention/free cycles,
#   5. runs compute-sanitizer on the CUDA forward/backward tests: memcheck with small sizes, racecheck and
#      synccheck with tiny ones; the forward also with its FlashAttention-2 kernel forced (Hopper runs it
#      only for strides TMA cannot describe),
#   6. runs the benchmarks (native driver + PyTorch SDPA peers, and the Java bench CLI; with --benches
#      "... acceptance" also the acceptance table of the attention v2 issue, peer_sdpa.py --acceptance),
# and prints a summary. Logs go to $OUT (when set) or ./gpu-out.
#   scripts/gpu-loop.sh [--skip-bench] [--skip-sanitizer] [--skip-soak] [--soak-cycles N]
#                       [--shapes 2x8192x16x128,2x8192x16x64] [--archs "90a-real"] [--skip-ctest] [--unverified]
#                       [--sanitizers "memcheck racecheck synccheck"] [--benches "peers java gap alloc acceptance"]
#                       [--java-tests "AttentionFeaturesGpuTest VarlenAttentionGpuTest ..."]
# --unverified also offers the kernels that have not passed on a GPU yet (dispatch/cuda_kernel_table.cpp), to
# test them. --archs builds for fewer architectures (the local GPU's) to save device time; the full set is the
# CMake default. --java-tests runs only the named test classes (default: all). All logs are also packed into
# $logs/logs.tgz (the device tool returns few files).
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bundle="$top/.bundle"
logs=${OUT:-$top/gpu-out}
work=${FA4J_GPU_WORK:-/tmp/fa4j-gpu}
skip_bench=0 skip_sanitizer=0 skip_soak=0 soak_cycles=1000000 shapes="2x8192x16x128,2x8192x16x64"
archs="" unverified="" skip_ctest=0 sanitizers="memcheck racecheck synccheck" benches="peers java alloc" java_tests=""
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-bench) skip_bench=1 ;;
    --skip-sanitizer) skip_sanitizer=1 ;;
    --skip-soak) skip_soak=1 ;;
    --soak-cycles) soak_cycles=$2; shift ;;
    --shapes) shapes=$2; shift ;;
    --archs) archs=$2; shift ;;
    --skip-ctest) skip_ctest=1 ;;
    --unverified) unverified=ON ;;
    --sanitizers) sanitizers=$2; shift ;;
    --benches) benches=$2; shift ;;
    --java-tests) java_tests=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$logs" "$work"
summary=()
# The lines of a log that the summary quotes (its last two): test tallies and sanitizer error counts.
summary_lines='passed|Tests run|tests successful|tests failed|ERROR SUMMARY|RACECHECK SUMMARY|demo:'
step() {  # step NAME LOGFILE COMMAND...: runs, logs, records pass/fail
  local name=$1 log=$2; shift 2
  local start=$SECONDS
  "$@" >"$logs/$log" 2>&1
  local rc=$?
  summary+=("$(printf '%-36s %-6s %4ds  %s' "$name" "$([ $rc -eq 0 ] && echo ok || echo FAILED)" $((SECONDS - start)) "$(grep -E "$summary_lines" "$logs/$log" | tail -n 2 | tr '\n' ' ')")")
  echo "${summary[-1]}"  # progress, for a run that gets cut short
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
        -DCUTLASS_DIR="$work/cutlass/usr/include" ${archs:+"-DCMAKE_CUDA_ARCHITECTURES=$archs"} \
        ${unverified:+"-DFA4J_UNVERIFIED_KERNELS=ON"} &&
    cmake --build "$work/build" --parallel "$(nproc)"
}
step "native build" build.log build_native || { printf '%s\n' "${summary[@]}"; exit 1; }
lib="$work/build/libflashattn4j.so"

[ $skip_ctest -eq 0 ] && step "native tests (ctest)" ctest.log ctest --test-dir "$work/build" --output-on-failure

rm -rf "$work/test-classes" && tar xzf "$bundle/test-classes.tgz" -C "$work"
junit() {  # junit [JVM options] -- SELECTORS...: the JUnit console on the test classes against $lib
  local jvm=() cp="$work/test-classes" j
  while [ $# -gt 0 ] && [ "$1" != -- ]; do jvm+=("$1"); shift; done
  shift
  for j in "$bundle"/jars/flashattn4j-0*.jar "$bundle"/jars/flashattn4j-bindings-*.jar "$bundle"/jars/flashattn4j-benchmarks.jar "$bundle"/jars/jqwik-*.jar; do cp="$cp:$j"; done
  "$java" --enable-native-access=ALL-UNNAMED -Xmx8g -Dflashattn4j.library.path="$lib" "${jvm[@]}" \
    -Dfa4j.header="$top/native/include/flashattn4j.h" -Dfa4j.bindings.sources="$top/bindings/src/main/java" \
    -jar "$bundle"/jars/junit-platform-console-standalone-*.jar execute --class-path "$cp" "$@" \
    --disable-banner --details=tree
}
# All test classes, or only those --java-tests names (simple names, e.g. "AttentionFeaturesGpuTest GridLimitsGpuTest").
java_selectors=(--scan-class-path)
if [ -n "$java_tests" ]; then
  java_selectors=()
  for c in $java_tests; do java_selectors+=(--select-class "io.github.flashattn4j.tests.$c"); done
fi
step "java tests (JUnit)" java-tests.log junit -- "${java_selectors[@]}"

if [ $skip_soak -eq 0 ]; then
  summary_lines='cycles/s|tests failed' \
    step "java soak ($soak_cycles cycles)" java-soak.log junit -Dflashattn4j.soak.cycles="$soak_cycles" -- \
      --select-class io.github.flashattn4j.tests.DeviceSoakGpuTest
fi

# Our library loaded into a PyTorch process (its own libstdc++ already loaded) and checked against a
# float64 reference there, on CPU and CUDA tensors: the coexistence test of the exported-symbols rule.
step "in-process check (PyTorch)" inprocess-check.log python3 benchmarks/peer_sdpa.py --lib "$lib" --check-only

if [ $skip_sanitizer -eq 0 ]; then
  # memcheck on every shape of at most 333 rows; racecheck (shared-memory hazards) and synccheck (barrier
  # misuse) instrument every shared-memory access and barrier, so they get shapes of at most 130 rows: up to
  # three key tiles, enough for the hazards between one loop iteration and the next, and ragged edges.
  sanitize() {  # sanitize TOOL DRIVER LABEL [DRIVER ARGUMENTS...]
    local tool=$1 driver=$2 label=$3; shift 3
    local size=(--max-rows 130)
    [ "$tool" = memcheck ] && size=(--small)
    step "$tool $label" "$tool-$label.log" \
      compute-sanitizer --tool "$tool" --error-exitcode 1 "$work/build/$driver" "${size[@]}" "$@"
  }
  for tool in $sanitizers; do
    sanitize "$tool" cuda_attention_forward_test forward
    sanitize "$tool" cuda_attention_forward_test forward-sm80 --kernel sm80
    sanitize "$tool" cuda_attention_backward_test backward
    sanitize "$tool" cuda_attention_backward_test backward-sm80 --kernel sm80
  done
fi

if [ $skip_bench -eq 0 ]; then
  if [[ " $benches " == *" peers "* ]]; then
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
  [[ " $benches " == *" java "* ]] && step "bench: native driver" bench-native-1.log bench_native
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
  [[ " $benches " == *" java "* ]] && step "bench: Java API" bench-java.log bench_java
  [[ " $benches " == *" java "* ]] && step "bench: native driver again" bench-native-2.log bench_native
  # The Java-vs-native forward gap, interleaved: native, Java, native, Java, ... (3 rounds each, forward only,
  # own stream and the driver's inputs on both sides) with the SM clock, power and temperature sampled every
  # 100 ms, so that a difference is seen against the clocks it ran at rather than against another stretch of
  # the run.
  bench_gap() {
    local round shape b n h d
    nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu --format=csv,noheader -lms 100 \
      >"$logs/gap-clocks.log" 2>&1 &
    local sampler=$!
    for round in 1 2 3; do
      for shape in ${shapes//,/ }; do
        IFS=x read -r b n h d <<<"$shape"
        echo "round $round native $(date +%T.%N)"
        "$work/build/fa4j_bench" --batch "$b" --seqlen "$n" --heads "$h" --dims "$d" --dtypes bf16 --causal 0,1 \
          --no-backward | grep -v '^fa4j_bench,'
        echo "round $round java $(date +%T.%N)"
        "$java" --enable-native-access=ALL-UNNAMED -Dflashattn4j.library.path="$lib" \
          -cp "$bundle/jars/flashattn4j-benchmarks.jar" io.github.flashattn4j.bench.BenchCli --device cuda:0 \
          --shapes "$shape" --warmup 20 --iters 30 --batch 4 --stream --inputs uniform4 --skip-backward || return 1
      done
    done
    kill $sampler 2>/dev/null
    echo "clock samples: $(wc -l <"$logs/gap-clocks.log")"
  }
  [[ " $benches " == *" gap "* ]] && step "bench: Java/native interleaved" bench-gap.log bench_gap
  # The acceptance table of the attention v2 issue: ours vs cuDNN (SDPA flash where cuDNN refuses) on the issue's
  # shapes, forward and backward, plus varlen, tiny-sequence, window and softcap rows; the summary quotes the
  # geometric means.
  [[ " $benches " == *" acceptance "* ]] && summary_lines='acceptance:' \
    step "bench: acceptance table (v2 issue)" bench-acceptance.log python3 benchmarks/peer_sdpa.py --lib "$lib" --no-check --acceptance
  [[ " $benches " == *" alloc "* ]] && step "bench: allocation per step" bench-alloc.log "$java" --enable-native-access=ALL-UNNAMED -Dflashattn4j.library.path="$lib" \
    -cp "$bundle/jars/flashattn4j-benchmarks.jar" io.github.flashattn4j.bench.AllocationBench
fi

echo
echo "=== GPU loop summary ($(cat "$logs/gpu.txt")) ==="
printf '%s\n' "${summary[@]}"
for f in inprocess-check.log bench-peers.log bench-native-1.log bench-java.log bench-native-2.log bench-gap.log bench-alloc.log bench-acceptance.log; do
  lines=30
  [ "$f" = bench-acceptance.log ] && lines=60  # the whole table
  [ -f "$logs/$f" ] && { echo "--- $f"; grep -v '^PASS\|^check ' "$logs/$f" | tail -n $lines; }
done
(cd "$logs" && tar czf logs.tgz --exclude=logs.tgz ./*.log gpu.txt 2>/dev/null)
