package journal

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
)

// MaxRecord is the longest record Replay hands on; longer lines are
// skipped as bad (no writer here makes them, and they would cost memory).
const MaxRecord = 16 << 20

// ReplayStats says what Replay found.
type ReplayStats struct {
	Records int // handed to fn and accepted
	Bad     int // rejected by fn, or longer than MaxRecord
	// Torn is the length of an incomplete last record (no newline): a
	// crash mid-write. It is not handed to fn.
	Torn int
}

// Replay calls fn for each record of the file at name, in order. A
// missing file has none. A record fn rejects (returns an error) is
// counted and skipped, and so is one longer than MaxRecord: the records
// after it still count. fn must not keep rec.
func Replay(name string, fn func(rec []byte) error) (ReplayStats, error) {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return ReplayStats{}, nil
	}
	if err != nil {
		return ReplayStats{}, fmt.Errorf("replay journal: %w", err)
	}
	defer f.Close()
	st, err := ReplayReader(f, fn)
	if err != nil {
		return st, fmt.Errorf("replay journal %s: %w", name, err)
	}
	return st, nil
}

// ReplayReader is Replay over r.
func ReplayReader(r io.Reader, fn func(rec []byte) error) (ReplayStats, error) {
	var st ReplayStats
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte // a record longer than the reader's buffer, so far
	tooLong := false
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			if !tooLong && len(long)+len(line) <= MaxRecord {
				long = append(long, line...)
			} else {
				tooLong, long = true, long[:0]
			}
			continue
		case errors.Is(err, io.EOF):
			st.Torn = len(long) + len(line)
			if tooLong {
				// The torn record was too long to keep anyway.
				st.Torn = max(st.Torn, MaxRecord+1)
			}
			return st, nil
		case err != nil:
			return st, err
		}
		rec := line[:len(line)-1]
		if len(long) > 0 || tooLong {
			if !tooLong && len(long)+len(rec) > MaxRecord {
				tooLong = true
			}
			long = append(long, rec...)
			rec = long
		}
		switch {
		case tooLong:
			st.Bad++
		case len(rec) == 0:
		case fn(rec) != nil:
			st.Bad++
		default:
			st.Records++
		}
		long, tooLong = long[:0], false
	}
}
