package gc

import (
	"strings"
	"time"

	"chunkgc/blob"
	"chunkgc/chunkstore"
)

// This file is the decision of the S3 sweep (SPEC §12, issue "Object
// storage"): for one listed object of an S3 datastore, what the local cache
// and the listing say, and whether the object may go. It makes no request
// and touches no file; the sweep gathers the evidence under the chunk's
// lock and carries the verdict out.

// s3Key is a listed object key under <store>/.chunks/ that names a chunk or
// a bad copy of one.
type s3Key struct {
	digest blob.Digest
	kind   chunkstore.Kind // KindChunk or KindBad
	name   string          // the file name: <hex> or <hex>.N.bad, also its name in the local prefix dir
}

// parseS3Key parses key, listed under chunksPrefix ("<store>/.chunks/"). It
// accepts exactly <chunksPrefix><4 hex>/<64 lowercase hex>[.N.bad] whose
// prefix dir is the digest's own; any other key is foreign (ok false) and
// never deleted: PBS accepts uppercase hex too, whose local path cannot
// exist, so its sweep would delete such an object unseen.
func parseS3Key(chunksPrefix, key string) (k s3Key, ok bool) {
	rest, found := strings.CutPrefix(key, chunksPrefix)
	if !found {
		return s3Key{}, false
	}
	dir, name, found := strings.Cut(rest, "/")
	if !found || len(dir) != 4 || !strings.HasPrefix(name, dir) {
		return s3Key{}, false
	}
	kind, d := chunkstore.Classify([]byte(name))
	if kind == chunkstore.KindOther {
		return s3Key{}, false
	}
	return s3Key{digest: d, kind: kind, name: name}, true
}

// s3Local is what the local cache holds for a listed object, found under the
// object's chunk lock.
type s3Local uint8

const (
	// localMissing: no file of the object's name, and (for a chunk) no
	// <hex>.using marker.
	localMissing s3Local = iota
	// localFile: a regular file of the object's name: a cached chunk, an
	// empty "evicted, on S3" marker, or a local bad copy.
	localFile
	// localUsing: no file of the chunk's name but a <hex>.using marker:
	// phase 1 found the chunk referenced and not cached.
	localUsing
)

// s3Evidence is what the sweep found for one object.
type s3Evidence struct {
	local        s3Local
	atime        int64     // localFile: the file's atime, Unix seconds
	lastModified time.Time // from the listing; zero when the server gave none
	busy         bool      // the chunk lock was held by another process
}

// s3Verdict is the sweep's decision for one object.
type s3Verdict uint8

const (
	// s3Keep: in use (local atime at or after the writers' start).
	s3Keep s3Verdict = iota
	// s3Pending: the local atime lies between min_atime and the oldest
	// writer's start: kept, counted pending as on the filesystem.
	s3Pending
	// s3KeepBusy: the chunk lock was busy (an upload or verify); kept and
	// decided again by the next run.
	s3KeepBusy
	// s3KeepUsing: referenced but not cached: the .using marker becomes an
	// empty marker (the object exists), as PBS does; kept.
	s3KeepUsing
	// s3KeepYoung: the local evidence says unused, but the object was
	// modified after the cutoff in the server's clock: a fresh upload whose
	// index is not finished (PBS's no-cache path), or a lost or re-created
	// cache. Kept, local state left alone.
	s3KeepYoung
	// s3Delete: both proofs hold: remove the local file (if any) first,
	// then the object.
	s3Delete
)

func (v s3Verdict) String() string {
	switch v {
	case s3Keep:
		return "keep"
	case s3Pending:
		return "pending"
	case s3KeepBusy:
		return "keep (chunk lock busy)"
	case s3KeepUsing:
		return "keep (referenced, .using becomes a marker)"
	case s3KeepYoung:
		return "keep (object younger than the cutoff)"
	case s3Delete:
		return "delete"
	}
	return "unknown verdict"
}

// s3Cutoffs are the run's bounds: minAtime and oldestWriter in the local
// clock (atimes are stamped by the host's cache filesystem), objCutoff in
// the server's (LastModified is stamped by the S3 server).
type s3Cutoffs struct {
	minAtime, oldestWriter int64
	objCutoff              time.Time
}

// decideS3 is the S3 sweep's rule: an object goes only with two independent
// proofs that it is unused — the local evidence (an old atime, or no local
// file and no .using marker) and a LastModified before the cutoff in the
// server's clock. A missing LastModified counts as young. A busy chunk lock
// keeps the object whatever the evidence.
func decideS3(e s3Evidence, c s3Cutoffs) s3Verdict {
	if e.busy {
		return s3KeepBusy
	}
	switch e.local {
	case localUsing:
		return s3KeepUsing
	case localFile:
		switch {
		case e.atime >= c.oldestWriter:
			return s3Keep
		case e.atime >= c.minAtime:
			return s3Pending
		}
	}
	// Local evidence: unused.
	if e.lastModified.IsZero() || !e.lastModified.Before(c.objCutoff) {
		return s3KeepYoung
	}
	return s3Delete
}
