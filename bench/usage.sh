#!/usr/bin/env bash
# Peak RSS and wall time of "chunkgc usage" on a generated store of N chunks
# (each referenced once, over M indexes), with the default memory budget and
# with one small enough to spill (README "Who uses the space").
#
#   sudo bench/usage.sh                  # 1,000,000 chunks
#   N=4000000 sudo bench/usage.sh        # 4M chunks
set -euo pipefail
cd "$(dirname "$0")/.."
SPILL_MIB=${SPILL_MIB:-16}
. bench/store.sh
mount_fixture
for mib in 256 "$SPILL_MIB"; do
	out=$( { /usr/bin/time -f "%M %e" "$WORK/chunkgc" usage --log-level warn --memory "$mib" --output json "$mnt/store" >"$WORK/usage.json"; } 2>&1 | tail -1)
	read -r rss secs <<<"$out"
	spilled=$(grep -o '"spilled-references":[0-9]*' "$WORK/usage.json" | cut -d: -f2)
	printf 'usage N=%d --memory %d MiB: peak RSS %d MiB, %s s, spilled %s references\n' "$N" "$mib" $((rss / 1024)) "$secs" "$spilled"
done
