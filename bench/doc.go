// Package bench holds the performance tooling of chunkgc: a fixture
// generator (genstore), the syscall floor (floor) and a runner that times
// floor, sequential and parallel GC in alternation (compare).
//
// # Ratios
//
// Every figure is reported as a ratio from one run of compare on one
// machine, never as an absolute target: see README "Performance".
package bench
