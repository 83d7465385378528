#!/usr/bin/env bash
# Benchmarks chunkgc against the syscall floor and a sequential GC on a
# loop-mounted ext4 or xfs (root). Prints medians and ratios (README "Performance").
#
#   sudo bench/run.sh                 # 1,000,000 chunks, 100 indexes, warm and cold
#   N=4000000 sudo bench/run.sh       # the memory check at 4M chunks
#   FS=xfs sudo bench/run.sh          # the same on xfs
#   RUNS=7 WORKERS=16 bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
WORKERS=${WORKERS:-0}
. bench/store.sh
go build -o "$WORK/floor" ./bench/floor
go build -o "$WORK/compare" ./bench/compare
mount_fixture
"$WORK/compare" -store "$mnt/store" -bin "$WORK/chunkgc" -floor "$WORK/floor" -runs "$RUNS" -workers "$WORKERS" -lock-dir "$WORK/locks"
if [ "$(id -u)" = 0 ] && [ "${COLD:-1}" = 1 ]; then
	"$WORK/compare" -cold -store "$mnt/store" -bin "$WORK/chunkgc" -floor "$WORK/floor" -runs "$RUNS" -workers "$WORKERS" -lock-dir "$WORK/locks"
fi
