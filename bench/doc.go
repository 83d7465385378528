// Package bench holds the performance tooling of chunkgc: a fixture
// generator (genstore), the syscall floor (floor), a runner that times
// floor, sequential and parallel GC in alternation (compare), and the
// latency harness: a loopback FUSE filesystem that delays and counts every
// request (latfs, with its command latfs/cmd/latfs) and the runner that
// times GC over it and counts its requests per chunk and prefix dir
// (latency, driven by latency.sh). None of it is linked into cmd/chunkgc.
//
// # Ratios
//
// Every figure is reported as a ratio from one run of compare on one
// machine, never as an absolute target: see README "Performance".
package bench
