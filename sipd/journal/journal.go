// Package journal makes appends to a file durable, cheaply: records are
// handed to one committer goroutine, which writes every record waiting at
// that moment with one write and one fdatasync and then releases all
// their waiters at once (group commit). A thousand commits arriving while
// one sync runs cost one more sync, not a thousand.
//
// A record is one line: the caller's bytes (no newline in them) and a
// newline. The file is only ever extended at the last durable offset: a
// failed write or sync is truncated away again, so no torn record is left
// in the middle of the file, and the records of the failed batch stay
// queued. Their waiters get the error; the journal is then degraded: it
// logs once, refuses new commits at once (keeping their records queued
// too, up to a bound), retries in the background, and becomes healthy
// again by itself when a retry succeeds.
//
// Replay reads a journal back, skipping what a crash or a bad disk left:
// an incomplete last record, and any record the caller rejects.
//
// Use:
//
//	j, err := journal.Open(path, journal.Options{Name: "location", Log: log})
//	c := j.Append(rec)   // under whatever lock orders the records
//	err = c.Wait()       // outside it: nil once rec is on disk
//	...
//	j.Rotate(path + ".old") // set the file aside, start an empty one
//	j.Close()
package journal

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Sentinel errors.
var (
	// ErrDegraded is wrapped around the cause when a commit is refused or
	// failed because the journal cannot write.
	ErrDegraded = errors.New("journal cannot write")
	// ErrBacklog: the journal is degraded and its queue is full; the
	// record was dropped.
	ErrBacklog = errors.New("journal backlog full, record dropped")
	ErrClosed  = errors.New("journal closed")
	// ErrRecord: a record is empty or holds a newline.
	ErrRecord = errors.New("journal record empty or with a newline")
	// ErrExists: Rotate's target exists already.
	ErrExists = errors.New("rotate target exists")
	// ErrRotating: another Rotate is under way.
	ErrRotating = errors.New("a rotation is under way")
)

// File is what the journal needs of an open file: os.File with Sync made
// durable for the data written (fdatasync). Tests inject faults through
// Options.Open.
type File interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Truncate(size int64) error
	Sync() error
	Size() (int64, error)
	Close() error
}

// Options tune a journal; the zero value works.
type Options struct {
	// Name labels logs and Stats ("location", "cdr").
	Name string
	Log  *slog.Logger
	// Retry is the interval of background retries while degraded
	// (default 1 s).
	Retry time.Duration
	// MaxPending bounds the bytes kept queued while degraded (default
	// 64 MiB); past it records are dropped and counted.
	MaxPending int
	// Mode of a new file (default 0600).
	Mode os.FileMode
	// Open opens name for writing, creating it (default: the OS file,
	// synced with fdatasync).
	Open func(name string, mode os.FileMode) (File, error)
}

// Stats is a snapshot of a journal's state.
type Stats struct {
	Name     string `json:"name"`
	Degraded bool   `json:"degraded"`
	// Error is the cause while degraded.
	Error string `json:"error,omitempty"`
	// Errors counts failed attempts to write (each retry counts).
	Errors  uint64 `json:"errors"`
	Records uint64 `json:"records"` // made durable
	Syncs   uint64 `json:"syncs"`
	// Dropped counts records lost because the backlog was full.
	Dropped      uint64 `json:"dropped"`
	PendingBytes int    `json:"pending_bytes"`
	Size         int64  `json:"size"` // durable bytes in the current file
}

// Commit is the outcome of one Append, shared by every record of a batch.
type Commit struct {
	done chan struct{}
	err  error
}

// Wait blocks until the record is durable (nil) or its batch failed.
func (c *Commit) Wait() error {
	<-c.done
	return c.err
}

// Done is closed when the outcome is known; Err tells it then.
func (c *Commit) Done() <-chan struct{} { return c.done }

// Err is the outcome once Done is closed.
func (c *Commit) Err() error { return c.err }

// Finished returns a commit whose outcome is known already: for sinks
// that write synchronously, and for tests.
func Finished(err error) *Commit { return failed(err) }

func newCommit() *Commit { return &Commit{done: make(chan struct{})} }

func (c *Commit) finish(err error) {
	c.err = err
	close(c.done)
}

func failed(err error) *Commit {
	c := newCommit()
	c.finish(err)
	return c
}

// maxSpare is the largest batch buffer kept for reuse: a backlog written
// after an outage need not stay allocated.
const maxSpare = 1 << 20

type rotation struct {
	to   string
	done chan error
}

// Journal is an append-only file with a group committer.
type Journal struct {
	path string
	o    Options

	mu      sync.Mutex
	queue   []byte  // records waiting for the committer
	queued  int     // how many
	open    *Commit // the waiters of what is queued; nil when none wait
	rot     *rotation
	closed  bool
	st      Stats
	lastErr error

	kick chan struct{}
	quit chan struct{}
	done chan struct{}

	// The committer's own.
	f     File
	dirty bool // bytes past st.Size may be on disk: truncate before writing
	spare []byte
}

// Open opens (creating) the journal at path and starts its committer. An
// incomplete last record, left by a crash mid-write, is cut off first so
// that new records do not join it; replay path before opening it.
func Open(path string, o Options) (*Journal, error) {
	if o.Retry <= 0 {
		o.Retry = time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 64 << 20
	}
	if o.Mode == 0 {
		o.Mode = 0o600
	}
	if o.Open == nil {
		o.Open = openOS
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Name == "" {
		o.Name = filepath.Base(path)
	}
	f, size, err := openAt(path, o)
	if err != nil {
		return nil, err
	}
	j := &Journal{path: path, o: o, f: f, kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	j.st.Name, j.st.Size = o.Name, size
	go j.run()
	return j, nil
}

// openAt opens path, cuts a torn tail, and makes the file's directory
// entry durable (a synced file whose name is not is lost all the same).
func openAt(path string, o Options) (File, int64, error) {
	f, err := o.Open(path, o.Mode)
	if err != nil {
		return nil, 0, fmt.Errorf("open journal %s: %w", path, err)
	}
	size, err := completeEnd(f)
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open journal %s: %w", path, err)
	}
	return f, size, nil
}

// completeEnd truncates f after its last newline and returns that length.
func completeEnd(f File) (int64, error) {
	size, err := f.Size()
	if err != nil {
		return 0, err
	}
	end := size
	buf := make([]byte, 4096)
	for end > 0 {
		n := int64(len(buf))
		if n > end {
			n = end
		}
		if _, err := f.ReadAt(buf[:n], end-n); err != nil {
			return 0, err
		}
		i := int64(lastNewline(buf[:n]))
		if i >= 0 {
			end = end - n + i + 1
			break
		}
		end -= n
	}
	if end < size {
		if err := f.Truncate(end); err != nil {
			return 0, err
		}
		if err := f.Sync(); err != nil {
			return 0, err
		}
	}
	return end, nil
}

func lastNewline(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			return i
		}
	}
	return -1
}

// Append queues rec (without its newline) and returns its commit. The
// order of Appends is the order in the file. While the journal is
// degraded, the commit has failed already (ErrDegraded), but rec stays
// queued and is written when the disk recovers, unless the backlog is
// full (ErrBacklog: dropped).
func (j *Journal) Append(rec []byte) *Commit {
	if len(rec) == 0 || indexNewline(rec) >= 0 {
		return failed(ErrRecord)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return failed(ErrClosed)
	}
	if j.st.Degraded && len(j.queue)+len(rec)+1 > j.o.MaxPending {
		j.st.Dropped++
		return failed(fmt.Errorf("%w: %w", ErrBacklog, j.lastErr))
	}
	j.queue = append(append(j.queue, rec...), '\n')
	j.queued++
	if j.st.Degraded {
		return failed(fmt.Errorf("%w: %w", ErrDegraded, j.lastErr))
	}
	return j.waiters()
}

// waiters returns the commit of what is queued, creating it and waking
// the committer if nobody waited yet; j.mu is held.
func (j *Journal) waiters() *Commit {
	if j.open == nil {
		j.open = newCommit()
		j.wake()
	}
	return j.open
}

func (j *Journal) wake() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

func indexNewline(b []byte) int {
	for i, c := range b {
		if c == '\n' {
			return i
		}
	}
	return -1
}

// Sync returns when everything appended before it is durable, or with the
// reason it is not.
func (j *Journal) Sync() error {
	j.mu.Lock()
	if err := j.unusable(); err != nil || j.queued == 0 {
		j.mu.Unlock()
		return err
	}
	c := j.waiters()
	j.mu.Unlock()
	return c.Wait()
}

// unusable says why the journal takes no commit now; j.mu is held.
func (j *Journal) unusable() error {
	switch {
	case j.closed:
		return ErrClosed
	case j.st.Degraded:
		return fmt.Errorf("%w: %w", ErrDegraded, j.lastErr)
	}
	return nil
}

// Rotate makes every record appended so far durable, renames the file to
// to (which must not exist) and goes on in a new, empty file at the
// journal's path. On error nothing was renamed.
func (j *Journal) Rotate(to string) error {
	r := &rotation{to: to, done: make(chan error, 1)}
	j.mu.Lock()
	err := j.unusable()
	if err == nil && j.rot != nil {
		err = ErrRotating
	}
	if err != nil {
		j.mu.Unlock()
		return fmt.Errorf("rotate journal: %w", err)
	}
	j.rot = r
	j.wake()
	j.mu.Unlock()
	return <-r.done
}

// Stats returns the journal's state.
func (j *Journal) Stats() Stats {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := j.st
	st.PendingBytes = len(j.queue)
	if st.Degraded && j.lastErr != nil {
		st.Error = j.lastErr.Error()
	}
	return st
}

// Path is the journal's file.
func (j *Journal) Path() string { return j.path }

// Close writes what is queued (one last try when degraded), stops the
// committer and closes the file. Records that could not be written are
// lost; the error says how many.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return ErrClosed
	}
	j.closed = true
	j.mu.Unlock()
	close(j.quit)
	<-j.done
	j.mu.Lock()
	left := j.queued
	j.mu.Unlock()
	err := j.f.Close()
	if left > 0 {
		err = errors.Join(fmt.Errorf("journal %s: %d records not written: %w", j.o.Name, left, j.lastErr), err)
	}
	return err
}

func (j *Journal) run() {
	defer close(j.done)
	var retry *time.Ticker
	var retryC <-chan time.Time
	var since time.Time
	for {
		closing := false
		select {
		case <-j.kick:
			if retryC != nil {
				// Degraded: only the timer retries, so a burst of refused
				// commits does not hammer a failing disk.
				continue
			}
		case <-retryC:
		case <-j.quit:
			closing = true
		}
		err := j.commit()
		switch {
		case err != nil && retry == nil:
			since = time.Now()
			retry = time.NewTicker(j.o.Retry)
			retryC = retry.C
			j.o.Log.Error("journal cannot write; commits are refused until it can, retrying in the background",
				"journal", j.o.Name, "path", j.path, "retry", j.o.Retry, "error", err)
		case err == nil && retry != nil:
			retry.Stop()
			retry, retryC = nil, nil
			st := j.Stats()
			j.o.Log.Info("journal writes again", "journal", j.o.Name, "path", j.path,
				"after", time.Since(since).Round(time.Millisecond), "failed_attempts", st.Errors, "dropped", st.Dropped)
		}
		if closing {
			if retry != nil {
				retry.Stop()
			}
			return
		}
	}
}

// commit writes whatever is queued as one batch and performs a requested
// rotation after it.
func (j *Journal) commit() error {
	j.mu.Lock()
	buf, n, waiters, rot := j.queue, j.queued, j.open, j.rot
	j.queue, j.queued, j.open, j.rot = j.spare[:0], 0, nil, nil
	j.mu.Unlock()
	var err error
	if len(buf) > 0 {
		err = j.write(buf)
	}
	if err != nil {
		j.mu.Lock()
		// The failed batch goes back in front of what came meanwhile, and
		// whoever waits on that is told now rather than at the next retry.
		later, laterWaiters := j.queue, j.open
		j.queue = append(buf, later...)
		j.queued += n
		j.open = nil
		j.spare = nil
		j.st.Degraded = true
		j.st.Errors++
		j.lastErr = err
		j.mu.Unlock()
		e := fmt.Errorf("%w: %w", ErrDegraded, err)
		if waiters != nil {
			waiters.finish(e)
		}
		if laterWaiters != nil {
			laterWaiters.finish(e)
		}
		if rot != nil {
			rot.done <- fmt.Errorf("rotate journal: %w", e)
		}
		return err
	}
	j.mu.Lock()
	if len(buf) > 0 {
		j.st.Records += uint64(n)
		j.st.Syncs++
		j.st.Size += int64(len(buf))
	}
	j.st.Degraded = false
	j.lastErr = nil
	if cap(buf) <= maxSpare {
		j.spare = buf[:0]
	}
	if len(j.queue) > 0 {
		// Records kept while degraded, or queued during this write: go on.
		j.waiters()
	}
	j.mu.Unlock()
	if waiters != nil {
		waiters.finish(nil)
	}
	if rot != nil {
		rot.done <- j.rotate(rot.to)
	}
	return nil
}

// write puts buf at the durable end of the file and syncs it. On failure
// whatever it wrote is cut off again.
func (j *Journal) write(buf []byte) error {
	if j.dirty {
		if err := j.f.Truncate(j.st.Size); err != nil {
			return fmt.Errorf("write journal %s: truncate to %d: %w", j.path, j.st.Size, err)
		}
		j.dirty = false
	}
	_, err := j.f.WriteAt(buf, j.st.Size)
	if err == nil {
		err = j.f.Sync()
	}
	if err != nil {
		j.dirty = true
		// Cut the torn batch now, so a crash while degraded leaves none;
		// if this fails too, the next attempt truncates first.
		if terr := j.f.Truncate(j.st.Size); terr == nil {
			j.dirty = false
		}
		return fmt.Errorf("write journal %s: %w", j.path, err)
	}
	return nil
}

func (j *Journal) rotate(to string) error {
	if _, err := os.Lstat(to); err == nil {
		return fmt.Errorf("rotate journal %s to %s: %w", j.path, to, ErrExists)
	}
	if err := os.Rename(j.path, to); err != nil {
		return fmt.Errorf("rotate journal: %w", err)
	}
	f, size, err := openAt(j.path, j.o)
	if err != nil {
		// Put the old file back: the journal goes on where it was.
		if rerr := os.Rename(to, j.path); rerr != nil {
			return fmt.Errorf("rotate journal: %w (and the old file stays at %s: %w)", err, to, rerr)
		}
		return fmt.Errorf("rotate journal: %w", err)
	}
	old := j.f
	j.mu.Lock()
	j.f, j.st.Size, j.dirty = f, size, false
	j.mu.Unlock()
	old.Close()
	return nil
}

// osFile is an os.File whose Sync is fdatasync: an append needs the data
// and the new length on disk, not the modification time.
type osFile struct{ *os.File }

func openOS(name string, mode os.FileMode) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, mode)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (f osFile) Sync() error {
	rc, err := f.File.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}

func (f osFile) Size() (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// syncDir makes the entries of dir (a file created or renamed) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
