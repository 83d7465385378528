package fsys

import (
	"fmt"
	"os"
	"os/user"
	"strconv"

	"golang.org/x/sys/unix"
)

// Owner is the user and group that own the files and directories a store
// creates (the backup user, 34:34 on Debian). UID -1 leaves ownership alone;
// GID -1 with a UID changes only the user. The zero Owner is root:root.
type Owner struct{ UID, GID int }

// Keep is the Owner that leaves ownership as the process creates it.
var Keep = Owner{UID: -1, GID: -1}

// LookupOwner returns the Owner of the user called name, with the user's
// primary group.
func LookupOwner(name string) (Owner, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return Keep, fmt.Errorf("look up owner %s: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return Keep, fmt.Errorf("look up owner %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return Keep, fmt.Errorf("look up owner %s: gid %q: %w", name, u.Gid, err)
	}
	return Owner{UID: uid, GID: gid}, nil
}

// OwnerOf returns the owner of st.
func OwnerOf(st *unix.Stat_t) Owner { return Owner{UID: int(st.Uid), GID: int(st.Gid)} }

// Active reports whether files created for o are chowned to it: when the
// process runs as root and o.UID >= 0. Another user cannot chown, and its
// files are its own anyway. This is the one euid check of chunkgc.
func (o Owner) Active() bool { return o.UID >= 0 && os.Geteuid() == 0 }

// String returns "uid:gid".
func (o Owner) String() string { return strconv.Itoa(o.UID) + ":" + strconv.Itoa(o.GID) }

// Owns reports whether st is owned by o, for the fields of o that are set.
func (o Owner) Owns(st *unix.Stat_t) bool {
	if o.UID >= 0 && int(st.Uid) != o.UID {
		return false
	}
	return o.GID < 0 || int(st.Gid) == o.GID
}

// Fchown chowns the open file fd to o when o is [Owner.Active], through sys;
// otherwise it does nothing.
func (o Owner) Fchown(sys Syscalls, fd int) error {
	if !o.Active() {
		return nil
	}
	return sys.Fchown(fd, o.UID, o.GID)
}
