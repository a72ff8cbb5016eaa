// Package sipserver wires sipd's SIP side together: sockets, the sipgo
// transport and transaction layers, the flood filter and keep-alive fast
// path in front of them, and the proxy core behind.
//
// Use from sipd.Run:
//
//	srv, err := sipserver.New(cfg.SIP, logger, sipserver.Options{})
//	if err != nil { ... }            // bad config, a port in use, a bad cert
//	go func() { errc <- srv.Serve(ctx) }() // returns after ctx ends, state saved
//	// on SIGHUP: srv.ReloadUsers()
//	// HTTP API: srv.Stats(), srv.Registrations(), srv.Calls()
package sipserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/guard"
	"sipxdp/sipd/cdrstream"
	"sipxdp/sipd/connguard"
	"sipxdp/sipd/dialog"
	"sipxdp/sipd/digest"
	"sipxdp/sipd/journal"
	"sipxdp/sipd/media"
	"sipxdp/sipd/protect"
	"sipxdp/sipd/proxy"
	"sipxdp/sipd/redisconn"
	"sipxdp/sipd/registrar"
	"sipxdp/sipd/secret"
	"sipxdp/sipd/sipconf"
)

// Sentinel errors.
var (
	ErrBanned = errors.New("source banned")
	ErrServed = errors.New("server already served")
)

var defaultLoggerOnce sync.Once

// linger is how long a finished transaction stays to absorb
// retransmissions. RFC 3261/6026 say 32 s (64*T1); at thousands of calls
// a second that keeps hundreds of thousands of transactions alive. A
// proxy loses nothing by ending them sooner: a late 2xx retransmission is
// relayed statelessly anyway, a late final response or request
// retransmission is answered again by the peer. Kamailio waits 5 s too.
const linger = 5 * time.Second

const udpBuffer = 8 << 20

func init() {
	// sipgo's timers are package variables; set them before any server
	// exists so no transaction sees them change.
	sip.Timer_D, sip.Timer_J, sip.Timer_L = linger, linger, linger
	// An INVITE client transaction ends as soon as its 2xx is passed up, as
	// in RFC 3261 (§17.1.1.2) before RFC 6026 added the Accepted state: a
	// proxy relays later 2xx retransmissions statelessly (§16.7, and
	// proxy.HandleStrayResponse here), so keeping the request and the 2xx
	// another linger gains nothing and costs memory per call.
	sip.Timer_M = 0
}

// Options are what the config file does not hold.
type Options struct {
	// Exempt sources are never flood-banned (the operator's own hosts).
	Exempt []netip.Prefix
	Now    func() time.Time
	// Media relays calls' RTP (media.mode all or nat); nil: signaling only.
	Media MediaController
	// RelayPairs is the number of RTP/RTCP port pairs of the smallest
	// relay address pool (a call's legs may all come from one). The share
	// of it that unauthenticated calls in setup may hold is
	// sip.protect.setup_unauthenticated_share; 0: no bound.
	RelayPairs int
	// RelayPorts is how many relay sockets may be open at once (the ports
	// of the relay's ranges when it runs in this process): the derived
	// connection cap leaves them their descriptors.
	RelayPorts int
	// Observe times calls and transactions for sipd's histograms.
	Observe Observers
}

// Observers are told timings; any may be nil. They run on the SIP
// goroutines and must be quick. Plain funcs rather than a metrics type:
// this package serves SIP, and sipd decides how timings are exported.
type Observers struct {
	// CallSetup: an initial INVITE's final status and the time from the
	// INVITE forwarded to that response relayed (dialog.Tracker.ObserveSetup).
	CallSetup func(status int, d time.Duration)
	// Transaction: a request's method and the time from the request to
	// its first final response (proxy.Config.ObserveTransaction).
	Transaction func(method string, d time.Duration)
}

// Server is the SIP proxy and registrar.
type Server struct {
	cfg   sipconf.Config
	log   *slog.Logger
	opt   Options
	start time.Time

	ua      *sipgo.UserAgent
	core    *proxy.Proxy
	self    *proxy.Self
	users   *digest.Users
	loc     registrar.Locations   // the location table: store or shared
	store   *registrar.Store      // the file-backed one; nil when shared
	shared  *registrar.RedisStore // the one in Redis; nil when not
	reg     *registrar.Registrar
	dialogs *dialog.Tracker
	cdr     *journal.Journal // nil: no CDRs
	// sharedDialogs is the Redis the calls are kept in (sip.dialog.store:
	// redis://...); cdrStream copies CDRs to a Redis stream. nil: not.
	sharedDialogs *redisconn.Conn
	cdrStream     *cdrstream.Stream

	// Flood bans, one table per kind of transport: a datagram's source
	// can be forged, a connection's cannot, and a ban earned by forged
	// datagrams must not close an innocent's connections.
	pike, pikeStream *protect.Pike
	binder           *protect.Binder // ties challenges' nonces to their addresses
	setup            *protect.Setup  // caps on calls in setup

	udp       map[string]*net.UDPConn   // by local address
	udpByAddr map[net.Addr]*net.UDPConn // by the LocalAddr value itself: no String per datagram
	streams   []streamListener
	listeners []proxy.Listener
	guard     *connguard.Guard // caps and timeouts of TCP, TLS, WS and WSS connections

	usersMod time.Time
	served   atomic.Bool
	handlers sync.WaitGroup

	// Housekeeping's own: failed compactions in a row, and the tick
	// before which none is tried again.
	compactFails, compactAfter int

	exemptPfx []netip.Prefix

	secret []byte // sip.secret or the state directory's: keys nonces and tokens

	kaTag  string   // To tag of fast-path answers
	kaURIs selfURIs // request URIs of keep-alives found to be ours

	tooLarge, banned, fastKeepalives, panics, malformed atomic.Uint64
}

type streamListener struct {
	transport string
	l         net.Listener
}

// Stats is a snapshot for /health and /metrics.
type Stats struct {
	Uptime          time.Duration `json:"-"`
	AoRs            int           `json:"aors"`
	Registrations   int           `json:"registrations"`
	ActiveCalls     int           `json:"active_calls"`
	CallsInSetup    int           `json:"calls_in_setup"`
	CallsCompleted  uint64        `json:"calls_completed"`
	CallsFailed     uint64        `json:"calls_failed"`
	Transactions    int64         `json:"transactions"`
	Users           int           `json:"users"`
	BannedSources   int           `json:"banned_sources"`
	Bans            uint64        `json:"bans"`
	DroppedFlood    uint64        `json:"dropped_flood"`
	DroppedTooLarge uint64        `json:"dropped_too_large"`
	Panics          uint64        `json:"panics"`
	Malformed       uint64        `json:"malformed"` // unparsable messages, dropped
	// RegisterUnavailable counts REGISTERs refused with 500 because the
	// location store could not make them durable.
	RegisterUnavailable uint64 `json:"register_unavailable"`
	// CDRs written, and those that could not be when their call ended.
	CDRs      uint64 `json:"cdrs"`
	CDRErrors uint64 `json:"cdr_errors"`
	// Journals: the location store's and the CDR file's, when kept.
	Journals []journal.Stats `json:"journals,omitempty"`
	// With a shared location store (Redis): LocationErrors counts
	// operations that failed for want of it; LocationDown is set while
	// it cannot be reached.
	LocationShared bool   `json:"location_shared,omitempty"`
	LocationErrors uint64 `json:"location_errors,omitempty"`
	LocationDown   bool   `json:"location_down,omitempty"`
	locationWhy    string
	// With calls shared in Redis: DialogErrors counts operations that
	// failed for want of it, DialogDown is set while it cannot be
	// reached, DialogsAdopted counts calls taken over from other nodes.
	DialogShared   bool   `json:"dialog_shared,omitempty"`
	DialogErrors   uint64 `json:"dialog_errors,omitempty"`
	DialogDown     bool   `json:"dialog_down,omitempty"`
	DialogsAdopted uint64 `json:"dialogs_adopted,omitempty"`
	dialogWhy      string
	// CDRStream: the Redis stream CDRs are copied to, when configured.
	CDRStream *cdrstream.Stats `json:"cdr_stream,omitempty"`
	Core      proxy.Stats      `json:"core"`
	// Connections are the TCP, TLS, WS and WSS connections: open, caps, refusals.
	Connections connguard.Stats `json:"connections"`
	// BannedPassed counts messages from banned sources let through to the
	// core for what they proved.
	BannedPassed BannedPassed       `json:"banned_passed"`
	Setup        protect.SetupStats `json:"setup"`
}

// BannedPassed counts messages the flood filter let through from banned
// sources, by what they carried.
type BannedPassed struct {
	Credentials uint64 `json:"credentials"` // credentials for a nonce issued to that address
	Dialog      uint64 `json:"dialog"`      // an in-dialog request of a live call
	Responses   uint64 `json:"responses"`   // an answer to a request of ours
}

// Problems lists what makes the SIP side degraded: journals that cannot
// write.
func (st *Stats) Problems() []string {
	var out []string
	if st.LocationDown {
		out = append(out, "location store (redis) cannot be reached: "+st.locationWhy)
	}
	if st.DialogDown {
		out = append(out, "dialog store (redis) cannot be reached, new calls are not shared: "+st.dialogWhy)
	}
	if st.CDRStream != nil && st.CDRStream.Down {
		out = append(out, "cdr stream (redis) cannot be reached, CDRs wait in memory: "+st.CDRStream.Why)
	}
	for _, j := range st.Journals {
		if j.Degraded {
			out = append(out, fmt.Sprintf("%s journal cannot write: %s", j.Name, j.Error))
		}
	}
	return out
}

// New binds every configured socket and builds the server; nothing is read
// until Serve.
func New(cfg sipconf.Config, log *slog.Logger, opt Options) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	s := &Server{cfg: cfg, log: log, opt: opt, start: opt.Now(), udp: map[string]*net.UDPConn{}}
	tag := make([]byte, 8)
	rand.Read(tag)
	s.kaTag = fmt.Sprintf("%x", tag)
	defer func() {
		if err != nil {
			s.closeSockets()
			if s.cdr != nil {
				s.cdr.Close()
			}
			if s.loc != nil {
				s.loc.Close()
			}
			if s.dialogs != nil {
				s.dialogs.CloseState()
			}
			s.closeShared()
		}
	}()

	if cfg.UsersFile != "" {
		if s.users, err = digest.LoadUsers(cfg.UsersFile); err != nil {
			return nil, err
		}
		if fi, err := os.Stat(cfg.UsersFile); err == nil {
			s.usersMod = fi.ModTime()
		}
	} else {
		s.users = digest.NewUsers(nil)
		if cfg.Auth.Register || cfg.Auth.Invite {
			log.Warn("sip.users_file is empty: authenticated requests will all be refused")
		}
	}
	if s.secret, err = loadSecret(cfg, log); err != nil {
		return nil, err
	}
	nonceKey := []byte(cfg.Auth.Secret)
	if len(nonceKey) == 0 {
		nonceKey = secret.Derive(s.secret, "nonce")
	}
	auth, err := digest.New(s.users, digest.Options{Realm: cfg.Realm(), Algorithms: cfg.Auth.Algorithms,
		TTL: cfg.Auth.NonceTTL.D(), Secret: nonceKey, Now: opt.Now})
	if err != nil {
		return nil, err
	}
	storePath := ""
	switch p := cfg.StorePath(cfg.Registrar.Store); {
	case redisconn.IsURL(cfg.Registrar.Store):
	case cfg.Registrar.Store == sipconf.StoreMemory:
		log.Warn("registrations are kept in memory only (sip.registrar.store: memory): a restart or a crash loses every one")
	case p == "":
		log.Warn("no state_dir: registrations are kept in memory only; a restart or a crash loses every one")
	default:
		storePath = p
	}
	if redisconn.IsURL(cfg.Registrar.Store) {
		if s.shared, err = registrar.OpenRedis(cfg.Registrar.Store, registrar.RedisOptions{Now: opt.Now, Log: log, Node: nodeName(cfg),
			CountEvery: cfg.Registrar.CountEvery.D()}); err != nil {
			return nil, err
		}
		s.loc = s.shared
		log.Info("registrations are shared in redis", "store", cfg.Registrar.Store, "node", nodeName(cfg))
	} else {
		if s.store, err = registrar.OpenStore(storePath, registrar.StoreOptions{Now: opt.Now, Log: log}); err != nil {
			return nil, err
		}
		s.loc = s.store
	}
	s.reg = registrar.New(s.loc, registrar.Options{
		MinExpires: cfg.Registrar.MinExpires.D(), MaxExpires: cfg.Registrar.MaxExpires.D(),
		DefaultExpires: cfg.Registrar.DefaultExpires.D(), MaxContacts: cfg.Registrar.MaxContacts, Now: opt.Now})
	switch p := cfg.StorePath(cfg.Dialog.CDRFile); {
	case cfg.Dialog.CDRFile == sipconf.CDRNone:
		log.Info("no CDRs (sip.dialog.cdr_file: none)")
	case p == "":
		log.Warn("no state_dir: no CDRs are written")
	default:
		if s.cdr, err = journal.Open(p, journal.Options{Name: "cdr", Log: log, Mode: 0o640}); err != nil {
			return nil, fmt.Errorf("cdr file: %w", err)
		}
	}
	var cdrOut dialog.Sink
	if s.cdr != nil {
		cdrOut = s.cdr
	}
	if d := cfg.Dialog; d.CDRStream != "" {
		if s.cdrStream, err = cdrstream.Open(d.CDRStream, cdrstream.Options{Key: d.CDRStreamKey, MaxLen: d.CDRStreamMaxLen, Log: log}); err != nil {
			return nil, fmt.Errorf("cdr stream: %w", err)
		}
		cdrOut = teeSink{file: s.cdr, stream: s.cdrStream}
		log.Info("CDRs are also added to a redis stream", "stream", d.CDRStream, "key", d.CDRStreamKey)
	}
	s.dialogs = dialog.New(cdrOut, 12*time.Hour, opt.Now)
	s.dialogs.ObserveSetup(opt.Observe.CallSetup)
	var restored []dialog.Restored
	switch p := cfg.StorePath(cfg.Dialog.Store); {
	case redisconn.IsURL(cfg.Dialog.Store):
		if s.sharedDialogs, err = redisconn.Open(cfg.Dialog.Store, "dialog store", redisconn.Options{Log: log,
			Down: "answered calls are kept by this node only and calls of other nodes cannot be taken over; calls up go on"}); err != nil {
			return nil, err
		}
		s.dialogs.ShareState(s.sharedDialogs, nodeName(cfg), s.adopt)
		log.Info("calls are shared in redis", "store", cfg.Dialog.Store, "node", nodeName(cfg))
	case cfg.Dialog.Store == sipconf.StoreMemory:
		log.Warn("calls are kept in memory only (sip.dialog.store: memory): after a restart sipd no longer knows the calls that were up")
	case p == "":
		log.Warn("no state_dir: calls are kept in memory only")
	default:
		if restored, err = s.dialogs.OpenState(p, log.With("journal", "dialogs")); err != nil {
			return nil, err
		}
	}
	s.exemptPfx = append(cfg.Protect.ExemptPrefixes(), opt.Exempt...)
	pr := cfg.Protect
	s.pike = protect.NewPike(pr.Limit, pr.Window.D(), pr.BanTime.D(), opt.Now)
	s.pike.SetChallengeInterval(pr.BannedChallengeInterval.D())
	s.pikeStream = protect.NewPike(pr.Limit, pr.Window.D(), pr.BanTime.D(), opt.Now)
	s.binder = protect.NewBinder(secret.Derive(s.secret, "opaque"))
	budget := 0
	if opt.RelayPairs > 0 && pr.SetupUnauthenticatedShare < 100 {
		budget = max(opt.RelayPairs*pr.SetupUnauthenticatedShare/100, 1)
	}
	s.setup = protect.NewSetup(pr.SetupPerSource, budget)
	if s.guard, err = newGuard(cfg.Connections, opt.RelayPorts, s.exempt, log); err != nil {
		return nil, err
	}

	tlsConf, err := s.bind()
	if err != nil {
		return nil, err
	}
	s.self = proxy.NewSelf(cfg.Domains, s.listeners)

	// sipgo refuses to send UDP messages near the Ethernet MTU (RFC 3261
	// §18.1.1 wants TCP then, which phones rarely listen on). Relay what we
	// accept instead and let IP fragment it. This is process-wide, and
	// sipd runs one SIP stack.
	sip.UDPMTUSize = cfg.MaxSize + 200

	sipLog := slog.New(slog.DiscardHandler)
	if log.Enabled(context.Background(), slog.LevelDebug) {
		sipLog = log.With("component", "sipgo")
	}
	// Parts of sipgo log through a package-wide logger (connection
	// reference counts, at warn level when a peer closes first); it is set
	// once, by the first server, before any of them runs.
	defaultLoggerOnce.Do(func() { sip.SetDefaultLogger(sipLog) })
	tpLog := slog.New(countingHandler{next: sipLog.Handler(), malformed: &s.malformed})
	uaOpts := []sipgo.UserAgentOption{
		sipgo.WithUserAgent("sipd"),
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerLogger(tpLog),
			sip.WithTransportLayerReadFilter(s.filter)),
	}
	if tlsConf != nil {
		uaOpts = append(uaOpts, sipgo.WithUserAgenTLSConfig(tlsConf))
	}
	// The core is created after the UA, but the handler is only called
	// once Serve runs, by which time s.core is set.
	uaOpts = append(uaOpts, sipgo.WithUserAgentTransactionLayerOptions(
		sip.WithTransactionLayerLogger(sipLog),
		sip.WithTransactionLayerUnhandledResponseHandler(func(r *sip.Response) { s.core.HandleStrayResponse(r) }),
		sip.WithTransactionLayerTerminateOnConnClose()))
	if s.ua, err = sipgo.NewUA(uaOpts...); err != nil {
		return nil, fmt.Errorf("sip stack: %w", err)
	}
	s.core = proxy.New(proxy.Config{
		AuthRegister: cfg.Auth.Register, AuthInvite: cfg.Auth.Invite, AllowRelay: cfg.AllowRelay,
		FixContact: cfg.NAT.FixContact, MaxSize: cfg.MaxSize, InviteTimeout: cfg.Timers.Invite.D(),
		Media: opt.Media, Flows: s, RouteKey: secret.Derive(s.secret, "route"), Path: s.shared != nil,
		PeerRoutes: s.sharedDialogs != nil,
		Setup:      s.setup, Exempt: s.exempt, Banned: s.isBanned, Binder: s.binder,
		ObserveTransaction: opt.Observe.Transaction,
	}, log, s.ua, s.self, auth, s.reg, s.dialogs)
	if opt.Media != nil {
		opt.Media.OnTimeout(s.core.MediaEnded)
	}
	s.resume(restored)
	s.ua.TransactionLayer().OnRequest(func(req *sip.Request, tx *sip.ServerTx) {
		s.handlers.Add(1)
		defer s.handlers.Done()
		// One bad message must not take down every call: a panic is a bug,
		// logged and counted (tests fail on the count), and the request is
		// dropped.
		defer func() {
			if v := recover(); v != nil {
				s.panics.Add(1)
				s.log.Error("sip handler panic", "panic", fmt.Sprint(v), "method", string(req.Method), "src", req.Source(), "stack", string(debug.Stack()))
			}
		}()
		s.core.HandleRequest(req, tx)
	})
	return s, nil
}

// resume gives the media relay back the calls that were up when sipd
// last stopped (or crashed), as the dialog state kept them. A call whose
// relaying cannot resume (its ports are no longer in a configured range,
// or media.mode is none now) stays known to signaling: its in-dialog
// requests are routed, its BYE ends it.
func (s *Server) resume(calls []dialog.Restored) {
	if len(calls) == 0 {
		return
	}
	relayed, failed := 0, 0
	for _, c := range calls {
		if len(c.Media) == 0 {
			continue
		}
		if s.opt.Media == nil {
			failed++
			s.log.Warn("call was relayed, but no relay runs now (media.mode none): its media is not relayed", "call_id", c.Call.CallID)
			continue
		}
		since := c.MediaAt
		if c.Call.Answered.After(since) {
			since = c.Call.Answered
		}
		if err := s.opt.Media.Restore(c.Call.CallID, c.Media, since); err != nil {
			failed++
			s.log.Error("cannot resume relaying a call", "call_id", c.Call.CallID, "error", err)
			continue
		}
		relayed++
	}
	s.log.Info("calls resumed from the dialog state", "calls", len(calls), "relayed", relayed, "relay_failed", failed)
}

// adopt resumes the media of a call another node set up, taken over from
// the shared dialog state. With NG relays the call goes on on its relay;
// the embedded relay's calls lived on the failed node's host, and only
// their signaling is taken over.
func (s *Server) adopt(c dialog.Restored) {
	s.log.Info("call taken over from the shared dialog state", "call_id", c.Call.CallID)
	if len(c.Media) == 0 || s.opt.Media == nil {
		return
	}
	since := c.MediaAt
	if c.Call.Answered.After(since) {
		since = c.Call.Answered
	}
	if err := s.opt.Media.Restore(c.Call.CallID, c.Media, since); err != nil {
		s.log.Warn("call taken over without its media", "call_id", c.Call.CallID, "error", err)
	}
}

// teeSink writes CDRs to the file (its commit is what the tracker waits
// for) and queues them for the Redis stream, which never blocks.
type teeSink struct {
	file   *journal.Journal // nil: no file
	stream *cdrstream.Stream
}

func (t teeSink) Append(rec []byte) *journal.Commit {
	t.stream.Add(rec)
	if t.file == nil {
		return nil
	}
	return t.file.Append(rec)
}

// closeShared closes the Redis clients of the dialog store and the CDR
// stream (the stream sends what it has queued first).
func (s *Server) closeShared() error {
	var err error
	if s.cdrStream != nil {
		err = s.cdrStream.Close()
	}
	if s.sharedDialogs != nil {
		err = errors.Join(err, s.sharedDialogs.Close())
	}
	return err
}

// loadSecret returns sip.secret, or the secret kept in the state
// directory (created with the directory when missing). Without a state
// directory there is nothing to keep it in: a random one serves this run.
func loadSecret(cfg sipconf.Config, log *slog.Logger) ([]byte, error) {
	if cfg.StateDir == "" {
		if cfg.Secret != "" {
			return secret.Load(cfg.Secret, "")
		}
		log.Warn("no state_dir: a random secret for this run; nonces and Record-Route tokens die with it")
		b := make([]byte, 32)
		rand.Read(b)
		return b, nil
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	b, err := secret.Load(cfg.Secret, filepath.Join(cfg.StateDir, "secret"))
	if err != nil {
		return nil, fmt.Errorf("sip secret: %w", err)
	}
	return b, nil
}

// bind opens the sockets so their real ports are known before Serve.
func (s *Server) bind() (*tls.Config, error) {
	var tlsConf *tls.Config
	for _, l := range s.cfg.Listen {
		t := strings.ToUpper(l.Transport)
		switch t {
		case "UDP":
			c, err := net.ListenPacket("udp", l.Addr)
			if err != nil {
				return nil, fmt.Errorf("listen udp %s: %w", l.Addr, guard.ExplainBind(l.Addr, err))
			}
			uc := c.(*net.UDPConn)
			// One socket takes every phone's traffic; the default buffer
			// (about 200 KB) overflows in a burst of a few hundred
			// requests, and each drop costs a retransmission 500 ms later.
			// The kernel caps this at net.core.rmem_max.
			uc.SetReadBuffer(udpBuffer)
			uc.SetWriteBuffer(udpBuffer)
			s.udp[uc.LocalAddr().String()] = uc
			if s.udpByAddr == nil {
				s.udpByAddr = make(map[net.Addr]*net.UDPConn)
			}
			s.udpByAddr[uc.LocalAddr()] = uc
			s.addListener(t, uc.LocalAddr())
		case "TCP", "TLS", "WS", "WSS":
			ln, err := net.Listen("tcp", l.Addr)
			if err != nil {
				return nil, fmt.Errorf("listen %s %s: %w", l.Transport, l.Addr, guard.ExplainBind(l.Addr, err))
			}
			s.addListener(t, ln.Addr())
			if t == "TLS" || t == "WSS" {
				cert, err := tls.LoadX509KeyPair(l.Cert, l.Key)
				if err != nil {
					ln.Close()
					return nil, fmt.Errorf("%s certificate: %w", l.Transport, err)
				}
				if tlsConf == nil {
					tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
				}
				tlsConf.Certificates = append(tlsConf.Certificates, cert)
				ln = tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}})
			}
			// sipgo's Serve ends at the first accept error and reads
			// each connection until it closes: the guard keeps accepting
			// through errors and closes what stalls or exceeds the caps.
			if t == "WS" || t == "WSS" {
				s.streams = append(s.streams, streamListener{transport: t, l: newUpgradeAhead(s.guard.ListenFramed(ln, connguard.NewWSFramer))})
				continue
			}
			s.streams = append(s.streams, streamListener{transport: t, l: s.guard.Listen(ln)})
		}
	}
	return tlsConf, nil
}

func (s *Server) addListener(transport string, a net.Addr) {
	ap, _ := netip.ParseAddrPort(a.String())
	s.listeners = append(s.listeners, proxy.Listener{Transport: transport, Addr: ap, Host: s.cfg.Advertise})
}

// Listeners returns the bound sockets (with the real port when the config
// said 0).
func (s *Server) Listeners() []proxy.Listener { return s.listeners }

// Addr returns the bound address of the first socket of a transport.
func (s *Server) Addr(transport string) (netip.AddrPort, bool) {
	for _, l := range s.listeners {
		if strings.EqualFold(l.Transport, transport) {
			return l.Addr, true
		}
	}
	return netip.AddrPort{}, false
}

func (s *Server) closeSockets() {
	for _, c := range s.udp {
		c.Close()
	}
	for _, l := range s.streams {
		l.l.Close()
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.UDPAddr:
		return v.AddrPort()
	case *net.TCPAddr:
		return v.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func (s *Server) exempt(a netip.Addr) bool {
	for _, p := range s.exemptPfx {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// filter sees every datagram and stream read before parsing: it drops
// banned and oversized input and answers keep-alives without building a
// transaction.
func (s *Server) filter(info sip.TransportReadProps, data []byte) ([]byte, error) {
	src := addrPortOf(info.RemoteAddr)
	ip := src.Addr().Unmap()
	udp := info.Transport == "UDP"
	// Responses are not counted: a busy peer answering our own requests is
	// not flooding us (and a stream read may hold several messages anyway).
	isResponse := bytes.HasPrefix(data, []byte("SIP/2.0 "))
	if !s.exempt(ip) {
		drop := false
		switch {
		case !udp:
			drop = isResponse && s.pikeStream.Banned(ip) || !isResponse && !s.pikeStream.Allow(ip)
		case isResponse:
			drop = s.pike.Banned(ip) && !s.bannedPass(ip, data)
		default:
			drop = !s.pike.Allow(ip) && !s.bannedPass(ip, data)
		}
		if drop {
			s.banned.Add(1)
			if !udp {
				return nil, ErrBanned // closes the connection
			}
			return nil, nil
		}
	}
	if !udp {
		return data, nil
	}
	if len(data) > s.cfg.MaxSize {
		s.tooLarge.Add(1)
		return nil, nil
	}
	if s.fastKeepalive(info, src, data) {
		return nil, nil
	}
	return data, nil
}

// fastKeepalive answers an OPTIONS or NOTIFY keep-alive to us straight
// from the read loop (see keepalive.go).
func (s *Server) fastKeepalive(info sip.TransportReadProps, src netip.AddrPort, data []byte) bool {
	conn := s.udpByAddr[info.LocalAddr]
	if conn == nil {
		if conn = s.udp[info.LocalAddr.String()]; conn == nil {
			return false
		}
	}
	return s.answerKeepalive(conn, src, data, false)
}

// answerKeepalive writes the fast-path answer to a keep-alive datagram and
// reports whether data was one. With checkPike (a datagram filter has not
// seen) a keep-alive from a flooding source is counted and dropped as
// filter would.
func (s *Server) answerKeepalive(conn *net.UDPConn, src netip.AddrPort, data []byte, checkPike bool) bool {
	if len(data) > s.cfg.MaxSize {
		return false
	}
	bp := kaBufs.Get().(*[]byte)
	defer kaBufs.Put(bp)
	res, ok := appendKeepaliveAnswer((*bp)[:0], data, src, s.self, s.kaTag, &s.kaURIs)
	if !ok {
		return false
	}
	*bp = res[:0]
	// A keep-alive from a banned source proves nothing: dropped, not
	// answered (the phone's NAT binding lives on its own outgoing packets).
	if checkPike && !s.exempt(src.Addr().Unmap()) && !s.pike.Allow(src.Addr()) {
		s.banned.Add(1)
		return true
	}
	// Counted before the write: whoever reads the answer may look at the
	// counters at once.
	s.fastKeepalives.Add(1)
	s.core.CountKeepalive()
	conn.WriteToUDPAddrPort(res, src)
	return true
}

// kaConn is the listener sipgo reads: it answers keep-alives itself, with
// ReadFromUDPAddrPort (no address allocated), and hands sipgo only the
// rest, which sipgo's read loop would otherwise pay an address, its
// String and the filter call for.
type kaConn struct {
	*net.UDPConn
	s *Server
}

func (k *kaConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, src, err := k.UDPConn.ReadFromUDPAddrPort(p)
		if err != nil {
			return n, nil, err
		}
		if k.s.answerKeepalive(k.UDPConn, src, p[:n], true) {
			continue
		}
		return n, net.UDPAddrFromAddrPort(src), nil
	}
}

// kaBufs holds the buffers fast-path answers are built in.
var kaBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// Close releases a server that will not be served (Serve cleans up after
// itself); it is a no-op once Serve has started.
func (s *Server) Close() error {
	if !s.served.CompareAndSwap(false, true) {
		return nil
	}
	s.closeSockets()
	s.ua.Close()
	err := errors.Join(s.loc.Close(), s.dialogs.CloseState(), s.closeShared())
	if s.cdr != nil {
		err = errors.Join(err, s.cdr.Close())
	}
	return err
}

// Serve reads from every socket until ctx ends, then shuts down: sockets
// closed, transactions ended, the location snapshot written.
func (s *Server) Serve(ctx context.Context) error {
	if !s.served.CompareAndSwap(false, true) {
		return ErrServed
	}
	tp := s.ua.TransportLayer()
	var wg sync.WaitGroup
	errc := make(chan error, len(s.udp)+len(s.streams))
	udp := make([]net.PacketConn, 0, len(s.udp))
	for _, c := range s.udp {
		udp = append(udp, &kaConn{UDPConn: c, s: s})
	}
	wg.Add(len(udp))
	serveUDPThenSetStreamSize(udp, s.cfg.MaxSize, func(c net.PacketConn, done chan struct{}) {
		defer wg.Done()
		defer close(done)
		errc <- tp.ServeUDP(c)
	})
	for _, l := range s.streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch l.transport {
			case "TLS":
				errc <- tp.ServeTLS(l.l)
			case "WS":
				errc <- tp.ServeWS(l.l)
			case "WSS":
				errc <- tp.ServeWSS(l.l)
			default:
				errc <- tp.ServeTCP(l.l)
			}
		}()
	}
	s.log.Info("sip serving", "listeners", s.describe(), "domains", s.cfg.Domains, "users", s.users.Len())
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	var serveErr error
	for tick := 0; ; tick++ {
		select {
		case <-ctx.Done():
		case err := <-errc:
			if ctx.Err() == nil {
				serveErr = fmt.Errorf("sip socket: %w", err)
			}
		case <-ticker.C:
			s.housekeep(tick)
			continue
		}
		break
	}
	s.core.Stop()
	s.closeSockets()
	s.ua.Close()
	wg.Wait()
	done := make(chan struct{})
	go func() { s.handlers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.log.Warn("sip handlers still running at shutdown")
	}
	// A handler between its stop check and its send may still have opened
	// a connection; closing the transports again releases it.
	s.ua.TransportLayer().Close()
	s.dialogs.Shutdown()
	if err := s.dialogs.CompactState(); err != nil {
		s.log.Error("dialog snapshot not written; the journal keeps every call", "error", err)
	}
	if err := s.dialogs.CloseState(); err != nil {
		s.log.Error("dialog journal not closed", "error", err)
	}
	// A failed snapshot loses nothing: the journals stay and are replayed.
	if s.store != nil {
		if err := s.store.Compact(); err != nil {
			s.log.Error("location snapshot not written; the journal keeps every registration", "error", err)
		}
	}
	if err := s.loc.Close(); err != nil {
		s.log.Error("location store not closed", "error", err)
	}
	if s.cdr != nil {
		if err := s.cdr.Close(); err != nil {
			s.log.Error("cdr file not closed", "error", err)
		}
	}
	if err := s.closeShared(); err != nil {
		s.log.Error("redis clients not closed", "error", err)
	}
	return serveErr
}

func (s *Server) describe() []string {
	var out []string
	for _, l := range s.listeners {
		out = append(out, strings.ToLower(l.Transport)+":"+l.Addr.String())
	}
	return out
}

// dialogJournalLimit is the dialog journal size past which it is folded
// into a snapshot of the calls up (two records a call: a busy day's worth
// would otherwise be replayed at every start).
const dialogJournalLimit = 16 << 20

// journalLimit is the journal size that triggers a compaction, once the
// journal is also larger than the snapshot: a table of a million
// contacts takes seconds of CPU to write out, and compacting every 32 MiB
// while it fills (a registration ramp) would cost that again and again.
// Growing the trigger with the table keeps the cost per journal byte
// constant and the replay at start at most about twice the snapshot.
const journalLimit = 32 << 20

// compact writes the location snapshot. A failure is logged once and
// retried a minute later, not every second; nothing is lost meanwhile.
func (s *Server) compact(tick int) {
	err := s.store.Compact()
	switch {
	case err != nil && s.compactFails == 0:
		s.log.Error("location snapshot not written; the journal keeps every registration, retrying every minute", "error", err)
	case err == nil && s.compactFails > 0:
		s.log.Info("location snapshot written again", "failed_attempts", s.compactFails)
	}
	if err != nil {
		s.compactFails++
		s.compactAfter = tick + 60
		return
	}
	s.compactFails = 0
}

func (s *Server) housekeep(tick int) {
	// While the journal cannot write, it retries by itself (and has
	// logged why); a compaction could not set it aside anyway.
	if s.store == nil {
		// Shared: Redis expires bindings, and keeps them.
	} else if js, ok := s.store.Journal(); ok && !js.Degraded && tick >= s.compactAfter {
		n := s.store.JournalSize()
		big := n > journalLimit && n > s.store.SnapshotSize()
		if s.store.NeedsSnapshot() || big || (n > 0 && tick%600 == 599) {
			s.compact(tick)
		}
	}
	if tick%10 == 0 && s.store != nil {
		s.store.Sweep()
	}
	if tick%60 == 0 {
		s.dialogs.Sweep()
		if js, ok := s.dialogs.StateStats(); ok && !js.Degraded && s.dialogs.StateSize() > dialogJournalLimit {
			if err := s.dialogs.CompactState(); err != nil {
				s.log.Error("dialog snapshot not written; the journal keeps every call", "error", err)
			}
		}
	}
	if tick%2 == 0 && s.users.Path() != "" {
		if fi, err := os.Stat(s.users.Path()); err == nil && !fi.ModTime().Equal(s.usersMod) {
			s.usersMod = fi.ModTime()
			if err := s.ReloadUsers(); err != nil {
				s.log.Error("users file not reloaded", "error", err)
			}
		}
	}
}

// ReloadUsers rereads the users file (call it on SIGHUP; the file is also
// watched). On error the previous users stay in force.
func (s *Server) ReloadUsers() error {
	if err := s.users.Reload(); err != nil {
		return err
	}
	s.log.Info("users reloaded", "users", s.users.Len())
	return nil
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	aors, contacts := s.loc.Count()
	setup, active, done, failed := s.dialogs.Stats()
	dgram, stream := s.pike.Stats(), s.pikeStream.Stats()
	core := s.core.Stats()
	cdrs, cdrErrors := s.dialogs.CDRs()
	st := Stats{
		Uptime: s.opt.Now().Sub(s.start), AoRs: aors, Registrations: contacts,
		ActiveCalls: active, CallsInSetup: setup, CallsCompleted: done, CallsFailed: failed,
		Transactions: core.Transactions, Users: s.users.Len(),
		BannedSources: dgram.BannedNow + stream.BannedNow, Bans: dgram.Bans + stream.Bans,
		DroppedFlood: s.banned.Load(), DroppedTooLarge: s.tooLarge.Load(), Panics: s.panics.Load(), Malformed: s.malformed.Load(),
		RegisterUnavailable: s.reg.Unavailable(), CDRs: cdrs, CDRErrors: cdrErrors,
		Core: core, Connections: s.guard.Stats(),
		BannedPassed: BannedPassed{Credentials: dgram.Passed[protect.PassCredentials],
			Dialog: dgram.Passed[protect.PassDialog], Responses: dgram.Passed[protect.PassResponse]},
		Setup: s.setup.Stats(),
	}
	if s.store != nil {
		if js, ok := s.store.Journal(); ok {
			st.Journals = append(st.Journals, js)
		}
	}
	if s.shared != nil {
		st.LocationShared, st.LocationErrors = true, s.shared.Errors()
		st.LocationDown, st.locationWhy = s.shared.Down()
	}
	if s.cdr != nil {
		st.Journals = append(st.Journals, s.cdr.Stats())
	}
	if errs, down, why, ok := s.dialogs.SharedStats(); ok {
		st.DialogShared, st.DialogErrors, st.DialogDown, st.dialogWhy = true, errs, down, why
		st.DialogsAdopted = s.dialogs.Adopted()
	}
	if s.cdrStream != nil {
		cs := s.cdrStream.Stats()
		st.CDRStream = &cs
	}
	if js, ok := s.dialogs.StateStats(); ok {
		st.Journals = append(st.Journals, js)
	}
	return st
}

// Registrations lists every binding, for the HTTP API.
func (s *Server) Registrations() ([]registrar.Binding, error) { return s.loc.All() }

// nodeName names this sipd in a shared location store: its host and
// first SIP listener.
func nodeName(cfg sipconf.Config) string {
	host, _ := os.Hostname()
	if len(cfg.Listen) > 0 {
		return host + "/" + cfg.Listen[0].Addr
	}
	return host
}

// Calls lists calls in progress, for the HTTP API.
func (s *Server) Calls() []dialog.Call { return s.dialogs.Active() }

// MediaController is the proxy's media hook plus what resuming relayed
// calls after a restart and ending silent calls need. A nil interface
// (not a nil *media.Controller in one) means signaling only.
type MediaController interface {
	proxy.MediaController
	Restore(callID string, state []byte, since time.Time) error
	OnTimeout(func(media.Ended))
}
