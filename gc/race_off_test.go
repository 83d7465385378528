//go:build !race

package gc

// raceEnabled: the race detector makes sync.Pool drop a random quarter of
// what is put back, which turns allocation counts into noise.
const raceEnabled = false
