# Sourced by bench/run.sh and bench/usage.sh: the perf fixture, a store of N
# chunks referenced once each from M fixed indexes on a loop-mounted ext4
# image in $WORK, built once (bench/genstore) and mounted at $mnt until the
# sourcing script exits.
mount_fixture() {
	go build -o "$WORK/genstore" ./bench/genstore
	img="$WORK/store-$N.img"
	mnt="$WORK/mnt-$N"
	mkdir -p "$mnt"
	if ! mountpoint -q "$mnt"; then
		if [ ! -f "$img" ]; then
			# Small blobs live inline in the inode: the fixture costs inodes, not blocks.
			truncate -s $(( N * 512 + (1 << 30) )) "$img"
			mkfs.ext4 -q -F -N $((N + 131072)) -I 256 -O inline_data "$img"
			mount -o loop "$img" "$mnt"
			"$WORK/genstore" -chunks "$N" -indexes "$M" -garbage 0 -size 40 "$mnt/store"
		else
			mount -o loop "$img" "$mnt"
		fi
	fi
	trap 'umount "$mnt" || umount -l "$mnt"' EXIT
}
