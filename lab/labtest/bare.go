package labtest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/tools"
	"github.com/netdiag/netdiag/lab"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Bare is a set of bare network namespaces a test wires itself, for shapes
// the lab does not build: two hosts and a router, Docker-style rule sets,
// IPv6 paths. Its namespaces carry the lab's prefix (ndl-INSTANCE-NAME), so
// `netdiag lab down` finds leftovers, and are removed when the test ends.
type Bare struct {
	t        testing.TB
	Instance string
	ns       map[string]*netns.NS
}

// NewBare creates the named namespaces with loopback up and IPv6 usable at
// once (no duplicate address detection, no router solicitations). A test may
// make several sets with one prefix, as long as their names differ.
func NewBare(t testing.TB, prefix string, names ...string) *Bare {
	t.Helper()
	RequireRoot(t)
	b := &Bare{t: t, Instance: Instance(prefix), ns: map[string]*netns.NS{}}
	if _, made := liveBare.LoadOrStore(b.Instance, true); !made {
		removeStale(t, prefix)
	}
	t.Cleanup(func() {
		for name, n := range b.ns {
			n.Close()
			if err := netns.DeleteNamed(b.Name(name)); err != nil {
				t.Errorf("remove namespace %s: %v", b.Name(name), err)
			}
		}
	})
	for _, name := range names {
		n, err := netns.CreateNamed(b.Name(name))
		if err != nil {
			t.Fatal(err)
		}
		b.ns[name] = n
		for _, kv := range [][2]string{
			{"ipv6.conf.all.disable_ipv6", "0"}, {"ipv6.conf.default.disable_ipv6", "0"},
			{"ipv6.conf.all.accept_dad", "0"}, {"ipv6.conf.default.accept_dad", "0"},
			{"ipv6.conf.default.router_solicitations", "0"}, {"ipv6.conf.default.accept_ra", "0"},
		} {
			b.Sysctl(name, kv[0], kv[1])
		}
		h := b.handle(name)
		lo, err := h.LinkByName("lo")
		if err == nil {
			err = h.LinkSetUp(lo)
		}
		h.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// liveBare are the instances this process made: never stale.
var liveBare sync.Map

// removeStale removes namespaces of earlier runs of this test package whose
// process is gone (a test killed by its timeout runs no cleanup).
func removeStale(t testing.TB, prefix string) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, old := range lab.Instances() {
		rest, ok := strings.CutPrefix(old, prefix)
		if !ok {
			continue
		}
		if pid, err := strconv.Atoi(rest); err == nil && (pid == os.Getpid()%1000000 || !alive(pid)) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			_, err := lab.Down(ctx, old, log)
			cancel()
			if err != nil {
				t.Fatalf("remove leftovers of %s: %v", old, err)
			}
		}
	}
}

// Name is the namespace's full name.
func (b *Bare) Name(name string) string { return lab.NamePrefix + b.Instance + "-" + name }

// Path is the namespace's path (/run/netns/...).
func (b *Bare) Path(name string) string { return b.NS(name).Path() }

// NS returns an open namespace.
func (b *Bare) NS(name string) *netns.NS {
	n, ok := b.ns[name]
	if !ok {
		b.t.Fatalf("no namespace %q", name)
	}
	return n
}

func (b *Bare) handle(name string) *netlink.Handle {
	h, err := b.NS(name).Handle()
	if err != nil {
		b.t.Fatal(err)
	}
	return h
}

// Sysctl sets a net sysctl ("ipv6.conf.all.forwarding") in a namespace.
func (b *Bare) Sysctl(name, key, value string) {
	b.t.Helper()
	if err := b.NS(name).WriteSysctl(key, value); err != nil {
		b.t.Fatal(err)
	}
}

// Link joins two namespaces with a veth pair of the given MTU, up, with the
// given addresses (CIDR) on each end.
func (b *Bare) Link(aName, aIf string, aAddrs []string, bName, bIf string, bAddrs []string, mtu int) {
	b.t.Helper()
	ha, hb := b.handle(aName), b.handle(bName)
	defer ha.Close()
	defer hb.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aIf, MTU: mtu}, PeerName: bIf, PeerNamespace: netlink.NsFd(b.NS(bName).Fd())}
	if err := ha.LinkAdd(veth); err != nil {
		b.t.Fatalf("veth %s/%s: %v", aIf, bIf, err)
	}
	for _, side := range []struct {
		h     *netlink.Handle
		name  string
		addrs []string
	}{{ha, aIf, aAddrs}, {hb, bIf, bAddrs}} {
		l, err := side.h.LinkByName(side.name)
		if err != nil {
			b.t.Fatal(err)
		}
		if err := side.h.LinkSetMTU(l, mtu); err != nil {
			b.t.Fatal(err)
		}
		for _, a := range side.addrs {
			addr, err := netlink.ParseAddr(a)
			if err != nil {
				b.t.Fatal(err)
			}
			if err := side.h.AddrAdd(l, addr); err != nil {
				b.t.Fatalf("address %s on %s: %v", a, side.name, err)
			}
		}
		if err := side.h.LinkSetUp(l); err != nil {
			b.t.Fatal(err)
		}
	}
	// The kernel brings a link's queue up a moment after the link (its
	// link watcher runs up to a second later); what is sent before that
	// (the first neighbour solicitation) is lost, as on a port that just
	// came up. Tests want the steady state, so wait for it.
	for _, side := range []struct {
		h    *netlink.Handle
		name string
	}{{ha, aIf}, {hb, bIf}} {
		deadline := time.Now().Add(3 * time.Second)
		for {
			l, err := side.h.LinkByName(side.name)
			if err == nil && l.Attrs().OperState == netlink.OperUp && !tentative(side.h, l) {
				break
			}
			if time.Now().After(deadline) {
				b.t.Fatalf("%s did not come up", side.name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// tentative reports an IPv6 address of the link that cannot be used yet
// (binding it fails until the kernel has finished bringing it up).
func tentative(h *netlink.Handle, l netlink.Link) bool {
	addrs, err := h.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		return true
	}
	for _, a := range addrs {
		if a.Flags&unix.IFA_F_TENTATIVE != 0 {
			return true
		}
	}
	return false
}

// Route adds a route ("default" or a prefix) via a gateway in a namespace.
func (b *Bare) Route(name, dst, via string) {
	b.t.Helper()
	h := b.handle(name)
	defer h.Close()
	gw := net.ParseIP(via)
	r := &netlink.Route{Gw: gw}
	if dst != "default" {
		_, n, err := net.ParseCIDR(dst)
		if err != nil {
			b.t.Fatal(err)
		}
		r.Dst = n
	} else if gw.To4() == nil {
		_, r.Dst, _ = net.ParseCIDR("::/0")
	}
	if err := h.RouteAdd(r); err != nil {
		b.t.Fatalf("route %s via %s in %s: %v", dst, via, name, err)
	}
}

// Rules loads iptables-restore (or ip6tables-restore, for tool
// "ip6tables") input into a namespace.
func (b *Bare) Rules(name, tool, text string) {
	b.t.Helper()
	bin, err := tools.Find(tool + "-restore")
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.NS(name).Run(ctx, []byte(text), bin, "-w", "5"); err != nil {
		b.t.Fatalf("%s-restore in %s: %v", tool, name, err)
	}
}

// Serve listens on addr in a namespace ("tcp" with ":8080" is both
// families, "tcp4" IPv4 only) and accepts connections until the test ends;
// sink makes it read and discard what it is sent (a bulk receiver), else it
// closes each at once.
func (b *Bare) Serve(name, network, addr string, sink bool) netip.AddrPort {
	b.t.Helper()
	l, err := b.NS(name).Listen(network, addr)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if !sink {
				c.Close()
				continue
			}
			go func() {
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	return netip.MustParseAddrPort(l.Addr().String())
}
