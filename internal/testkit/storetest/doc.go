// Package storetest holds the datastore invariant checks that every test of
// the project runs when it ends, so that every test is also a data-loss test.
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
// # Usage
//
//	t.Cleanup(func() {
//		storetest.CheckReferenced(t, base)
//		storetest.CheckNoTmp(t, base)
//	})
//
// Both report through t.Errorf, never t.Fatalf, so they may run from
// t.Cleanup and from goroutines other than the test's.
package storetest
