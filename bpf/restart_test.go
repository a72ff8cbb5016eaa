package bpf

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"sipxdp/internal/childproc"
	"sipxdp/internal/netns"
)

// The daemon TestRestart kills is the re-executed test binary in role
// restartRole, run as a whole process in the relay namespace by childproc.
const restartRole = "_bpf_restart_daemon"

func init() { childproc.Register(restartRole, restartChild) }

func TestMain(m *testing.M) { childproc.Main(m) }

// restartParams is the daemon's parameters.
type restartParams struct{ PinPath string }

// restartChild is the daemon stand-in for TestRestart: it attaches, pins,
// installs the flow, says "ready" with the hook it chose and waits to be
// killed.
func restartChild() int {
	var p restartParams
	if err := childproc.Params(&p); err != nil {
		childproc.Emit("ready", nil, err)
		return 2
	}
	k, err := Open(Config{Interfaces: []string{netns.RelayA, netns.RelayB}, PinPath: p.PinPath})
	if err != nil {
		childproc.Emit("ready", nil, err)
		return 1
	}
	if err := k.Upsert(lineFlow(families[0])); err != nil {
		childproc.Emit("ready", nil, err)
		return 1
	}
	childproc.Emit("ready", k.Name(), nil)
	time.Sleep(time.Minute) // bounded: the parent kills us long before
	childproc.Emit("result", nil, errors.New("not killed"))
	return 1
}

func linkID(t *testing.T, pin string) uint32 {
	t.Helper()
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		t.Fatalf("load pinned link: %v", err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	return uint32(info.ID)
}

// TestRestart kills the process that attached the programs in the middle
// of a stream: the pinned links and maps keep relaying with no loss, a new
// Open takes over the same links and flow counters, and Uninstall stops it.
func TestRestart(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t)
	pinPath := filepath.Join(t.TempDir(), "pins")
	t.Cleanup(func() {
		if err := Uninstall(pinPath); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	fam := families[0]
	flow := lineFlow(fam)
	recv := tp.udp(t, nsReceiver, flow.Dst)
	send := tp.udp(t, nsSender, flow.Peer)

	child, err := childproc.Start(childproc.Spec{Role: restartRole, Name: "daemon",
		Params: restartParams{PinPath: pinPath}, NetNS: tp.Relay.Path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(child.Kill) // by PID: the child we started; harmless once dead
	m, err := child.Await(context.Background(), "ready", 30*time.Second)
	if err != nil {
		t.Fatalf("child not ready: %v", err)
	}
	var hook string
	if err := m.Decode(&hook); err != nil {
		t.Fatal(err)
	}
	t.Logf("child %d: ready, %s", child.PID(), hook)
	if hook != "tc" {
		t.Errorf("child chose %q, want tc on veth", hook)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	pin := linkPin(pinPath, ModeTC, netns.RelayA)
	idBefore := linkID(t, pin)

	// 3,000 packets over about 1.5 s; the child dies after the first 1,000.
	const total, killAt = 3000, 1000
	errc := make(chan error, 1)
	go func() {
		for seq := 0; seq < total; seq++ {
			if seq == killAt {
				if err := child.Crash(); err != nil {
					errc <- err
					return
				}
			}
			if err := stream(send, flow.Key.Local, seq, 1); err != nil {
				errc <- err
				return
			}
			time.Sleep(500 * time.Microsecond)
		}
		errc <- nil
	}()
	seen := receive(t, recv, flow.Out, total, 20*time.Second)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		t.Logf("child gone: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("child still running after SIGKILL")
	}
	if len(seen) != total {
		t.Fatalf("received %d of %d packets across the kill", len(seen), total)
	}
	t.Logf("received all %d packets; the child was SIGKILLed after %d", total, killAt)

	// With no daemon, relayctl reads the pinned maps directly.
	pm, err := OpenPinnedMaps(pinPath)
	if err != nil {
		t.Fatalf("open pinned maps with no daemon: %v", err)
	}
	if fs, err := pm.Flows(); err != nil || len(fs) != 1 || fs[0].Stats.Packets != total {
		t.Errorf("pinned flows with no daemon: %+v, %v", fs, err)
	}
	if c, err := pm.Counters(); err != nil || c["redirect"] != total {
		t.Errorf("pinned counters with no daemon: redirect %d, %v; want %d", c["redirect"], err, total)
	}
	pm.Close()

	// A new daemon takes over the same pinned link and the flow.
	var k *Kernel
	tp.in(t, nsRelay, func() error {
		var err error
		k, err = Open(Config{Interfaces: []string{netns.RelayA, netns.RelayB}, PinPath: pinPath})
		return err
	})
	defer k.Close()
	if k.Name() != ModeTC || !strings.Contains(k.Reason(), "veth") {
		t.Errorf("reopen chose %s (%s), want tc because of veth", k.Name(), k.Reason())
	}
	if id := linkID(t, pin); id != idBefore {
		t.Errorf("pinned link replaced (id %d -> %d), want the same link updated", idBefore, id)
	}
	st, err := k.Stats(flow.Key)
	if err != nil {
		t.Fatalf("flow lost across restart: %v", err)
	}
	if st.Packets != total || st.Bytes != total*172 {
		t.Errorf("flow stats after restart %+v, want %d packets", st, total)
	}
	flows, err := k.Flows()
	if err != nil || len(flows) != 1 || flows[0].Flow.Key != flow.Key {
		t.Errorf("flows after restart: %+v, %v", flows, err)
	}
	if err := k.Upsert(flow); err != nil { // the engine re-syncing its truth
		t.Fatal(err)
	}
	if err := stream(send, flow.Key.Local, total, 100); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, recv, flow.Out, 100, 5*time.Second); len(got) != 100 {
		t.Errorf("after reopen received %d of 100", len(got))
	}
	if st, _ := k.Stats(flow.Key); st.Packets != total+100 {
		t.Errorf("counters not carried over the re-sync: %d packets, want %d", st.Packets, total+100)
	}

	// Uninstall detaches: nothing is relayed any more.
	k.Close()
	if err := Uninstall(pinPath); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pinPath); !os.IsNotExist(err) {
		t.Errorf("pin path still there after Uninstall: %v", err)
	}
	if err := stream(send, flow.Key.Local, total+100, 20); err != nil {
		t.Fatal(err)
	}
	recv.SetReadDeadline(time.Now().Add(time.Second))
	if n, src, err := recv.ReadFromUDPAddrPort(make([]byte, 2048)); err == nil {
		t.Errorf("relayed a packet (%d bytes from %v) after Uninstall", n, src)
	}
}
