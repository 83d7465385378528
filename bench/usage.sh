#!/usr/bin/env bash
# Peak RSS and wall time of "chunkgc usage" on a generated store of N chunks
# (each referenced once, over M indexes), with the default memory budget and
# with one small enough to spill (README "Who uses the space").
#
#   sudo bench/usage.sh                  # 1,000,000 chunks
#   N=4000000 sudo bench/usage.sh        # 4M chunks
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
M=${M:-100}
SPILL_MIB=${SPILL_MIB:-16}
WORK=${WORK:-/var/tmp/chunkgc-bench}
mkdir -p "$WORK"
go build -o "$WORK/chunkgc" ./cmd/chunkgc
go build -o "$WORK/genstore" ./bench/genstore

img="$WORK/store-$N.img"
mnt="$WORK/mnt-$N"
mkdir -p "$mnt"
if ! mountpoint -q "$mnt"; then
	if [ ! -f "$img" ]; then
		truncate -s $(( N * 512 + (1 << 30) )) "$img"
		mkfs.ext4 -q -F -N $((N + 131072)) -I 256 -O inline_data "$img"
		mount -o loop "$img" "$mnt"
		"$WORK/genstore" -chunks "$N" -indexes "$M" -garbage 0 -size 40 "$mnt/store"
	else
		mount -o loop "$img" "$mnt"
	fi
fi
trap 'umount "$mnt" || umount -l "$mnt"' EXIT
for mib in 256 "$SPILL_MIB"; do
	out=$( { /usr/bin/time -f "%M %e" "$WORK/chunkgc" usage --log-level warn --memory "$mib" --output json "$mnt/store" >"$WORK/usage.json"; } 2>&1 | tail -1)
	read -r rss secs <<<"$out"
	spilled=$(grep -o '"spilled-references":[0-9]*' "$WORK/usage.json" | cut -d: -f2)
	printf 'usage N=%d --memory %d MiB: peak RSS %d MiB, %s s, spilled %s references\n' "$N" "$mib" $((rss / 1024)) "$secs" "$spilled"
done
