#!/usr/bin/env bash
# Runs chunkgc over the latency harness (bench/latfs: loopback FUSE, a fixed
# delay per request, no kernel caching) on a loop-mounted ext4 and prints
# medians, ratios and FUSE requests per referenced chunk and per prefix dir
# (README "Latency benchmark"). Root and /dev/fuse.
#
#   sudo bench/latency.sh                        # 200us and 1ms, 3 runs, sequential once
#   DELAYS=1ms RUNS=5 RUNS_SEQ=3 bench/latency.sh
#   REFS=20000 INDEXES=20 GARBAGE=2000 SWEEP=8,16,32,64 WORK=/var/tmp/x bench/latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DELAYS=${DELAYS:-200us,1ms}
RUNS=${RUNS:-3}
RUNS_SEQ=${RUNS_SEQ:-1}
REFS=${REFS:-20000}
INDEXES=${INDEXES:-20}
GARBAGE=${GARBAGE:-2000}
SWEEP=${SWEEP:-8,16,32,64}
WORK=${WORK:-/var/tmp/chunkgc-latency}
mkdir -p "$WORK/bin" "$WORK/locks"
for t in cmd/chunkgc bench/floor bench/genstore bench/latency; do
	go build -o "$WORK/bin/$(basename $t)" "./$t"
done
chunks=$((REFS + GARBAGE))
img="$WORK/disk-$chunks.img"
disk="$WORK/disk-$chunks"
lat="$WORK/lat"
mkdir -p "$disk" "$lat"
if ! mountpoint -q "$disk"; then
	if [ ! -f "$img" ]; then
		# Two stores of 65,536 prefix dirs each; small blobs and empty dirs
		# live inline in the inode.
		truncate -s $(( chunks * 4096 + (2 << 30) )) "$img"
		mkfs.ext4 -q -F -N $((chunks + 2 * 65536 + 65536)) -I 256 -O inline_data "$img"
	fi
	mount -o loop "$img" "$disk"
fi
cleanup() {
	mountpoint -q "$lat" && umount -l "$lat"
	umount "$disk" || umount -l "$disk"
}
trap cleanup EXIT
"$WORK/bin/latency" -dir "$disk" -mnt "$lat" -bin "$WORK/bin/chunkgc" -floor "$WORK/bin/floor" \
	-genstore "$WORK/bin/genstore" -lock-dir "$WORK/locks" -delays "$DELAYS" -runs "$RUNS" \
	-runs-seq "$RUNS_SEQ" -sweep "$SWEEP" -chunks "$chunks" -indexes "$INDEXES" -garbage "$GARBAGE" "$@"
