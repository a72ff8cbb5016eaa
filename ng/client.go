package ng

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Client defaults, after Kamailio's rtpengine module (rtpengine_retr 5,
// rtpengine_tout_ms 1000 in
// https://github.com/kamailio/kamailio/blob/master/src/modules/rtpengine/config.c):
// a command is sent up to five times, a second apart, before the relay
// counts as not answering.
const (
	DefaultRetries        = 5
	DefaultRetryInterval  = time.Second
	DefaultMaxOutstanding = 256
)

// ResultLoadLimit is the result on which Kamailio's rtpengine module
// moves on to the next relay of the set, as it does for the error reasons
// ReasonSessionLimit and ReasonOutOfPorts (refusal.go), instead of
// failing the call; see
// https://github.com/kamailio/kamailio/blob/master/src/modules/rtpengine/rtpengine.c.
const ResultLoadLimit = "load limit"

// ErrTimeout is wrapped by a Client's error when the relay did not answer
// any of the command's transmissions, or the context ended first.
var ErrTimeout = errors.New("ng: no reply from relay")

// ErrClosed is returned by a closed Client.
var ErrClosed = errors.New("ng: client closed")

// ReplyError is a reply whose result is not success: "error" with its
// error-reason, or "load limit" with its message.
type ReplyError struct {
	Command string
	Result  string // "error", "load limit", ...
	Reason  string // error-reason, or the load limit's message
}

func (e *ReplyError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("ng %s: relay answered %q", e.Command, e.Result)
	}
	return fmt.Sprintf("ng %s: relay answered %q: %s", e.Command, e.Result, e.Reason)
}

// Overloaded says the relay refused for lack of capacity (load limit, out
// of ports, session limit): the command may succeed on another relay.
func (e *ReplyError) Overloaded() bool {
	return e.Result == ResultLoadLimit || e.Reason == ReasonOutOfPorts || e.Reason == ReasonSessionLimit
}

// IsOverloaded says err is a relay's refusal for lack of capacity.
func IsOverloaded(err error) bool {
	var re *ReplyError
	return errors.As(err, &re) && re.Overloaded()
}

// ClientOptions tune a Client; zero fields take the defaults.
type ClientOptions struct {
	// Retries is how many times a command is sent before giving up.
	Retries int
	// RetryInterval is the wait for a reply after each transmission.
	RetryInterval time.Duration
	// MaxOutstanding caps commands awaiting a reply; more wait for a
	// slot (or their context).
	MaxOutstanding int
}

// Client sends NG commands to one relay over UDP. Replies are matched to
// commands by cookie; a command is retransmitted with the same cookie,
// which the relay's reply cache answers without executing it twice. Its
// methods are safe for concurrent use.
type Client struct {
	conn   *net.UDPConn
	opt    ClientOptions
	slots  chan struct{}
	prefix string
	seq    atomic.Uint64

	mu      sync.Mutex
	pending map[string]chan []byte
	closed  bool
	done    chan struct{}
}

// Dial returns a Client for the relay at addr ("host:port").
func Dial(addr string, o ClientOptions) (*Client, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("ng client: resolving %s: %w", addr, err)
	}
	conn, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		return nil, fmt.Errorf("ng client: dialing %s: %w", addr, err)
	}
	if o.Retries <= 0 {
		o.Retries = DefaultRetries
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = DefaultRetryInterval
	}
	if o.MaxOutstanding <= 0 {
		o.MaxOutstanding = DefaultMaxOutstanding
	}
	var rb [6]byte
	_, _ = rand.Read(rb[:])
	c := &Client{
		conn:    conn,
		opt:     o,
		slots:   make(chan struct{}, o.MaxOutstanding),
		prefix:  hex.EncodeToString(rb[:]) + "_",
		pending: map[string]chan []byte{},
		done:    make(chan struct{}),
	}
	go c.read()
	return c, nil
}

// Close stops the client; commands under way fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	err := c.conn.Close()
	<-c.done
	return err
}

// read delivers replies to the commands waiting for their cookie; replies
// nobody waits for (late answers to retransmissions) are dropped.
func (c *Client) read() {
	defer close(c.done)
	buf := make([]byte, MaxMessageSize+1)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ICMP port unreachable surfaces as a read error on a
			// connected socket: the relay is down, and the retransmit
			// timer will say so.
			continue
		}
		cookie, body, ok := splitCookie(buf[:n])
		if !ok {
			continue
		}
		c.mu.Lock()
		ch := c.pending[cookie]
		delete(c.pending, cookie)
		c.mu.Unlock()
		if ch != nil {
			ch <- bytes.Clone(body)
		}
	}
}

// Do sends the command d and returns the decoded reply dictionary. It
// returns an error wrapping ErrTimeout when no reply came, a *ReplyError
// when the result is neither "ok" nor "pong", and ErrClosed after Close.
func (c *Client) Do(ctx context.Context, d map[string]any) (map[string]any, error) {
	command, _ := d["command"].(string)
	body, err := Encode(d)
	if err != nil {
		return nil, fmt.Errorf("ng %s: encoding: %w", command, err)
	}
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("ng %s: waiting for a slot: %w (%w)", command, ErrTimeout, ctx.Err())
	}
	defer func() { <-c.slots }()

	cookie := c.prefix + strconv.FormatUint(c.seq.Add(1), 36)
	ch := make(chan []byte, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.pending[cookie] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, cookie)
		c.mu.Unlock()
	}()

	msg := make([]byte, 0, len(cookie)+1+len(body))
	msg = append(append(append(msg, cookie...), ' '), body...)
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for try := 0; ; try++ {
		if try == c.opt.Retries {
			return nil, fmt.Errorf("ng %s: %w after %d tries", command, ErrTimeout, try)
		}
		if _, err := c.conn.Write(msg); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, ErrClosed
			}
			// Like a lost datagram: retry on the timer.
		}
		t.Reset(c.opt.RetryInterval)
		select {
		case reply := <-ch:
			return parseClientReply(command, reply)
		case <-t.C:
		case <-ctx.Done():
			return nil, fmt.Errorf("ng %s: %w (%w)", command, ErrTimeout, ctx.Err())
		case <-c.done:
			return nil, ErrClosed
		}
	}
}

// parseClientReply decodes a reply body and turns a failure result into
// a *ReplyError.
func parseClientReply(command string, body []byte) (map[string]any, error) {
	v, err := Decode(body)
	if err != nil {
		return nil, fmt.Errorf("ng %s: malformed reply: %w", command, err)
	}
	d, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("ng %s: reply is not a dictionary", command)
	}
	result, _ := d["result"].(string)
	switch result {
	case "ok", "pong":
		return d, nil
	case "":
		return nil, fmt.Errorf("ng %s: reply has no result", command)
	}
	re := &ReplyError{Command: command, Result: result}
	re.Reason, _ = d["error-reason"].(string)
	if re.Reason == "" {
		re.Reason, _ = d["message"].(string)
	}
	return nil, re
}

// Ping checks the relay answers.
func (c *Client) Ping(ctx context.Context) error {
	d, err := c.Do(ctx, map[string]any{"command": "ping"})
	if err != nil {
		return err
	}
	if d["result"] != "pong" {
		return fmt.Errorf("ng ping: relay answered %q, want pong", d["result"])
	}
	return nil
}

// Command is an offer, answer, delete or query's parameters.
type Command struct {
	CallID    string
	FromTag   string
	ToTag     string
	ViaBranch string
	SDP       []byte
	// Flags go into the "flags" list: "trust-address", "ICE=remove"...
	Flags []string
	// Replace goes into "replace": "origin", "session-connection".
	Replace []string
	// Extra keys are sent as they are (e.g. "direction", "received-from").
	Extra map[string]any
}

func (cmd *Command) dict(command string) map[string]any {
	// supports: ["load limit"] as Kamailio sends it: a draining relay
	// answers result "load limit" rather than an error (refusal.go).
	d := map[string]any{"command": command, "call-id": cmd.CallID, "supports": []string{ResultLoadLimit}}
	for k, v := range cmd.Extra {
		d[k] = v
	}
	if cmd.FromTag != "" {
		d["from-tag"] = cmd.FromTag
	}
	if cmd.ToTag != "" {
		d["to-tag"] = cmd.ToTag
	}
	if cmd.ViaBranch != "" {
		d["via-branch"] = cmd.ViaBranch
	}
	if cmd.SDP != nil {
		d["sdp"] = string(cmd.SDP)
	}
	if len(cmd.Flags) > 0 {
		d["flags"] = append([]string{}, cmd.Flags...)
	}
	if len(cmd.Replace) > 0 {
		d["replace"] = append([]string{}, cmd.Replace...)
	}
	return d
}

// Offer sends an offer and returns the SDP the relay rewrote.
func (c *Client) Offer(ctx context.Context, cmd *Command) ([]byte, error) {
	return c.sdp(ctx, "offer", cmd)
}

// Answer sends an answer and returns the SDP the relay rewrote.
func (c *Client) Answer(ctx context.Context, cmd *Command) ([]byte, error) {
	return c.sdp(ctx, "answer", cmd)
}

func (c *Client) sdp(ctx context.Context, command string, cmd *Command) ([]byte, error) {
	d, err := c.Do(ctx, cmd.dict(command))
	if err != nil {
		return nil, err
	}
	s, ok := d["sdp"].(string)
	if !ok {
		return nil, fmt.Errorf("ng %s: reply has no sdp", command)
	}
	return []byte(s), nil
}

// Delete removes the call (or the from-tag's side) on the relay and
// returns what the relay reported of it.
func (c *Client) Delete(ctx context.Context, cmd *Command) (CallInfo, error) {
	return c.info(ctx, "delete", cmd)
}

// Query returns the relay's view of the call.
func (c *Client) Query(ctx context.Context, cmd *Command) (CallInfo, error) {
	return c.info(ctx, "query", cmd)
}

func (c *Client) info(ctx context.Context, command string, cmd *Command) (CallInfo, error) {
	d, err := c.Do(ctx, cmd.dict(command))
	if err != nil {
		return CallInfo{}, err
	}
	return ParseCallInfo(d), nil
}

// CallInfo is the part of a query or delete reply sipd uses.
type CallInfo struct {
	Created    time.Time // zero when the relay did not say
	LastSignal time.Time
	Tags       []string // the call's SIP tags, sorted
	RTP, RTCP  Totals
}

// Totals are a call's counters over all its streams.
type Totals struct{ Packets, Bytes, Errors uint64 }

// ParseCallInfo reads rtpengine's query/delete reply shape ("created",
// "last signal", "tags", "totals"), skipping what is missing or
// mistyped: a relay's reply is not trusted to be complete.
func ParseCallInfo(d map[string]any) CallInfo {
	var ci CallInfo
	if n, ok := d["created"].(int64); ok && n > 0 {
		ci.Created = time.Unix(n, 0)
	}
	if n, ok := d["last signal"].(int64); ok && n > 0 {
		ci.LastSignal = time.Unix(n, 0)
	}
	if tags, ok := d["tags"].(map[string]any); ok {
		for t := range tags {
			ci.Tags = append(ci.Tags, t)
		}
		slices.Sort(ci.Tags)
	}
	if tot, ok := d["totals"].(map[string]any); ok {
		ci.RTP = totals(tot["RTP"])
		ci.RTCP = totals(tot["RTCP"])
	}
	return ci
}

func totals(v any) Totals {
	m, _ := v.(map[string]any)
	get := func(k string) uint64 {
		if n, ok := m[k].(int64); ok && n > 0 {
			return uint64(n)
		}
		return 0
	}
	return Totals{Packets: get("packets"), Bytes: get("bytes"), Errors: get("errors")}
}
