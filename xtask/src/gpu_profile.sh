#!/bin/sh
# lopper GPU bundle: profiles one kernel of the bench with Nsight Compute (Firecracker machines; gVisor
# has no counters). Writes ncu_<tag>.txt (sections) and ncu_<tag>_stalls.txt (stall reasons per issued
# instruction, tensor-pipe activity) under $OUT and prints a summary.
# Usage: profile.sh KERNEL_REGEX TAG [bench arguments...]   e.g.
#   profile.sh 'sparse24_spmm_bf16_w128_k64_s3$' w128 --skip-csr --quick
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/out}
mkdir -p "$OUT"
RE=$1; TAG=$2; shift 2
LIBS=$(find /usr /opt /root -xdev \( -name 'libcublas.so.*' -o -name 'libcusparse.so.*' -o -name 'libcublasLt.so.*' -o -name 'libnvJitLink.so.*' \) 2>/dev/null | grep -v /stubs/ | xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:-}"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "ncu not found"; exit 1; }
timeout 150 "$NCU" --clock-control none --kernel-name "regex:$RE" --launch-skip 1 --launch-count 1 \
  --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
  --section WarpStateStats --section Occupancy --section LaunchStats --section SchedulerStats \
  --section InstructionStats "$HERE/bin/gpu_bench" "$@" > "$OUT/ncu_$TAG.txt" 2>&1
echo "ncu sections ($TAG): exit $?"
M=""
for r in barrier long_scoreboard short_scoreboard mio_throttle math_pipe_throttle wait not_selected \
  selected dispatch_stall lg_throttle no_instruction branch_resolving membar sleeping; do
  M="$M,smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio"
done
M="${M#,},sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum"
timeout 120 "$NCU" --clock-control none --kernel-name "regex:$RE" --launch-skip 1 --launch-count 1 \
  --metrics "$M" "$HERE/bin/gpu_bench" "$@" > "$OUT/ncu_${TAG}_stalls.txt" 2>&1
echo "ncu metrics ($TAG): exit $?"
# metrics whose names differ between ncu versions: a separate call, so a missing one loses only these
timeout 120 "$NCU" --clock-control none --kernel-name "regex:$RE" --launch-skip 1 --launch-count 1 \
  --metrics sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum \
  "$HERE/bin/gpu_bench" "$@" >> "$OUT/ncu_${TAG}_stalls.txt" 2>&1
echo "ncu extra metrics ($TAG): exit $?"
grep -E "stalled|pipe_tensor|bank_conflicts|inst_executed|ERROR|not found" "$OUT/ncu_${TAG}_stalls.txt" | sed 's/  */ /g'
grep -E "Duration|Compute \(SM\) Throughput|Registers Per|Achieved Occupancy|Block Limit (Registers|Shared)|Issue Slots Busy|Eligible Warps|Executed Ipc Active|L2 Hit|DRAM Throughput|Dynamic Shared" "$OUT/ncu_$TAG.txt" | sed 's/  */ /g'
