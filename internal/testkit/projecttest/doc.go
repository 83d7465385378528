// Package projecttest holds the repository-wide checks: every package has a
// doc comment, imports flow one way (cmd → gc → {datastore, chunkstore,
// locking, index} → blob, tuning a leaf), the binary links only the
// dependencies the README lists, and the systemd units verify.
//
// # Why a package
//
// These checks span packages, so they live in one test-only package instead
// of being copied into each.
package projecttest
