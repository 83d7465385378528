package locking

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// maxLockName is the length from which PBS hashes an escaped lock file name
// (file names are limited to 255 bytes).
const maxLockName = 255

// EscapePath returns s escaped like `systemd-escape --path`: empty and "."
// components and repeated, leading and trailing slashes are dropped, "/"
// becomes "-", a leading "." and every byte outside [A-Za-z0-9:_.] become
// \xNN (lowercase hex), and a path with no components ("", "/") becomes "-".
//
// systemd-escape refuses paths with ".." components and the path "."; for
// them EscapePath still returns a (non-reversible) escaping instead of an
// error: ".." is kept as a component and "." yields "-".
func EscapePath(s string) string {
	var parts []string
	for c := range strings.SplitSeq(s, "/") {
		if c == "" || c == "." {
			continue
		}
		parts = append(parts, c)
	}
	if len(parts) == 0 {
		return "-"
	}
	return escapeUnit(strings.Join(parts, "/"), true)
}

// escapeLockPath is PBS's proxmox_systemd::escape_unit(path, true), which
// LockFileName must match byte for byte. It differs from systemd-escape
// --path in two ways: ":" is escaped (\x3a), and only leading slashes are
// dropped (no collapsing of "//", no dropping of "." or of trailing slashes).
// The relative paths chunkgc builds (type/id[/time]) contain no such
// sequences, so only the ":" of snapshot times makes a difference.
func escapeLockPath(s string) string {
	s = strings.TrimLeft(s, "/")
	if s == "" {
		return "-"
	}
	return escapeUnit(s, false)
}

// escapeUnit maps "/" to "-" and escapes a leading "." and every byte that is
// not [A-Za-z0-9_.] (or ":" when colonOK) as \xNN.
func escapeUnit(s string, colonOK bool) string {
	const hexDigits = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(s) + len(s)/4)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '/':
			b.WriteByte('-')
		case c == '.' && i > 0,
			c == '_',
			c == ':' && colonOK,
			'0' <= c && c <= '9',
			'A' <= c && c <= 'Z',
			'a' <= c && c <= 'z':
			b.WriteByte(c)
		default:
			b.WriteString(`\x`)
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		}
	}
	return b.String()
}

// LockFileName returns the lock file of the group or snapshot at rel ("vm/100"
// or "vm/100/2022-05-02T08:11:33Z") in namespace ns, relative to the lock
// directory, exactly as PBS ≥ 3.4 names it (lock_file_path_helper):
//
//	vm-100
//	vm-100-2022\x2d05\x2d02T08\x3a11\x3a33Z
//	ns1:ns2:ns3:ns4:ns5:ns6:ns7/vm-100-2022\x2d05\x2d02T08\x3a11\x3a33Z
//	ns1:ns2/hashed/<first 80 bytes>...<last 80 bytes>-<sha256 hex of rel>
//
// The namespace components are joined with ":" unescaped (they are
// [A-Za-z0-9_][A-Za-z0-9._-]*); the escaping of rel is PBS's escape_unit,
// which unlike [EscapePath] escapes ":". An escaped name of 255 bytes or more
// is shortened as in the last example, where the hash is of rel unescaped.
func LockFileName(ns []string, rel string) string {
	name := escapeLockPath(rel)
	if len(name) >= maxLockName {
		sum := sha256.Sum256([]byte(rel))
		name = "hashed/" + name[:80] + "..." + name[len(name)-80:] + "-" + hex.EncodeToString(sum[:])
	}
	if len(ns) == 0 {
		return name
	}
	return strings.Join(ns, ":") + "/" + name
}
