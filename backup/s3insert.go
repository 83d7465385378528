package backup

import (
	"context"
	"fmt"
	"iter"
	"time"

	"chunkgc/chunkstore"
	"chunkgc/datastore"
	"chunkgc/internal/nofollow"
	"chunkgc/objstore"
)

// namespaceMarker is the object PBS uploads (empty) for a namespace it
// creates in an S3 datastore: <store>/.cnt/<ns path>/.namespace.
const namespaceMarker = ".namespace"

// S3Target makes [Ingest] write an S3 datastore of PBS 4.2: the store is
// its local cache, the chunks go to Bucket as <Store>/.chunks/<p>/<hex>
// ([chunkstore.Store.InsertS3]). NoCache leaves an empty marker instead of
// the cached chunk (PBS's no-cache uploads leave nothing, which is what
// lets PBS's GC delete them).
//
// The metadata goes to <Store>/.cnt/<relative path> as PBS uploads it
// ([Ingest] says when): a new namespace's .namespace marker, a new
// group's owner file, each index file and the manifest.
type S3Target struct {
	Bucket  S3Bucket
	Store   string
	NoCache bool
}

// S3Bucket is what an S3 ingest asks of the bucket; *objstore.Client is
// one.
type S3Bucket interface {
	chunkstore.S3Putter
	// Put uploads data as key, replacing any object of that key.
	Put(ctx context.Context, key string, data []byte) error
	// Delete deletes the objects of keys (a missing key is no error).
	Delete(ctx context.Context, keys []string) error
	// List lists the objects whose keys start with prefix, in key order.
	List(ctx context.Context, prefix string, o objstore.ListOptions) iter.Seq2[objstore.Object, error]
}

// deletePrefix deletes every object below <store>/.cnt/<rel> (rel ends in
// "/"), as PBS's snapshot removal does; nothing without a target.
func (t *S3Target) deletePrefix(ctx context.Context, rel string) error {
	if t == nil {
		return nil
	}
	prefix := objstore.ContentKey(t.Store, rel)
	var keys []string
	for obj, err := range t.Bucket.List(ctx, prefix, objstore.ListOptions{}) {
		if err != nil {
			return fmt.Errorf("list %s: %w", prefix, err)
		}
		keys = append(keys, obj.Key)
	}
	if len(keys) == 0 {
		return nil
	}
	if err := t.Bucket.Delete(ctx, keys); err != nil {
		return fmt.Errorf("delete the objects below %s: %w", prefix, err)
	}
	return nil
}

// deleteOwner deletes the owner object of a removed group g, as PBS does.
func (t *S3Target) deleteOwner(ctx context.Context, g datastore.Group) error {
	if t == nil {
		return nil
	}
	key := objstore.ContentKey(t.Store, g.RelPath()+"/"+ownerName)
	if err := t.Bucket.Delete(ctx, []string{key}); err != nil {
		return fmt.Errorf("group removed, but its owner object %s: %w", key, err)
	}
	return nil
}

// s3CleanupTimeout bounds the deletion of a failed snapshot's uploads,
// which runs also after a cancel.
const s3CleanupTimeout = 30 * time.Second

// s3Namespaces uploads the .namespace marker of every level of the
// group's namespace (empty, without replacing one that is there), as PBS
// creates a namespace, before its directories are made.
func (in *ingest) s3Namespaces(ctx context.Context) error {
	if in.s3 == nil {
		return nil
	}
	for i := 1; i <= len(in.g.NS); i++ {
		key := objstore.ContentKey(in.s3.Store, in.g.NS[:i].RelPath()+"/"+namespaceMarker)
		if _, err := in.s3.Bucket.PutIfAbsent(ctx, key, nil); err != nil {
			return fmt.Errorf("namespace %s: %w", in.g.NS[:i], err)
		}
	}
	return nil
}

// s3Put uploads data as the copy of the file rel (relative to the base)
// of an S3 datastore, replacing it; a file of the snapshot (ofSnapshot) is
// remembered for the cleanup of a failed ingest.
func (in *ingest) s3Put(ctx context.Context, rel string, data []byte, ofSnapshot bool) error {
	if in.s3 == nil {
		return nil
	}
	key := objstore.ContentKey(in.s3.Store, rel)
	if err := in.s3.Bucket.Put(ctx, key, data); err != nil {
		return fmt.Errorf("upload %s: %w", rel, err)
	}
	if ofSnapshot {
		in.uploads = append(in.uploads, key)
	}
	return nil
}

// s3Upload uploads the file name of the snapshot directory open as sfd (at
// dir, rel below the base) as it is on disk, as PBS uploads an index once
// it is closed: after the chunks it references.
func (in *ingest) s3Upload(ctx context.Context, sfd int, dir, rel, name string) error {
	if in.s3 == nil {
		return nil
	}
	b, err := nofollow.ReadFile(sfd, dir, name, objstore.MaxGetSize)
	if err != nil {
		return datastore.Doubt(err)
	}
	return in.s3Put(ctx, rel+"/"+name, b, true)
}

// s3DeleteUploads deletes the objects a failed ingest uploaded for its
// snapshot (PBS's snapshot removal deletes <store>/.cnt/<snapshot>), with
// a bounded context detached from a cancel of ctx.
func (in *ingest) s3DeleteUploads(ctx context.Context) error {
	if in.s3 == nil || len(in.uploads) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s3CleanupTimeout)
	defer cancel()
	if err := in.s3.Bucket.Delete(ctx, in.uploads); err != nil {
		return fmt.Errorf("delete the partial snapshot's uploads: %w", err)
	}
	in.uploads = nil
	return nil
}
