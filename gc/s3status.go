package gc

// setStatus fills PBS's figures of st from the sweep's counts as PBS 4.2
// counts an S3 datastore's objects in phase 2 (pbs-datastore's
// garbage_collection_impl and cond_sweep_chunk), every size the listed
// one:
//
//   - removed-chunks, removed-bad, removed-bytes: the deleted objects (bad
//     ones apart; PBS counts a bad key without a local file as a chunk);
//   - pending-chunks, pending-bytes: the objects kept for safety although
//     unused: a local atime before the oldest writer (PBS's pending), and
//     chunkgc's young objects, whose LastModified is after the cutoff
//     (PBS would have deleted them); a bad pending object counts in
//     still-bad instead of pending-chunks, its bytes in pending-bytes;
//   - disk-chunks, disk-bytes: the objects kept in use, bad ones in the
//     bytes only;
//   - a key whose chunk lock was busy, or that names no chunk, in none.
func (c *S3SweepCounts) setStatus(st *Status) {
	st.RemovedChunks, st.RemovedBad, st.RemovedBytes = c.Removed-c.RemovedBad, c.RemovedBad, uint64(c.RemovedBytes)
	st.PendingChunks = c.Pending - c.PendingBad + c.KeptYoung
	st.PendingBytes = uint64(c.PendingBytes + c.KeptYoungBytes)
	st.StillBad = c.PendingBad
	st.DiskChunks = c.Objects - c.Removed - c.Pending - c.KeptYoung - c.Busy - c.KeptBad
	st.DiskBytes = uint64(c.ObjectBytes - c.RemovedBytes - c.PendingBytes - c.KeptYoungBytes - c.BusyBytes)
}
