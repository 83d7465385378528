package objstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// The keys of a PBS 4.2 S3 datastore's objects other than its chunks, all
// below the datastore's name (pbs-datastore's s3.rs and datastore.rs).
const (
	// InUseName is the in-use marker <store>/.in-use (PBS's
	// S3_DATASTORE_IN_USE_MARKER).
	InUseName = ".in-use"
	// ContentPrefix is the prefix of the copies of a datastore's metadata,
	// <store>/.cnt/<relative path> (PBS's S3_CONTENT_PREFIX).
	ContentPrefix = ".cnt"
)

// InUseKey is the key of store's in-use marker.
func InUseKey(store string) string { return store + "/" + InUseName }

// ContentKey is the key of the copy of the file rel (a path relative to
// the datastore's base, such as vm/100/owner or
// ns/a/vm/100/2025-07-14T14:20:02Z/drive-scsi0.img.fidx) of store, as
// PBS's object_key_from_path makes it.
func ContentKey(store, rel string) string { return store + "/" + ContentPrefix + "/" + rel }

// InUse is the content of an in-use marker: PBS writes the JSON object
// {"hostname":"<nodename>"} (serde, no spaces) with replace when it
// creates an S3 datastore, and refuses to create one over any marker
// unless overwrite-in-use is set.
type InUse struct {
	// Hostname is the node name of the host that created the datastore;
	// "" when the marker has none (PBS then says only "in use").
	Hostname string `json:"hostname,omitempty"`
}

// Marshal is the marker's content exactly as PBS writes it.
func (m InUse) Marshal() []byte {
	b, _ := json.Marshal(m) // a struct of one string cannot fail
	return b
}

// ParseInUse parses an in-use marker's content. Content that is not a
// JSON object is an error; PBS takes it (and one without a hostname) to
// mean "in use by an unknown host".
func ParseInUse(b []byte) (InUse, error) {
	var m InUse
	if err := json.Unmarshal(b, &m); err != nil {
		return InUse{}, fmt.Errorf("not an in-use marker: %w", err)
	}
	return m, nil
}

// Nodename is this host's name as PBS writes it into an in-use marker
// (proxmox_sys::nodename): the kernel's UTS node name up to its first dot.
func Nodename() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	n := unix.ByteSliceToString(u.Nodename[:])
	n, _, _ = strings.Cut(n, ".")
	if n == "" {
		return "", errors.New("uname: empty node name")
	}
	return n, nil
}
