// Package cdrstream copies CDRs to a Redis stream (XADD with MAXLEN ~),
// beside the CDR file: consumers on other hosts read every node's calls
// from one place (XREAD, consumer groups).
//
// The stream is a copy, not the record of truth: a call never waits for
// it. Add queues the line and returns; a writer sends queued lines in
// batches. While Redis cannot be reached the lines wait in the queue,
// tried again each second, and are sent when it is back; beyond
// QueueLen waiting lines, new ones are dropped and counted. The file
// keeps every CDR either way.
package cdrstream

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"sipxdp/sipd/redisconn"
)

// Defaults for Options' zero fields.
const (
	DefaultKey    = "sipxdp:cdr"
	DefaultMaxLen = 1000000
	QueueLen      = 10000
	batch         = 128
)

// Field is the stream entry's field holding the CDR's JSON.
const Field = "cdr"

// Options name the stream and bound it; zero fields take the defaults.
type Options struct {
	Key    string
	MaxLen int64 // XADD MAXLEN ~: Redis trims to about this many entries
	Log    *slog.Logger
}

// Stream is a CDR stream in Redis.
type Stream struct {
	c      *redisconn.Conn
	key    string
	maxLen int64
	q      chan []byte

	written, dropped atomic.Uint64

	stop chan struct{}
	done sync.WaitGroup
}

// Open starts the writer of the stream key at url.
func Open(url string, o Options) (*Stream, error) {
	if o.Key == "" {
		o.Key = DefaultKey
	}
	if o.MaxLen <= 0 {
		o.MaxLen = DefaultMaxLen
	}
	c, err := redisconn.Open(url, "cdr stream", redisconn.Options{Log: o.Log,
		Down: "CDRs wait in memory (up to 10000, then dropped and counted) and go on being written to the CDR file"})
	if err != nil {
		return nil, err
	}
	s := &Stream{c: c, key: o.Key, maxLen: o.MaxLen, q: make(chan []byte, QueueLen), stop: make(chan struct{})}
	s.done.Go(s.run)
	return s, nil
}

// Add queues a CDR line; it never blocks.
func (s *Stream) Add(rec []byte) {
	select {
	case s.q <- rec:
	default:
		s.dropped.Add(1)
	}
}

// Stats are the stream's counters.
type Stats struct {
	Written uint64 `json:"written"` // entries added
	Dropped uint64 `json:"dropped"` // lines dropped: the queue was full, or Redis still down at Close
	Errors  uint64 `json:"errors"`  // writes that failed for want of Redis
	Queued  int    `json:"queued"`
	Down    bool   `json:"down"`
	Why     string `json:"error,omitempty"`
}

// Stats returns the counters.
func (s *Stream) Stats() Stats {
	down, why := s.c.Down()
	return Stats{Written: s.written.Load(), Dropped: s.dropped.Load(), Errors: s.c.Errors(),
		Queued: len(s.q), Down: down, Why: why}
}

// Close sends what is queued, for at most a few seconds, and stops.
func (s *Stream) Close() error {
	close(s.stop)
	s.done.Wait()
	return s.c.Close()
}

func (s *Stream) run() {
	var lines [][]byte
	for {
		if len(lines) == 0 {
			select {
			case l := <-s.q:
				lines = append(lines, l)
			case <-s.stop:
				s.drain(nil)
				return
			}
		}
		lines = s.fill(lines)
		if err := s.send(lines); err != nil {
			select {
			case <-time.After(time.Second):
			case <-s.stop:
				s.drain(lines)
				return
			}
			continue
		}
		lines = lines[:0]
	}
}

// fill adds queued lines to a batch, without waiting.
func (s *Stream) fill(lines [][]byte) [][]byte {
	for len(lines) < batch {
		select {
		case l := <-s.q:
			lines = append(lines, l)
		default:
			return lines
		}
	}
	return lines
}

// drain sends lines and what is queued at Close, for at most 3 s; what
// cannot be sent is counted as dropped.
func (s *Stream) drain(lines [][]byte) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		lines = s.fill(lines)
		if len(lines) == 0 {
			return
		}
		if time.Now().After(deadline) || s.send(lines) != nil {
			s.dropped.Add(uint64(len(lines) + len(s.q)))
			return
		}
		lines = lines[:0]
	}
}

// send adds lines to the stream in one pipeline.
func (s *Stream) send(lines [][]byte) error {
	ctx, cancel, err := s.c.Begin("xadd")
	if err != nil {
		return err
	}
	defer cancel()
	_, err = s.c.C.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, l := range lines {
			p.XAdd(ctx, &redis.XAddArgs{Stream: s.key, MaxLen: s.maxLen, Approx: true, Values: []any{Field, l}})
		}
		return nil
	})
	if err := s.c.Done("xadd", err); err != nil {
		return err
	}
	s.written.Add(uint64(len(lines)))
	return nil
}
