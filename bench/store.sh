# Sourced by bench/run.sh and bench/usage.sh: the perf fixture, a store of N
# chunks referenced once each from M fixed indexes on a loop-mounted image
# in $WORK (FS=ext4, the default, or FS=xfs), built once (bench/genstore)
# and mounted at $mnt until the sourcing script exits. Sourcing it sets the
# defaults N=1000000 M=100 WORK=/var/tmp/chunkgc-bench and builds chunkgc
# into $WORK.
N=${N:-1000000}
M=${M:-100}
WORK=${WORK:-/var/tmp/chunkgc-bench}
mkdir -p "$WORK"
go build -o "$WORK/chunkgc" ./cmd/chunkgc

mount_fixture() {
	go build -o "$WORK/genstore" ./bench/genstore
	FS=${FS:-ext4}
	suffix=
	[ "$FS" = ext4 ] || suffix="-$FS"
	img="$WORK/store-$N$suffix.img"
	mnt="$WORK/mnt-$N$suffix"
	mkdir -p "$mnt"
	if ! mountpoint -q "$mnt"; then
		if [ ! -f "$img" ]; then
			case "$FS" in
			ext4)
				# Small blobs live inline in the inode: the fixture costs inodes, not blocks.
				truncate -s $(( N * 512 + (1 << 30) )) "$img"
				mkfs.ext4 -q -F -N $((N + 131072)) -I 256 -O inline_data "$img"
				;;
			xfs)
				# No inline data on xfs: a block per chunk, inodes allocated as needed.
				truncate -s $(( N * 4096 * 3 / 2 + (2 << 30) )) "$img"
				mkfs.xfs -q -f "$img"
				;;
			*) echo "FS=$FS: want ext4 or xfs" >&2; exit 2 ;;
			esac
			mount -o loop "$img" "$mnt"
			"$WORK/genstore" -chunks "$N" -indexes "$M" -garbage 0 -size 40 "$mnt/store"
		else
			mount -o loop "$img" "$mnt"
		fi
	fi
	trap 'umount "$mnt" || umount -l "$mnt"' EXIT
}
