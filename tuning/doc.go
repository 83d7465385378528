// Package tuning holds every safety margin and knob of a chunkgc run
// ([Tuning]) and parses the PBS-style property strings that override them
// ([Props]): the value of a datastore's "tuning" property in the datastore
// config (package config reads the file) and of --tuning. It is a leaf: it
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
//	gc-s3-list-ranges      key ranges                 16          1..16
//
// gc-concurrency, gc-max-clock-skew and gc-s3-list-ranges are chunkgc
// extensions (as are the gc-brake-*, gc-journal-keep, gc-quarantine-hours
// and gc-resume-max-age keys documented on [Tuning]); the others are PBS's. Booleans
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
// the command line. With stored (the config's) and cli parsed into Props:
//
//	t := stored.Merge(cli).Apply(tuning.Defaults())
//
// *Props is a [flag.Value] whose Set merges, so a repeated --tuning flag
// accumulates and the later one wins per key.
package tuning
