package ng

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"sipxdp/internal/guard"
)

const (
	// cacheTTL is how long a reply is kept for a retransmitted cookie.
	cacheTTL = 30 * time.Second
	// cacheMax bounds the reply cache; the oldest entries go first.
	cacheMax = 10000
	// udpWorkers bounds the commands a UDP server runs at once.
	udpWorkers = 16
	// tcpWriteTimeout bounds writing one reply on a TCP connection.
	tcpWriteTimeout = 10 * time.Second

	// DefaultMaxConns caps NG connections over TCP when Options leaves
	// it 0: a proxy opens one per worker, a few dozen at most.
	DefaultMaxConns = 64
	// DefaultIdleTimeout closes a TCP connection that has sent nothing
	// for this long when Options leaves it 0. A proxy's module opens a
	// new one when it next needs it.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultMessageTimeout bounds the time from a message's first byte
	// to its last on TCP when Options leaves it 0: a client that starts a
	// command and stalls loses the connection.
	DefaultMessageTimeout = 10 * time.Second
)

// Options are a Server's limits. The zero value admits every source and
// uses the Default limits.
type Options struct {
	// Log receives debug lines per command; nil: no logging.
	Log *slog.Logger
	// Allow lists the sources served, over UDP and TCP; others are
	// dropped without a reply and counted. nil admits every source.
	Allow []netip.Prefix
	// MaxConns caps TCP connections at once (0: DefaultMaxConns); more
	// are closed at accept and counted.
	MaxConns int
	// IdleTimeout closes a TCP connection silent between messages this
	// long (0: DefaultIdleTimeout).
	IdleTimeout time.Duration
	// MessageTimeout bounds receiving one message on TCP, from its first
	// byte (0: DefaultMessageTimeout).
	MessageTimeout time.Duration
	// Observe, when set, is told of every command executed (not the
	// replies the cache sends again): its name as counted (see Commands),
	// whether the reply was an error (or a load-limit refusal), and how
	// long it took. It runs on the command's goroutine and must be
	// quick; sipd feeds a histogram.
	Observe func(command string, failed bool, d time.Duration)
	// Statistics, when set, reports the media engine's sessions and
	// counters for the statistics command; nil reports them as 0.
	Statistics func() EngineStats
}

// commandNames are the commands counted by name; any other counts as
// "unknown".
var commandNames = []string{"ping", "offer", "answer", "delete", "query", "list", "statistics"}

// Server answers NG commands, handing the media work to a Backend. Its
// methods are safe for concurrent use, and one Server may serve several
// sockets at once (sharing its reply cache and counters).
type Server struct {
	b     Backend
	log   *slog.Logger
	opt   Options
	cache *replyCache

	commands  map[string]*commandCounts // fixed at NewServer; values atomic
	errors    atomic.Uint64             // error replies
	cacheHits atomic.Uint64             // retransmissions answered from the cache
	malformed atomic.Uint64             // bodies that were not a bencoded dictionary
	dropped   atomic.Uint64             // messages without a cookie, or too long: no reply

	refusedSource atomic.Uint64 // UDP messages from sources not allowed (TCP's are in tcp)
	idleClosed    atomic.Uint64 // TCP connections closed for silence
	msgTimeouts   atomic.Uint64 // TCP connections closed mid-message

	tcpMu sync.Mutex
	tcp   []*guard.Listener // the TCP listeners served, for their counters

	started  time.Time     // for the statistics command's uptime
	proxies  proxyStats    // commands per source, for the statistics command
	rejected atomic.Uint64 // offers refused for lack of capacity
}

// NewServer returns a Server for b with the limits of o.
func NewServer(b Backend, o Options) *Server {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MessageTimeout <= 0 {
		o.MessageTimeout = DefaultMessageTimeout
	}
	s := &Server{
		b:        b,
		log:      o.Log,
		opt:      o,
		cache:    newReplyCache(cacheTTL, cacheMax),
		commands: map[string]*commandCounts{"unknown": new(commandCounts)},
		started:  time.Now(),
	}
	for _, c := range commandNames {
		s.commands[c] = new(commandCounts)
	}
	return s
}

// Stats returns the server's counters for metrics: "commands.<name>" for
// ping, offer, answer, delete, query, list, statistics and unknown (commands
// executed: a retransmission answered from the cache is not counted
// again, a malformed body counts as unknown); "errors" (error replies,
// cached ones not counted again); "cache_hits" (retransmissions
// answered from the reply cache); "malformed" (bodies that were not a
// bencoded dictionary); "dropped" (messages without a cookie or longer
// than MaxMessageSize, which get no reply); "refused.source" (UDP
// messages and TCP connections from sources not on the allow list,
// dropped without a reply); "refused.connections" (TCP connections over
// the cap); "accept_errors" (TCP accept errors, retried after a
// backoff); "tcp.idle_closed" and "tcp.message_timeouts" (TCP
// connections closed for silence between messages or for a message not
// completed in time); and the gauges "cache_entries" and
// "tcp.connections".
func (s *Server) Stats() map[string]uint64 {
	m := map[string]uint64{
		"errors":               s.errors.Load(),
		"cache_hits":           s.cacheHits.Load(),
		"malformed":            s.malformed.Load(),
		"dropped":              s.dropped.Load(),
		"cache_entries":        uint64(s.cache.len()),
		"refused.source":       s.refusedSource.Load(),
		"refused.connections":  0,
		"accept_errors":        0,
		"tcp.connections":      0,
		"tcp.idle_closed":      s.idleClosed.Load(),
		"tcp.message_timeouts": s.msgTimeouts.Load(),
	}
	s.tcpMu.Lock()
	for _, l := range s.tcp {
		st := l.Stats()
		m["refused.source"] += st.RefusedSource
		m["refused.connections"] += st.RefusedConns
		m["accept_errors"] += st.AcceptErrors
		m["tcp.connections"] += uint64(max(st.Active, 0))
	}
	s.tcpMu.Unlock()
	for name, c := range s.commands {
		m["commands."+name] = c.ok.Load() + c.failed.Load()
	}
	return m
}

// commandCounts are one command's executions by outcome.
type commandCounts struct{ ok, failed atomic.Uint64 }

// CommandStats are the executions of one command (as in Stats), split by
// whether the reply was an error (a load-limit refusal counts as one).
type CommandStats struct {
	Command    string
	OK, Failed uint64
}

// Commands returns the executions of ping, offer, answer, delete, query,
// list, statistics and unknown (any other command, and malformed bodies), in that
// order, split by outcome: the same counts as Stats' "commands.<name>".
func (s *Server) Commands() []CommandStats {
	out := make([]CommandStats, 0, len(commandNames)+1)
	for _, name := range append(commandNames[:len(commandNames):len(commandNames)], "unknown") {
		c := s.commands[name]
		out = append(out, CommandStats{Command: name, OK: c.ok.Load(), Failed: c.failed.Load()})
	}
	return out
}

// Handle answers one message, "<cookie> <bencoded dictionary>" or
// "<cookie> <JSON object>", from src and returns the reply to send back,
// the cookie and a dictionary in the request's form, or nil when there is nothing to send (no cookie, or longer than
// MaxMessageSize). A message whose cookie and source match one answered
// within the last 30 s gets that reply again without the Backend being
// called; if the first is still being handled, Handle waits for it. The
// returned slice is shared with the cache and must not be modified.
func (s *Server) Handle(msg []byte, src netip.AddrPort) []byte {
	if len(msg) > MaxMessageSize {
		s.dropped.Add(1)
		s.log.Debug("ng: message too long, dropped", "src", src, "len", len(msg))
		return nil
	}
	cookie, body, ok := splitCookie(msg)
	if !ok {
		s.dropped.Add(1)
		s.log.Debug("ng: message without a cookie, dropped", "src", src, "len", len(msg))
		return nil
	}
	e, hit := s.cache.start(cookie+"\x00"+src.String(), time.Now())
	if hit {
		<-e.done
		s.cacheHits.Add(1)
		s.log.Debug("ng: retransmission answered from cache", "src", src, "cookie", cookie)
		return e.reply
	}
	e.reply = s.execute(cookie, body, src)
	close(e.done)
	return e.reply
}

// decodeBody decodes an NG body, a bencoded dictionary or a JSON object.
func decodeBody(body []byte) (map[string]any, error) {
	if isJSON(body) {
		return DecodeJSON(body)
	}
	v, err := Decode(body)
	if err != nil {
		return nil, err
	}
	d, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("not a dictionary")
	}
	return d, nil
}

// execute runs one command and returns the whole reply, cookie included.
func (s *Server) execute(cookie string, body []byte, src netip.AddrPort) []byte {
	start := time.Now()
	reply, command := s.dispatch(body, src)
	// A load-limit refusal is a failed command too: the call was not
	// taken.
	failed := reply["result"] == "error" || reply["result"] == "load limit"
	c := s.commands[command]
	if failed {
		s.errors.Add(1)
		c.failed.Add(1)
	} else {
		c.ok.Add(1)
	}
	if rejects(command, reply) {
		s.rejected.Add(1)
	}
	took := time.Since(start)
	s.proxies.record(src.Addr().Unmap(), command, failed, took)
	if s.opt.Observe != nil {
		s.opt.Observe(command, failed, took)
	}
	// rtpengine answers in the form the request came in.
	encode := Encode
	if isJSON(body) {
		encode = EncodeJSON
	}
	enc, err := encode(reply)
	if err != nil { // cannot happen with the types dispatch builds
		s.log.Error("ng: encoding reply", "err", err)
		enc, _ = encode(errorReply("internal error"))
	}
	out := make([]byte, 0, len(cookie)+1+len(enc))
	out = append(out, cookie...)
	out = append(out, ' ')
	return append(out, enc...)
}

// dispatch runs one command and returns its reply and the name it is
// counted under (a key of s.commands).
func (s *Server) dispatch(body []byte, src netip.AddrPort) (reply map[string]any, command string) {
	command = "unknown"
	d, err := decodeBody(body)
	if err != nil {
		s.malformed.Add(1)
		s.log.Debug("ng: malformed message", "src", src, "err", err)
		return errorReply("malformed message: " + err.Error()), command
	}
	r, ignored, err := ParseRequest(d)
	if _, ok := s.commands[r.Command]; ok {
		command = r.Command
	}
	r.Source = src
	if len(ignored) > 0 {
		s.log.Debug("ng: ignored keys", "command", r.Command, "call-id", r.CallID, "keys", ignored)
	}
	if err != nil {
		s.log.Debug("ng: bad command", "src", src, "command", r.Command, "call-id", r.CallID, "err", err)
		return errorReply(err.Error()), command
	}
	s.log.Debug("ng: command", "src", src, "command", r.Command, "call-id", r.CallID,
		"from-tag", r.FromTag, "to-tag", r.ToTag, "flags", r.Flags)
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("ng: backend panicked", "command", r.Command, "call-id", r.CallID, "panic", p)
			reply = errorReply("internal error")
		}
	}()
	return s.run(r), command
}

func (s *Server) run(r *Request) map[string]any {
	backendErr := func(err error) map[string]any {
		s.log.Debug("ng: command failed", "command", r.Command, "call-id", r.CallID, "err", err)
		return failureReply(r, err)
	}
	switch r.Command {
	case "ping":
		return map[string]any{"result": "pong"}
	case "statistics":
		return s.statisticsReply()
	case "offer", "answer":
		f := s.b.Offer
		if r.Command == "answer" {
			f = s.b.Answer
		}
		sdp, err := f(r)
		if err != nil {
			return backendErr(err)
		}
		rep := okReply()
		if sdp != nil {
			// nil: consumed with no SDP returned (a trickle ICE fragment,
			// as rtpengine answers one).
			rep["sdp"] = sdp
		}
		return rep
	case "delete", "query":
		f := s.b.Delete
		if r.Command == "query" {
			f = s.b.Query
		}
		cs, err := f(r)
		if err != nil {
			return backendErr(err)
		}
		rep := okReply()
		if r.Command == "query" || !cs.Created.IsZero() || len(cs.Tags) > 0 {
			addStats(rep, cs)
		}
		if cs.Warning != "" {
			rep["warning"] = cs.Warning
		}
		return rep
	case "list":
		ids := s.b.List(r.Limit)
		if r.Limit > 0 && len(ids) > r.Limit {
			ids = ids[:r.Limit]
		}
		rep := okReply()
		rep["calls"] = append([]string{}, ids...)
		return rep
	}
	// ParseRequest has already refused any other command.
	return errorReply(fmt.Sprintf("unknown command %q", r.Command))
}

// replyCache keeps replies by cookie and source. Entries all live for
// the same ttl, so insertion order is expiry order and a FIFO list is
// enough.
type replyCache struct {
	mu    sync.Mutex
	ttl   time.Duration
	max   int
	m     map[string]*list.Element // of *cacheEntry
	order *list.List               // oldest first
}

type cacheEntry struct {
	key   string
	at    time.Time
	done  chan struct{} // closed once reply is set
	reply []byte
}

func newReplyCache(ttl time.Duration, max int) *replyCache {
	return &replyCache{ttl: ttl, max: max, m: map[string]*list.Element{}, order: list.New()}
}

// start looks key up; hit says a live entry was found (wait for its done
// before reading its reply). Otherwise a new entry is made, which the
// caller completes by setting reply and closing done.
func (c *replyCache) start(key string, now time.Time) (e *cacheEntry, hit bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for f := c.order.Front(); f != nil; f = c.order.Front() {
		fe := f.Value.(*cacheEntry)
		if now.Sub(fe.at) < c.ttl && c.order.Len() < c.max {
			break
		}
		c.order.Remove(f)
		delete(c.m, fe.key)
	}
	if el, ok := c.m[key]; ok {
		return el.Value.(*cacheEntry), true
	}
	e = &cacheEntry{key: key, at: now, done: make(chan struct{})}
	c.m[key] = c.order.PushBack(e)
	return e, false
}

func (c *replyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// ServeUDP reads NG commands from pc and sends the replies back to their
// sources, running at most 16 commands at once. It returns nil once ctx
// is done (having set pc's read deadline to wake the reader, and having
// waited for the commands under way) or pc is closed, and any other read
// error. It does not close pc.
func (s *Server) ServeUDP(ctx context.Context, pc net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { _ = pc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, udpWorkers)
	buf := make([]byte, MaxMessageSize+1)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		src := addrPort(addr)
		if s.opt.Allow != nil && !guard.Contains(s.opt.Allow, src.Addr()) {
			s.refusedSource.Add(1)
			continue
		}
		if n > MaxMessageSize {
			s.dropped.Add(1)
			continue
		}
		msg := bytes.Clone(buf[:n])
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if reply := s.Handle(msg, src); reply != nil {
				if _, err := pc.WriteTo(reply, addr); err != nil {
					s.log.Debug("ng: sending reply", "dst", addr, "err", err)
				}
			}
		})
	}
}

// ServeTCP accepts connections on ln and answers NG commands on each:
// the same "<cookie> <bencoded dictionary or JSON object>" messages, back to back on
// the stream (whitespace between them is skipped), as rtpengine frames
// them. A connection's commands run one after the other; connections run
// in parallel. A message that cannot be framed gets an error reply when
// it has a cookie and the connection is closed. Connections from sources
// off the allow list, and beyond the cap, are closed at once; a
// connection silent for the idle timeout, or slower than the message
// timeout to complete a message, is closed. Accept errors (such as
// running out of file descriptors) are retried after a backoff: the
// listener never stops on its own. ServeTCP returns nil once ctx is done
// or ln is closed, after closing ln and the connections and waiting for
// them.
func (s *Server) ServeTCP(ctx context.Context, inner net.Listener) error {
	ln := guard.New(inner, guard.Config{Allow: s.opt.Allow, MaxConns: s.opt.MaxConns, Log: s.log})
	s.tcpMu.Lock()
	s.tcp = append(s.tcp, ln)
	s.tcpMu.Unlock()
	var (
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		closed bool
		wg     sync.WaitGroup
	)
	closeAll := func() {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return
		}
		closed = true
		_ = ln.Close()
		for c := range conns {
			_ = c.Close()
		}
	}
	stop := context.AfterFunc(ctx, closeAll)
	defer stop()
	defer wg.Wait()
	defer closeAll()
	for {
		c, err := ln.Accept()
		if err != nil {
			// guard.Listener retries every other error itself.
			return nil
		}
		mu.Lock()
		if closed {
			mu.Unlock()
			_ = c.Close()
			return nil
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				_ = c.Close()
			}()
			s.serveConn(c)
		})
	}
}

// serveConn answers the messages on one TCP connection until it ends,
// sends something that cannot be framed, or runs into a timeout.
func (s *Server) serveConn(c net.Conn) {
	src := addrPort(c.RemoteAddr())
	buf := make([]byte, 0, 4096)
	start := 0             // buf[start:] is unanswered input
	var msgStart time.Time // when the first byte of an unfinished message came
	for {
		for {
			for start < len(buf) && isSpace(buf[start]) {
				start++
			}
			if start == len(buf) {
				break
			}
			n, err := frameLen(buf[start:])
			if errors.Is(err, ErrUnexpectedEOF) {
				break
			}
			if err != nil {
				s.log.Debug("ng: cannot frame TCP message, closing", "src", src, "err", err)
				end := min(len(buf), start+MaxMessageSize)
				if reply := s.Handle(buf[start:end], src); reply != nil {
					s.write(c, reply)
				}
				return
			}
			reply := s.Handle(buf[start:start+n], src)
			start += n
			msgStart = time.Time{}
			if reply != nil && !s.write(c, reply) {
				return
			}
		}
		// Keep the unanswered part at the front and read on.
		buf = buf[:copy(buf, buf[start:])]
		start = 0
		if len(buf) > MaxMessageSize {
			s.dropped.Add(1)
			s.log.Debug("ng: TCP message too long, closing", "src", src)
			return
		}
		if cap(buf)-len(buf) < 1024 {
			buf = append(buf, make([]byte, 4096)...)[:len(buf)]
		}
		// Between messages a connection may idle; once a message has
		// begun it must be finished in time, however it trickles in.
		partial := len(buf) > 0
		switch {
		case !partial:
			msgStart = time.Time{}
			_ = c.SetReadDeadline(time.Now().Add(s.opt.IdleTimeout))
		case msgStart.IsZero():
			msgStart = time.Now()
			_ = c.SetReadDeadline(msgStart.Add(s.opt.MessageTimeout))
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil && n == 0 {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				if partial {
					s.msgTimeouts.Add(1)
				} else {
					s.idleClosed.Add(1)
				}
			}
			return
		}
	}
}

func (s *Server) write(c net.Conn, reply []byte) bool {
	_ = c.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
	if _, err := c.Write(reply); err != nil {
		s.log.Debug("ng: sending TCP reply", "dst", c.RemoteAddr(), "err", err)
		return false
	}
	return true
}

func isSpace(b byte) bool { return b == ' ' || b == '\r' || b == '\n' || b == '\t' }

// frameLen says how long the message at the start of b is: the cookie, a
// space and one bencode value or JSON object. The error wraps ErrUnexpectedEOF when b
// holds only part of one.
func frameLen(b []byte) (int, error) {
	i := bytes.IndexByte(b[:min(len(b), maxCookieLen+1)], ' ')
	switch {
	case i == 0:
		return 0, errors.New("message without a cookie")
	case i < 0 && len(b) > maxCookieLen:
		return 0, errors.New("cookie too long")
	case i < 0:
		return 0, ErrUnexpectedEOF
	}
	var n int
	var err error
	if isJSON(b[i+1:]) {
		n, err = jsonFrameLen(b[i+1:])
	} else {
		_, n, err = decodePrefix(b[i+1:])
	}
	if err != nil {
		return 0, err
	}
	return i + 1 + n, nil
}

// addrPort turns a net.Addr into an AddrPort, IPv4-mapped addresses
// unmapped; the zero AddrPort when it cannot.
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		if a == nil {
			return ap
		}
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
