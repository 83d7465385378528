package datastore

import "strings"

// InScheme reports whether rel, the path of an index file relative to the
// store base with "/" separators (as [WalkIndexFiles] gives it), lies inside
// the namespace/group/snapshot scheme:
//
//	[ns/<a>/[ns/<b>/…]]<type>/<id>/<time>/<name>.fidx|.didx
//
// with at most [MaxNamespaceDepth] namespace levels, valid names, a type of
// vm, ct or host and a canonical snapshot time. It is the scheme as a
// predicate on one path. GC does not call it: GC counts as "outside the
// scheme" (SPEC §6.3) the index files of the full walk that its
// namespace/group/snapshot listings did not reach, and marks them all the
// same. On a store nobody changes during the walk the two agree, which the
// tests assert with InScheme.
func InScheme(rel string) bool {
	parts := strings.Split(rel, "/")
	if len(parts) < 4 {
		return false
	}
	nsParts := parts[:len(parts)-4]
	if len(nsParts)%2 != 0 || len(nsParts)/2 > MaxNamespaceDepth {
		return false
	}
	for i := 0; i < len(nsParts); i += 2 {
		if nsParts[i] != nsDir || !ValidName(nsParts[i+1]) {
			return false
		}
	}
	tail := parts[len(parts)-4:]
	if !validType(tail[0]) || !ValidName(tail[1]) {
		return false
	}
	if _, ok := parseTime(tail[2]); !ok {
		return false
	}
	return isIndexName(tail[3])
}
