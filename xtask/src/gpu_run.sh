#!/bin/sh
# lopper GPU bundle: runs every GPU test and benchmark; writes results.md, results.json and logs under
# $OUT (default: ./out next to this script). Needs: an NVIDIA driver (libcuda), cuBLAS and cuSPARSE
# shared libraries somewhere under /usr, /opt or /root (pip wheels or a toolkit). No Rust, no network.
# Usage: run.sh [--quick] [bench arguments...]   (--quick: one N and fewer shapes)
# LOPPER_SANITIZE=1 also runs the tests under compute-sanitizer memcheck (sanitize.log).
# Each stage has a time limit (seconds; LOPPER_T_TESTS, LOPPER_T_BENCH, LOPPER_T_SANITIZE) so a hang
# cannot use up a lease: exit 124 in the summary means that stage ran out of time.
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/out}
mkdir -p "$OUT"
# Library folders of cuBLAS/cuSPARSE (pip wheels or a toolkit); never a stubs/ folder (fake libcuda).
LIBS=$(find /usr /opt /root -xdev \( -name 'libcublas.so.*' -o -name 'libcusparse.so.*' -o -name 'libcublasLt.so.*' -o -name 'libnvJitLink.so.*' \) 2>/dev/null | grep -v /stubs/ | xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:-}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" > "$OUT/env.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv >> "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
timeout "${LOPPER_T_TESTS:-180}" "$HERE/bin/gpu-tests" --test-threads=1 --nocapture > "$OUT/tests.log" 2>&1
TEST_RC=$?
grep -E "^test |test result|skipped|panicked" "$OUT/tests.log" | tail -40
DLMC_ARG=""
[ -d "$HERE/dlmc" ] && DLMC_ARG="--dlmc $HERE/dlmc"
timeout "${LOPPER_T_BENCH:-300}" "$HERE/bin/gpu_bench" $DLMC_ARG --json "$OUT/bench.json" --table "$OUT/bench.md" "$@" > "$OUT/bench.log" 2>&1
BENCH_RC=$?
tail -60 "$OUT/bench.log"
if [ "${LOPPER_SANITIZE:-0}" = 1 ]; then
  # memcheck over the GPU tests (Firecracker machines; gVisor refuses the device)
  CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer /opt/nvidia/*/compute-sanitizer 2>/dev/null | head -1)
  if [ -n "$CS" ]; then
    timeout "${LOPPER_T_SANITIZE:-180}" "$CS" --tool memcheck --error-exitcode 3 "$HERE/bin/gpu-tests" --test-threads=1 > "$OUT/sanitize.log" 2>&1
    echo "compute-sanitizer memcheck: exit $?" | tee -a "$OUT/env.txt"
  else
    echo "compute-sanitizer not found" | tee -a "$OUT/env.txt"
  fi
fi
{
  echo "# lopper GPU bundle results"
  echo
  echo '```'
  cat "$OUT/env.txt"
  echo '```'
  echo
  echo "tests: exit $TEST_RC; bench: exit $BENCH_RC"
  echo
  grep -E "test result" "$OUT/tests.log"
  [ -f "$OUT/sanitize.log" ] && tail -3 "$OUT/sanitize.log"
  echo
  [ -f "$OUT/bench.md" ] && cat "$OUT/bench.md"
} > "$OUT/results.md"
printf '{"tests_exit": %s, "bench_exit": %s, "bench": "bench.json"}\n' "$TEST_RC" "$BENCH_RC" > "$OUT/results.json"
echo "results in $OUT: results.md results.json bench.json tests.log bench.log"
[ "$TEST_RC" = 0 ] && [ "$BENCH_RC" = 0 ]
