package backup

import "chunkgc/chunkstore"

// S3Target makes [Ingest] write an S3 datastore of PBS 4.2: the store is
// its local cache, the chunks go to Bucket as <Store>/.chunks/<p>/<hex>
// ([chunkstore.Store.InsertS3]). NoCache leaves an empty marker instead of
// the cached chunk (PBS's no-cache uploads leave nothing, which is what
// lets PBS's GC delete them).
type S3Target struct {
	Bucket  chunkstore.S3Putter
	Store   string
	NoCache bool
}
