package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
)

// Writer appends the records of one run to its journal. Add is safe for
// concurrent use; Close and Abort end it.
//
// Records are buffered under a mutex (the only work Add does in the steady
// state is to copy 56 bytes); a frame is compressed and written by the Add
// that fills the buffer, or by the flush timer, outside that mutex while
// other Adds fill a second buffer. Frames are taken and written in order
// under a second mutex, so the records of one goroutine reach the file in
// the order it added them.
type Writer struct {
	sys   fsys.Syscalls
	fd    int // the journal, write-only
	dirfd int // the journal's directory, our own fd of it, for the fsync at Close
	path  string

	full     int // bytes of cur that make a frame
	interval time.Duration
	timer    *time.Timer // flushes the frame interval after its first record

	mu      sync.Mutex
	cond    sync.Cond // on mu: cur is no longer full, or the Writer failed or is closing
	cur     []byte    // raw records not yet taken for a frame
	spare   []byte    // the other buffer, nil while a frame is written from it
	err     error     // the first write error; sticky
	closing bool      // Close or Abort began; no more Adds or flushes
	added   int64
	flushes sync.WaitGroup // the flushes started under mu before closing

	wmu sync.Mutex    // serialises taking cur and writing frames
	enc *zstd.Encoder // under wmu
	out []byte        // under wmu: the frame being written
}

// options are the Writer's tunables, for tests.
type options struct {
	flushRecords  int
	flushInterval time.Duration
}

var defaultOptions = options{flushRecords: flushRecords, flushInterval: flushInterval}

// Create makes the journal <RunID>.journal of the run h describes in the
// directory open as dirfd (dirPath is its path, for errors), writes its
// magic and header, and returns a Writer for its records.
//
// The file is created with O_CREAT|O_EXCL|O_NOFOLLOW through sys, so an
// existing file or a symlink in its place fails with EEXIST; it gets mode
// 0640 whatever the umask, and is chowned to owner when that is
// [fsys.Owner.Active]. Create keeps its own fd of the directory (dirfd may
// be closed once Create returns). An invalid RunID fails with
// [ErrBadRunID]; other errors are *fs.PathError naming the file.
func Create(sys fsys.Syscalls, dirfd int, dirPath string, h Header, owner fsys.Owner) (*Writer, error) {
	return create(sys, dirfd, dirPath, h, owner, defaultOptions)
}

func create(sys fsys.Syscalls, dirfd int, dirPath string, h Header, owner fsys.Owner, o options) (*Writer, error) {
	sys = fsys.OrReal(sys)
	if !ValidRunID(h.RunID) {
		return nil, fmt.Errorf("create journal in %s: %q: %w", dirPath, h.RunID, ErrBadRunID)
	}
	name := FileName(h.RunID)
	path := dirPath + "/" + name
	hdr, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("create journal %s: %w", path, err)
	}
	if len(hdr) > maxJSON {
		return nil, &fs.PathError{Op: "create journal", Path: path, Err: unix.E2BIG}
	}
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false), // the frame's CRC-32C covers it
		zstd.WithWindowSize(1<<17))
	if err != nil {
		return nil, fmt.Errorf("create journal %s: %w", path, err)
	}
	ownDir, err := sys.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		enc.Close()
		return nil, fsys.WithPath(err, dirPath)
	}
	fd, err := sys.Openat(ownDir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o640)
	if err != nil {
		enc.Close()
		unix.Close(ownDir)
		return nil, fsys.WithPath(err, path)
	}
	w := &Writer{
		sys: sys, fd: fd, dirfd: ownDir, path: path,
		full:     o.flushRecords * recordSize,
		interval: o.flushInterval,
		enc:      enc,
	}
	w.cond.L = &w.mu
	fail := func(err error) (*Writer, error) {
		unix.Close(fd)
		// O_EXCL made the file ours; a half-made journal would read as a
		// bad header.
		unlinkErr := sys.Unlinkat(ownDir, name, 0)
		unix.Close(ownDir)
		enc.Close()
		return nil, errors.Join(fsys.WithPath(err, path), fsys.WithPath(unlinkErr, path))
	}
	if err := sys.Fchmod(fd, 0o640); err != nil { // the umask may have taken bits away
		return fail(err)
	}
	if err := owner.Fchown(sys, fd); err != nil {
		return fail(err)
	}
	w.out = make([]byte, 0, frameHeaderSize+maxRecordsPayload/8)
	w.out = append(w.out, magic...)
	w.out = appendFrame(w.out, kindHeader, hdr)
	if err := fsys.WriteAll(sys, fd, w.out); err != nil {
		return fail(err)
	}
	w.cur = make([]byte, 0, w.full)
	w.spare = make([]byte, 0, w.full)
	w.timer = time.AfterFunc(time.Hour, w.tick)
	w.timer.Stop()
	return w, nil
}

// appendFrame appends a frame of kind with an uncompressed payload to b.
func appendFrame(b []byte, kind byte, payload []byte) []byte {
	n := len(b)
	b = append(b, make([]byte, frameHeaderSize)...)
	b = append(b, payload...)
	putFrameHeader(b[n:], kind, b[n+frameHeaderSize:], len(payload))
	return b
}

// Path returns the journal's path.
func (w *Writer) Path() string { return w.path }

// Added returns how many records Add has taken.
func (w *Writer) Added() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.added
}

// Add appends r to the journal. It is safe for concurrent use and does not
// allocate. It returns the error of writing the frame it completed, or of
// an earlier failed write (the Writer writes nothing after one, so the file
// stays a readable prefix), and [ErrClosed] after Close or Abort.
func (w *Writer) Add(r Record) error {
	w.mu.Lock()
	for len(w.cur) >= w.full && w.err == nil && !w.closing {
		w.cond.Wait() // both buffers full: wait for the frame being written
	}
	if w.err != nil || w.closing {
		err := w.err
		w.mu.Unlock()
		if err == nil {
			err = &fs.PathError{Op: "add", Path: w.path, Err: ErrClosed}
		}
		return err
	}
	n := len(w.cur)
	if n == 0 {
		w.timer.Reset(w.interval)
	}
	w.cur = w.cur[:n+recordSize]
	putRecord(w.cur[n:], &r)
	w.added++
	flush := len(w.cur) >= w.full
	if flush {
		w.flushes.Add(1)
	}
	w.mu.Unlock()
	if flush {
		return w.flush(false)
	}
	return nil
}

// tick is the flush timer's function.
func (w *Writer) tick() {
	w.mu.Lock()
	if w.closing || len(w.cur) == 0 {
		w.mu.Unlock()
		return
	}
	w.flushes.Add(1)
	w.mu.Unlock()
	w.flush(true) // an error is kept for the next Add and Close
}

// flush writes the buffered records as a frame: if they fill a frame, or
// any when force is set. It returns the error of that write, or of an
// earlier one. The caller did w.flushes.Add(1) under w.mu.
func (w *Writer) flush(force bool) error {
	defer w.flushes.Done()
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.mu.Lock()
	if w.err != nil || len(w.cur) == 0 || !force && len(w.cur) < w.full {
		err := w.err
		w.mu.Unlock()
		return err
	}
	b := w.cur
	w.cur, w.spare = w.spare, nil
	w.cond.Broadcast()
	w.mu.Unlock()

	err := w.writeRecords(b)

	w.mu.Lock()
	w.spare = b[:0]
	if err != nil && w.err == nil {
		w.err = err
		w.cond.Broadcast()
	}
	w.mu.Unlock()
	return err
}

// writeRecords compresses raw records into a frame and writes it with one
// write(2). The caller holds w.wmu, or is the last user of the Writer.
func (w *Writer) writeRecords(raw []byte) error {
	out := w.out[:frameHeaderSize]
	out = w.enc.EncodeAll(raw, out)
	putFrameHeader(out, kindRecords, out[frameHeaderSize:], len(raw))
	w.out = out
	return fsys.WithPath(fsys.WriteAll(w.sys, w.fd, out), w.path)
}

// Close writes the buffered records and the trailer t, fsyncs the journal
// and its directory and closes it: the journal is then complete. It returns
// the error of an earlier failed write (and then writes no trailer, leaving
// an incomplete journal), and [ErrClosed] when the Writer is already
// closed or aborted.
func (w *Writer) Close(t Trailer) error {
	if !w.finish() {
		return &fs.PathError{Op: "close", Path: w.path, Err: ErrClosed}
	}
	err := w.err
	if err == nil && len(w.cur) > 0 {
		err = w.writeRecords(w.cur)
	}
	if err == nil {
		t.Err = cutErr(t.Err)
		tr, jerr := json.Marshal(t)
		if jerr != nil {
			err = fmt.Errorf("journal %s: trailer: %w", w.path, jerr)
		} else {
			err = fsys.WithPath(fsys.WriteAll(w.sys, w.fd, appendFrame(w.out[:0], kindTrailer, tr)), w.path)
		}
	}
	return w.release(err)
}

// Abort writes the buffered records, fsyncs and closes the journal without
// a trailer, leaving a readable incomplete journal. It returns the error of
// an earlier failed write, if any. It is idempotent, and does nothing
// after Close.
func (w *Writer) Abort() error {
	if !w.finish() {
		return nil
	}
	err := w.err
	if err == nil && len(w.cur) > 0 {
		err = w.writeRecords(w.cur)
	}
	return w.release(err)
}

// finish stops Adds, the timer and the flushes, and reports whether this
// call did (false: the Writer was closed already).
func (w *Writer) finish() bool {
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		return false
	}
	w.closing = true
	w.cond.Broadcast()
	w.mu.Unlock()
	w.timer.Stop()
	w.flushes.Wait() // a tick past its check of closing is counted here
	return true
}

// release fsyncs (unless err is set already) and closes the journal and
// its directory, and joins the errors.
func (w *Writer) release(err error) error {
	if err == nil {
		err = fsys.WithPath(w.sys.Fsync(w.fd), w.path)
	}
	if cerr := unix.Close(w.fd); cerr != nil && err == nil {
		err = &fs.PathError{Op: "close", Path: w.path, Err: cerr}
	}
	if err == nil {
		err = fsys.WithPath(w.sys.Fsync(w.dirfd), dirOf(w.path))
	}
	unix.Close(w.dirfd)
	w.enc.Close()
	w.mu.Lock()
	w.cur, w.spare, w.out = nil, nil, nil // under mu: Add still looks at cur
	w.mu.Unlock()
	return err
}

// dirOf returns the directory part of path, which Create made as dir+"/"+name.
func dirOf(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			return path[:i]
		}
	}
	return "."
}

// cutErr returns s cut to MaxErrLen bytes at a rune boundary.
func cutErr(s string) string {
	if len(s) <= MaxErrLen {
		return s
	}
	const ell = "…"
	n := MaxErrLen - len(ell)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + ell
}
