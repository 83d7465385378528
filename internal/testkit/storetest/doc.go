// Package storetest builds the datastores tests run on and holds the
// invariant checks every such test runs when it ends, so that every test is
// also a data-loss test. It also holds the victim tree and the backup-user
// helpers of the attack tests (victim.go).
//
// # Building a store
//
// [Build] lays out a store from a declarative list of items, in order:
//
//	s := storetest.Build(t,
//		storetest.Chunk("kept", storetest.Age(48*time.Hour)),
//		storetest.Chunk("garbage", storetest.Age(48*time.Hour), storetest.Size(4096)),
//		storetest.Missing("lost"),
//		storetest.BadCopy("lost", 0, storetest.Age(72*time.Hour)),
//		storetest.Snapshot("vm/100/2025-01-01T00:00:00Z", "drive-scsi0.img.fidx", "kept", "lost"),
//	)
//	gone := !s.Exists(s.Path("garbage"))
//
// The layout is chunkstore.Create's (base, .chunks, all 65,536 prefix dirs
// unless [Sparse], .lock), written here without importing chunkstore so that
// chunkstore's own tests can build stores too. A chunk is a real blob
// ([blob.Encode]) of data derived from its name (or [Data]); an index is a
// real fixed or dynamic index file (by its suffix). [Age] and [Times] set
// atime and mtime, [Owner] and [OwnedBy] the owner. The returned [Store]
// gives digests, paths and sizes by name, and adds items later ([Store.Add],
// [Store.Snapshot] by digest).
//
// Build always registers [CheckReferencedExcept] and [CheckNoTmp] at
// t.Cleanup. The only escape is to name the referenced chunks a test means
// to lose: [Missing] chunks, and digests passed to [Store.Except].
//
// # Invariants
//
// [CheckReferenced]: every chunk that any index file under the store
// references exists as base/.chunks/XXXX/<digest>, a regular file. GC must
// never remove such a chunk, whatever else goes wrong (SPEC §6.5).
//
// [CheckNoTmp]: no *.tmp_* file is left in .chunks or its prefix dirs: an
// insert either renames its temporary file into place or removes it
// (SPEC §4).
//
// # Thoroughness
//
// CheckReferenced looks further than GC does: it walks every directory under
// base except base/.chunks itself, hidden ones included, opens every file
// named *.fidx or *.didx (following symlinks to files), and reads every
// entry. What GC skips, the check still sees, so an index GC failed to mark
// shows up as missing chunks.
//
// An index that is corrupt ([index.ErrCorrupt]) or vanished while the check
// ran is logged and skipped: a test about corrupt or pruned indexes asserts
// on those itself. Any other error (a directory that cannot be read, an
// index that cannot be opened, a chunk whose existence cannot be decided)
// fails the test, as does a chunk path that exists but is not a regular
// file.
//
// A test that references chunks it never stored, on purpose, names them to
// [CheckReferencedExcept], which logs those and still fails on any other.
//
// # Usage without Build
//
// A store made another way (through the CLI, say) registers the checks
// itself:
//
//	t.Cleanup(func() {
//		storetest.CheckReferenced(t, base)
//		storetest.CheckNoTmp(t, base)
//	})
//
// Both report through t.Errorf, never t.Fatalf, so they may run from
// t.Cleanup and from goroutines other than the test's.
package storetest
