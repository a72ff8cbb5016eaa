package bpf

import (
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"sipxdp/internal/testenv"
)

// requireRoot skips without root, except under CI where it fails: loading
// BPF programs and creating namespaces needs CAP_BPF and CAP_NET_ADMIN.
func requireRoot(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
}

// inFreshNetns runs fn on a locked OS thread inside a new, anonymous
// network namespace that holds only lo (ifindex 1) and a veth device
// (ifindex 2), matching fixtures.IfIn and fixtures.IfOther. The namespace
// has no routes, so FIB lookups fail the same way on every machine.
// It vanishes with the last handle.
func inFreshNetns(t testing.TB, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("create netns: %v", err)
	}
	defer ns.Close()
	defer func() {
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime kills it on exit
			// instead of reusing a thread stuck in the wrong namespace.
			t.Errorf("restore netns: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	// A veth pair, not a dummy: this kernel has no dummy driver.
	pair := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "fx-other"}, PeerName: "fx-peer"}
	if err := netlink.LinkAdd(pair); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	// Which end of the pair gets ifindex 2 is the kernel's choice.
	for _, name := range []string{"fx-other", "fx-peer"} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatalf("find veth: %v", err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatalf("set veth up: %v", err)
		}
	}
	if _, err := netlink.LinkByIndex(2); err != nil {
		t.Fatalf("no device with ifindex 2, which the fixtures expect: %v", err)
	}
	fn()
}
