package sipserver

import (
	"context"
	"log/slog"
	"sync/atomic"
)

// countingHandler counts the messages sipgo could not parse, which it
// reports only by logging them: the count is what an operator watches for
// garbage and attacks; the log lines themselves go out only when sipgo's
// logging is on (debug).
type countingHandler struct {
	next      slog.Handler
	malformed *atomic.Uint64
}

func (h countingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelError || h.next.Enabled(ctx, l)
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError && r.Message == "failed to parse" {
		h.malformed.Add(1)
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{next: h.next.WithAttrs(as), malformed: h.malformed}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{next: h.next.WithGroup(name), malformed: h.malformed}
}
