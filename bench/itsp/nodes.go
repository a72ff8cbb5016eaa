package itsp

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"sipxdp/internal/redistest"
	"sipxdp/internal/sipdrun"
)

// nodesSecret is every node's sip.secret and sip.auth.secret when several
// share the subscribers: a challenge from one verifies on another, and
// so do Record-Route tokens (README, "Running on several hosts").
const nodesSecret = "bench-itsp-shared-secret"

// NodeResult is one sipd of several sharing the subscribers.
type NodeResult struct {
	Name          string  `json:"name"`
	SIP           string  `json:"sip"`
	CPURampAvg    float64 `json:"cpu_ramp_avg"` // cores during the registration ramp
	CPUHoldAvg    float64 `json:"cpu_hold_avg"` // cores during the hold
	RSSRegistered uint64  `json:"rss_registered"`
}

// RedisResult is the shared location table's server over a run: its
// memory from INFO (used_memory: what the data takes, not the process's
// RSS) and its CPU from /proc.
type RedisResult struct {
	// UsedMemoryIdle is before the ramp, UsedMemoryRegistered 2 s after
	// it; BytesPerContact is their difference over the subscribers,
	// each of whom has one contact (a hash) and one AoR set.
	UsedMemoryIdle       uint64  `json:"used_memory_idle"`
	UsedMemoryRegistered uint64  `json:"used_memory_registered"`
	BytesPerContact      float64 `json:"bytes_per_contact"`
	Keys                 int64   `json:"keys"` // in db 0 after the ramp
	RSSRegistered        uint64  `json:"rss_registered"`
	// CPURampAvg is redis-server's cores during the ramp, and
	// CPUUsPerRegistration its CPU time per registration there (each is
	// a REGISTER with credentials, after a challenge sipd answers alone).
	CPURampAvg           float64 `json:"cpu_ramp_avg"`
	CPUUsPerRegistration float64 `json:"cpu_us_per_registration"`
	CPUHoldAvg           float64 `json:"cpu_hold_avg"`
}

// projected is used_memory for n contacts on this run's line: idle plus
// n times the bytes per contact.
func (x *RedisResult) projected(n float64) float64 {
	return float64(x.UsedMemoryIdle) + n*x.BytesPerContact
}

// checkNodes checks Proxies against Store.
func (o Options) checkNodes() error {
	switch {
	case o.Store != "" && o.Store != "file" && o.Store != "redis":
		return fmt.Errorf("--store %q: want file or redis", o.Store)
	case o.Proxies > 1 && o.Store != "redis":
		return errors.New("--proxies above 1 needs --store redis: nodes share the location table there")
	case o.Proxies < 0 || o.Proxies > 8:
		return fmt.Errorf("--proxies %d: want 1 to 8", o.Proxies)
	}
	return nil
}

// startNodes starts k sipd on users, sharing rds's location table when
// it is set. With more than one, each has its own state directory and
// they share the secrets. It returns those started so far on error.
func startNodes(ctx context.Context, o Options, dir, users string, rds *redisNode, k int) ([]*sipdrun.Sipd, error) {
	var nodes []*sipdrun.Sipd
	for i := range k {
		cfg, err := sipdConfig(o.Media)
		if err != nil {
			return nodes, err
		}
		cfg.SIP.UsersFile = users
		name := "sipd"
		if k > 1 {
			name = nodeName(i)
			cfg.StateDir = filepath.Join(dir, name+"-state")
			cfg.SIP.Secret, cfg.SIP.Auth.Secret = nodesSecret, nodesSecret
		}
		if rds != nil {
			cfg.SIP.Registrar.Store = rds.srv.URL
		}
		d, err := sipdrun.Start(ctx, cfg, sipdrun.Options{Binary: o.Sipd, Dir: dir, Name: name})
		if err != nil {
			return nodes, fmt.Errorf("%s: %w", name, err)
		}
		nodes = append(nodes, d)
	}
	return nodes, nil
}

func nodeName(i int) string { return "sipd" + strconv.Itoa(i) }

// rampProcs names the processes whose CPU the ramp is measured over: the
// nodes and redis-server.
func rampProcs(nodes []*sipdrun.Sipd, rds *redisNode) map[string]int {
	m := map[string]int{}
	for i, d := range nodes {
		m[nodeName(i)] = d.PID()
	}
	if rds != nil {
		m["redis"] = rds.pid()
	}
	return m
}

// nodesRSS sums the nodes' RSS.
func nodesRSS(nodes []*sipdrun.Sipd) uint64 {
	var sum uint64
	for _, d := range nodes {
		sum += rssBytes(d.PID())
	}
	return sum
}

// redisNode is the redis-server of a run with --store redis, and a
// client for its INFO.
type redisNode struct {
	srv *redistest.Server
	c   *redis.Client
}

func startRedis(dir string) (*redisNode, error) {
	srv, err := redistest.Launch(dir)
	if err != nil {
		return nil, err
	}
	opt, err := redis.ParseURL(srv.URL)
	if err != nil {
		srv.Stop()
		return nil, fmt.Errorf("redis url: %w", err)
	}
	return &redisNode{srv: srv, c: redis.NewClient(opt)}, nil
}

func (x *redisNode) stop() {
	x.c.Close()
	x.srv.Stop()
}

// pid is redis-server's PID, 0 without one.
func (x *redisNode) pid() int {
	if x == nil {
		return 0
	}
	return x.srv.PID()
}

// info reads one field of an INFO section as a number.
func (x *redisNode) info(ctx context.Context, section, field string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	text, err := x.c.Info(ctx, section).Result()
	if err != nil {
		return "", fmt.Errorf("redis INFO %s: %w", section, err)
	}
	v, ok := infoField(text, field)
	if !ok {
		return "", fmt.Errorf("redis INFO %s: no %s", section, field)
	}
	return v, nil
}

// infoField finds "field:value" in INFO's text.
func infoField(text, field string) (string, bool) {
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v, true
		}
	}
	return "", false
}

// keyspaceKeys reads the key count of an INFO keyspace entry,
// "keys=N,expires=N,avg_ttl=N".
func keyspaceKeys(v string) (int64, bool) {
	for kv := range strings.SplitSeq(v, ",") {
		if n, ok := strings.CutPrefix(kv, "keys="); ok {
			k, err := strconv.ParseInt(n, 10, 64)
			return k, err == nil && k >= 0
		}
	}
	return 0, false
}

// usedMemory is INFO memory's used_memory.
func (x *redisNode) usedMemory(ctx context.Context) (uint64, error) {
	v, err := x.info(ctx, "memory", "used_memory")
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("redis used_memory %q: %w", v, err)
	}
	return n, nil
}

// before takes the figures before the ramp.
func (x *redisNode) before(ctx context.Context) (*RedisResult, error) {
	m, err := x.usedMemory(ctx)
	if err != nil {
		return nil, err
	}
	return &RedisResult{UsedMemoryIdle: m}, nil
}

// registered fills res after the ramp of n registrations, which took
// rampSeconds with redis-server at cores on average.
func (x *redisNode) registered(ctx context.Context, res *RedisResult, n int, rampSeconds, cores float64) error {
	m, err := x.usedMemory(ctx)
	if err != nil {
		return err
	}
	res.UsedMemoryRegistered = m
	if m > res.UsedMemoryIdle && n > 0 {
		res.BytesPerContact = float64(m-res.UsedMemoryIdle) / float64(n)
	}
	if v, err := x.info(ctx, "keyspace", "db0"); err == nil {
		res.Keys, _ = keyspaceKeys(v)
	}
	res.RSSRegistered = rssBytes(x.pid())
	res.CPURampAvg = cores
	if n > 0 {
		res.CPUUsPerRegistration = cores * rampSeconds * 1e6 / float64(n)
	}
	return nil
}
