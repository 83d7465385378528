// Package config reads, edits and writes the datastore config file, in the
// section format of PBS's /etc/proxmox-backup/datastore.cfg, so that a PBS
// config reads as is. It knows the file's syntax and the rules of a
// datastore entry (its name and path); the tuning string of an entry is
// parsed by package tuning.
//
// # Format
//
// The file ([DefaultPath], /etc/chunkgc/datastore.cfg) is a list of
// sections:
//
//	datastore: store1
//		comment main pool
//		gc-schedule daily
//		path /mnt/datastore/store1
//		tuning gc-atime-safety-check=1,gc-atime-cutoff=1445
//
// "type: name" opens a section; its property lines start with white space
// (PBS writes a tab) and hold "key value", the value being the rest of the
// line; a blank line ends the section; lines starting with '#' are comments.
// chunkgc uses the path, tuning and comment of datastore sections
// ([Datastore]); other properties (gc-schedule, prune-schedule, keep-*,
// notification-mode, maintenance-mode, …) and sections of other types are
// kept verbatim and ignored.
//
// # Datastore entries
//
// A datastore name is checked as PBS checks it ([ValidateStoreName], errors
// match [ErrInvalidStoreName]); a store's base path must be absolute without
// "." or ".." components ([CheckStorePath]). The tuning string is parsed
// only when the store is used ([tuning.Parse]), so a bad one does not make
// the other stores unusable; [Datastore.Validate] checks all of it before an
// entry is written.
//
// # Editing
//
// A [File] keeps every line as read: [File.Bytes] of an unmodified file is
// the input byte for byte, and [File.SetDatastore] rewrites only the lines
// of the properties it changes, keeping the section's position, comments and
// other properties; a new section is appended with its properties sorted by
// key, as PBS writes them.
//
// # S3 datastores (PBS 4.2)
//
// A datastore's backend property ("type=s3,client=ID,bucket=B
// [,max-cache-size=SIZE]") is parsed by [Datastore.ParseBackend]; its path
// is then only a local cache. The client id names an s3-endpoint section of
// PBS's /etc/proxmox-backup/s3.cfg ([DefaultS3Path]), read by [ReadS3] into
// [S3Endpoint] values with the same section parser:
//
//	s3-endpoint: ceph-rgw
//		access-key rgwuser
//		endpoint {{bucket}}.rgw.{{region}}.example.lan
//		fingerprint 0a:1b:…:f9
//		path-style false
//		port 7480
//		provider-quirks skip-if-none-match-header
//		region eu-1
//		secret-key …
//
// The endpoint is a host template ([S3Endpoint.Host] substitutes
// {{bucket}} and {{region}} and appends the port); the region defaults to
// us-west-1 ([DefaultS3Region]); the fingerprint pins the server's leaf
// certificate; provider-quirks is an array, one line per item as PBS writes
// it. PBS's rate limits (put-rate-limit, rate-in, burst-in, rate-out,
// burst-out) are checked and kept in [S3Endpoint.RateLimits] but not
// applied: a GC sends one LIST per 1,000 objects and one POST per 100
// deletions and moves no chunk data, so there is nothing for them to
// throttle. Unknown properties are ignored, so a newer PBS's s3.cfg still
// reads. chunkgc never writes s3.cfg.
//
// # Reading and writing
//
// [Read] treats a missing file as an empty config and refuses anything but
// a regular file (a FIFO is an error, never a hang); syntax errors are a
// [*ParseError] naming file and line. [File.WriteFile] replaces the file
// through the one atomic writer, internal/atomicfile (temporary file in the
// same directory, chmod 0640, chown to the given [fsys.Owner] when it is
// active, fsync, rename, fsync of the directory). A symlinked config (PBS's
// /etc/proxmox-backup may be one) is resolved first: the file it points to
// is replaced and the link stays.
package config
