// Package tuning holds every safety margin and knob of a chunkgc run
// ([Tuning]), parses the PBS-style property strings that override them
// ([Props]), and reads and writes the datastore config file ([Config]). It
// imports only the standard library.
//
// # Property strings
//
// A property string is key=value items separated by commas, as in PBS's
// datastore "tuning" option:
//
//	gc-atime-safety-check=0,gc-atime-cutoff=60
//
// The keys ([Keys]) are:
//
//	key                    type                       default     range
//	gc-atime-safety-check  bool                       true
//	gc-atime-cutoff        minutes                    1445        1..2880
//	gc-cache-capacity      entries                    1048576     0..8388608
//	sync-level             none / filesystem / file   filesystem
//	chunk-order            none / inode               inode
//	gc-concurrency         workers, 0 = automatic     0           0..256
//	gc-max-clock-skew      seconds                    30          0..3600
//
// gc-concurrency and gc-max-clock-skew are chunkgc extensions; the others
// are PBS's. Booleans
// accept 1/0, true/false, yes/no and on/off in any case; numbers are decimal
// integers; the names of sync-level and chunk-order are lowercase. White
// space around items, keys and values is ignored and the empty string sets
// nothing. A key given twice takes its last value.
//
// [Parse] returns a [*KeyError] for an unknown key (listing the known ones)
// and for a bad or out-of-range value (naming the range or the allowed
// values), and a [*SyntaxError] for an item that is not key=value. Both
// messages start with "tuning" and name the offending item, e.g.
//
//	tuning gc-atime-cutoff=0: out of range 1..2880 (minutes)
//
// [Props.String] prints the canonical form (true/false, plain decimal),
// which parses back to the same Props.
//
// # Precedence
//
// Per key: [Defaults] < the datastore's tuning in the config < --tuning on
// the command line. With config and cli parsed into Props:
//
//	t := config.Merge(cli).Apply(tuning.Defaults())
//
// *Props is a [flag.Value] whose Set merges, so a repeated --tuning flag
// accumulates and the later one wins per key.
//
// # Configuration file
//
// The config ([DefaultConfigPath], /etc/chunkgc/datastore.cfg) uses PBS's
// section format, so a PBS /etc/proxmox-backup/datastore.cfg reads as is:
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
// kept verbatim and ignored. A datastore name is checked as PBS checks it
// ([ValidateStoreName]); the tuning string is parsed only when the store is
// used, so a bad one does not make the other stores unusable.
//
// [Config] keeps every line as read: [Config.Bytes] of an unmodified config
// is the file byte for byte, and [Config.SetDatastore] rewrites only the
// lines of the properties it changes, keeping the section's position,
// comments and other properties; a new section is appended with its
// properties sorted by key, as PBS writes them.
//
// [ReadConfig] treats a missing file as an empty config; syntax errors are a
// [*ConfigError] naming file and line. [Config.WriteFile] replaces the file
// atomically (temporary file in the same directory, fsync, chmod 0640,
// chown when root, rename, fsync of the directory).
package tuning
