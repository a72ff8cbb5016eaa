package journal

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile replaces the file at path with what write produces, so that
// after a crash path holds either the old content or all of the new:
// written to a temporary file in the same directory, synced, renamed
// over path, and the directory synced. On error path is untouched and
// the temporary file removed.
func WriteFile(path string, mode os.FileMode, write func(w *bufio.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	w := bufio.NewWriterSize(tmp, 256<<10)
	if err := write(w); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

// Compact folds the journal into a new snapshot: it sets the journal
// aside at its path + ".old", writes the snapshot (WriteFile with write,
// called once the journal is set aside), and only then removes the
// set-aside file. A set-aside journal left by an earlier failed attempt is
// kept and the snapshot simply covers it, so a failure at any step loses
// nothing as long as loading replays the snapshot, the set-aside journal
// and the journal, in that order, and each record holds the whole state
// of what it names (replaying an older record over a newer snapshot is
// then undone by the newer records after it).
func (j *Journal) Compact(snapshot string, mode os.FileMode, write func(w *bufio.Writer) error) error {
	old := j.path + ".old"
	switch _, err := os.Lstat(old); {
	case errors.Is(err, os.ErrNotExist):
		if err := j.Rotate(old); err != nil {
			return fmt.Errorf("compact %s: %w", j.path, err)
		}
	case err != nil:
		return fmt.Errorf("compact %s: %w", j.path, err)
	}
	if err := WriteFile(snapshot, mode, write); err != nil {
		return fmt.Errorf("compact %s: %w", j.path, err)
	}
	if err := os.Remove(old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("compact %s: %w", j.path, err)
	}
	return nil
}
