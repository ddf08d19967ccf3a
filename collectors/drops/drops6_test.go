package drops_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdiag/netdiag/collectors/drops"
	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/lab/labtest"
)

// The IPv6 test network: a client and a server with a router between them,
// all in namespaces of the test's own, addresses only in 2001:2::/48.
var (
	client6 = netip.MustParseAddr("2001:2:ff:1::1")
	router6 = netip.MustParseAddr("2001:2:ff:1::2")
	rtSrv6  = netip.MustParseAddr("2001:2:ff:2::1")
	server6 = netip.MustParseAddr("2001:2:ff:2::2")
)

// prefix6 names the test's namespaces (ndl-t6dropPID-...): `netdiag lab
// down --all` finds them, and no other test uses the name.
const prefix6 = "t6drop"

// net6 is one copy of the network: client a, router r, server b.
type net6 struct {
	a, r, b *netns.NS
	bName   string
	rToB    string // the router's link towards the server
}

// run runs a program inside the namespace (an argument list, no shell).
func run(t *testing.T, n *netns.NS, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.Output(ctx, name, args...); err != nil {
		t.Fatal(err)
	}
}

// buildNet6 builds a copy of the network; suffix tells copies apart (their
// addresses are the same).
func buildNet6(t *testing.T, suffix string) *net6 {
	t.Helper()
	a, r, b := "a"+suffix, "r"+suffix, "b"+suffix
	bare := labtest.NewBare(t, prefix6, a, r, b)
	bare.Sysctl(r, "ipv6.conf.all.forwarding", "1")
	p64 := func(a netip.Addr) []string { return []string{netip.PrefixFrom(a, 64).String()} }
	bare.Link(a, "a0", p64(client6), r, "r0", p64(router6), 1500)
	bare.Link(b, "b0", p64(server6), r, "r1", p64(rtSrv6), 1500)
	bare.Route(a, "default", router6.String())
	bare.Route(b, "default", rtSrv6.String())
	// The path carries IPv6 end to end once a connect to a closed port on
	// the server is refused.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := dialFrom(bare.NS(a), 0, netip.AddrPortFrom(server6, 9))
		if errors.Is(err, unix.ECONNREFUSED) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the test network does not carry IPv6 from client to server: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &net6{a: bare.NS(a), r: bare.NS(r), b: bare.NS(b), bName: bare.Name(b), rToB: "r1"}
}

// dialFrom connects from the namespace, from a given source port when it is
// not 0, and gives up after 400ms (a dropped SYN is never answered).
func dialFrom(n *netns.NS, lport uint16, to netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	return n.Do(func() error {
		d := net.Dialer{}
		if lport != 0 {
			d.LocalAddr = &net.TCPAddr{Port: int(lport)}
		}
		c, err := d.DialContext(ctx, "tcp", to.String())
		if err == nil {
			c.Close()
		}
		return err
	})
}

// ping6 sends one ICMPv6 echo request of size bytes (ICMPv6 header
// included) from a raw socket in the namespace, with the given hop limit
// and, when ext is set, a hop-by-hop and a destination options header.
func ping6(t *testing.T, n *netns.NS, to netip.Addr, size, hops int, ext bool) {
	t.Helper()
	fd, err := n.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_ICMPV6)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, hops); err != nil {
		t.Fatalf("set hop limit: %v", err)
	}
	if ext {
		// 8 bytes each: next header (the kernel's), length 0, then a
		// PadN option of 4 bytes.
		opts := string([]byte{0, 0, 1, 4, 0, 0, 0, 0})
		for _, o := range []int{unix.IPV6_HOPOPTS, unix.IPV6_DSTOPTS} {
			if err := unix.SetsockoptString(fd, unix.IPPROTO_IPV6, o, opts); err != nil {
				t.Fatalf("set extension header %d: %v", o, err)
			}
		}
	}
	msg := make([]byte, size)
	msg[0] = 128 // echo request; the kernel fills the checksum
	binary.BigEndian.PutUint16(msg[4:], uint16(os.Getpid()))
	binary.BigEndian.PutUint16(msg[6:], 1)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrInet6{Addr: to.As16()}); err != nil {
		t.Fatalf("send echo request: %v", err)
	}
}

// sendUDP6 sends one datagram of size bytes from the namespace.
func sendUDP6(t *testing.T, n *netns.NS, to netip.AddrPort, size int) {
	t.Helper()
	fd, err := n.Socket(unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_UDP)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, make([]byte, size), 0, &unix.SockaddrInet6{Addr: to.Addr().As16(), Port: int(to.Port())}); err != nil {
		t.Fatalf("send datagram: %v", err)
	}
}

// rule adds an ip6tables rule in the namespace for the rest of the test.
func rule(t *testing.T, n *netns.NS, chain string, match ...string) {
	t.Helper()
	args := append(append([]string{"-w", "-A", chain}, match...), "-j", "DROP")
	run(t, n, "ip6tables", args...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		del := append(append([]string{"-w", "-D", chain}, match...), "-j", "DROP")
		if _, err := n.Output(ctx, "ip6tables", del...); err != nil {
			t.Errorf("remove rule: %v", err)
		}
	})
}

func findDrop(res *drops.Result, keep func(d *drops.Drop) bool) *drops.Drop {
	for i := range res.Drops {
		if keep(&res.Drops[i]) {
			return &res.Drops[i]
		}
	}
	return nil
}

// settle gives a packet sent without an answer to wait for the time to
// cross the network before the watch stops.
func settle() { time.Sleep(150 * time.Millisecond) }

func TestDropsIPv6(t *testing.T) {
	labtest.RequireRoot(t)
	n := buildNet6(t, "")
	watched := map[uint64]string{n.a.Inode(): "source", n.r.Inode(): "node", n.b.Inode(): "peer"}
	tcp := func(port uint16) []drops.Flow {
		return []drops.Flow{{Proto: "tcp", Src: client6, Dst: server6, DPort: port}}
	}
	ebpf := drops.Options{Method: "ebpf"}
	mustEBPF := func(t *testing.T, res *drops.Result) {
		t.Helper()
		if res.Method != "ebpf" {
			t.Fatalf("method %s: %s", res.Method, res.Note)
		}
	}
	// Every drop reported must be of the flows watched.
	onlyFlow := func(t *testing.T, res *drops.Result, proto string, port uint16) {
		t.Helper()
		for _, d := range res.Drops {
			near, far, p := d.Src, d.Dst, d.DPort
			if d.Answer {
				near, far, p = d.Dst, d.Src, d.SPort
			}
			if d.Proto != proto || near != client6.String() || far != server6.String() || p != port || d.Family != 6 {
				t.Errorf("a drop of another flow was reported: %+v", d)
			}
		}
	}

	l, err := n.b.Listen("tcp", netip.AddrPortFrom(server6, 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if err := dialFrom(n.a, 0, netip.AddrPortFrom(server6, 8080)); err != nil {
		t.Fatalf("no connection to the server: %v", err)
	}

	t.Run("netfilter-drop", func(t *testing.T) {
		rule(t, n.b, "INPUT", "-p", "tcp", "--dport", "8080")
		tr := drops.Start(tcp(8080), watched, ebpf)
		dialFrom(n.a, 0, netip.AddrPortFrom(server6, 8080))
		res := tr.Stop()
		mustEBPF(t, res)
		d := findDrop(res, func(d *drops.Drop) bool { return d.Reason == "NETFILTER_DROP" })
		if d == nil {
			t.Fatalf("no NETFILTER_DROP: %+v", res)
		}
		// The router took one off the hop limit.
		if d.Where != "peer" || d.Netns != n.b.Inode() || d.Proto != "tcp" || d.Family != 6 || d.Src != client6.String() || d.Dst != server6.String() ||
			d.DPort != 8080 || d.SPort == 0 || d.Packet != "SYN" || d.Answer || d.TTL != 63 || d.Expected() {
			t.Errorf("drop: %+v", d)
		}
		onlyFlow(t, res, "tcp", 8080)
	})

	t.Run("no-socket", func(t *testing.T) {
		tr := drops.Start(tcp(9999), watched, ebpf)
		dialFrom(n.a, 0, netip.AddrPortFrom(server6, 9999))
		res := tr.Stop()
		mustEBPF(t, res)
		d := findDrop(res, func(d *drops.Drop) bool { return d.Reason == "NO_SOCKET" })
		if d == nil || d.Where != "peer" || d.Packet != "SYN" || d.DPort != 9999 {
			t.Fatalf("no NO_SOCKET of the SYN in the server: %+v", res)
		}
		onlyFlow(t, res, "tcp", 9999)
	})

	t.Run("any-namespace", func(t *testing.T) {
		// Only the client's namespace is given. A twin network carries the
		// very same addresses and the same rule: its drops are not the
		// probe's, only the probe's own connection (its source port) is.
		rule(t, n.b, "INPUT", "-p", "tcp", "--dport", "8080")
		twin := buildNet6(t, "2")
		rule(t, twin.b, "INPUT", "-p", "tcp", "--dport", "8080")
		const probePort = 40010
		only := map[uint64]string{n.a.Inode(): "source"}
		tr := drops.Start(tcp(8080), only, drops.Options{Method: "ebpf", AnyNamespace: true})
		for port := uint16(40001); port <= 40003; port++ {
			dialFrom(twin.a, port, netip.AddrPortFrom(server6, 8080))
		}
		dialFrom(n.a, probePort, netip.AddrPortFrom(server6, 8080))
		res := tr.Stop()
		mustEBPF(t, res)
		d := findDrop(res, func(d *drops.Drop) bool { return d.Reason == "NETFILTER_DROP" })
		if !res.AnyNamespace || d == nil || d.Where != "" || d.Netns != n.b.Inode() || d.NetnsName != n.bName || d.SPort != probePort || d.Packet != "SYN" {
			t.Fatalf("drop in an unwatched namespace: %+v", res)
		}
		for _, x := range res.Drops {
			if x.Netns != n.b.Inode() || x.SPort != probePort {
				t.Errorf("a drop of the twin network was attributed to the probe: %+v", x)
			}
		}
	})

	t.Run("echo", func(t *testing.T) {
		rule(t, n.b, "INPUT", "-p", "ipv6-icmp", "--icmpv6-type", "echo-request")
		// "icmp6" names ICMPv6; callers name ping "icmp" whatever the
		// family, which between IPv6 addresses means the same.
		for _, proto := range []string{"icmp6", "icmp"} {
			for _, ext := range []bool{false, true} {
				tr := drops.Start([]drops.Flow{{Proto: proto, Src: client6, Dst: server6}}, watched, ebpf)
				ping6(t, n.a, server6, 64, 64, ext)
				settle()
				res := tr.Stop()
				mustEBPF(t, res)
				d := findDrop(res, func(d *drops.Drop) bool { return d.Reason == "NETFILTER_DROP" })
				if d == nil || d.Where != "peer" || d.Proto != "icmp6" || d.Packet != "echo request" || d.Answer || d.DPort != 0 || d.TTL != 63 {
					t.Errorf("flow %s, extension headers %v: no NETFILTER_DROP of the echo request: %+v", proto, ext, res)
				}
				onlyFlow(t, res, "icmp6", 0)
			}
		}
	})

	t.Run("hop-limit", func(t *testing.T) {
		// A hop probe expiring at the router is dropped there on purpose.
		tr := drops.Start([]drops.Flow{{Proto: "icmp6", Src: client6, Dst: server6}}, watched, ebpf)
		ping6(t, n.a, server6, 64, 1, false)
		settle()
		res := tr.Stop()
		mustEBPF(t, res)
		d := findDrop(res, func(d *drops.Drop) bool { return d.Where == "node" })
		if d == nil || d.TTL != 1 || d.Packet != "echo request" || !d.Expected() {
			t.Fatalf("no expected drop of the expired echo request at the router: %+v", res)
		}
		onlyFlow(t, res, "icmp6", 0)
	})

	t.Run("first-fragment", func(t *testing.T) {
		// A datagram larger than the link leaves in fragments; only the
		// first carries the UDP header, and that is what the router's
		// rule and the program see.
		rule(t, n.r, "FORWARD", "-p", "udp", "--dport", "7777")
		tr := drops.Start([]drops.Flow{{Proto: "udp", Src: client6, Dst: server6, DPort: 7777}}, watched, ebpf)
		sendUDP6(t, n.a, netip.AddrPortFrom(server6, 7777), 3000)
		settle()
		res := tr.Stop()
		mustEBPF(t, res)
		d := findDrop(res, func(d *drops.Drop) bool { return d.Reason == "NETFILTER_DROP" })
		if d == nil || d.Where != "node" || d.Packet != "UDP datagram" || d.DPort != 7777 || d.SPort == 0 {
			t.Fatalf("no NETFILTER_DROP of the first fragment at the router: %+v", res)
		}
		onlyFlow(t, res, "udp", 7777)
	})

	t.Run("packet-too-big", func(t *testing.T) {
		run(t, n.r, "ip", "link", "set", n.rToB, "mtu", "1280")
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := n.r.Output(ctx, "ip", "link", "set", n.rToB, "mtu", "1500"); err != nil {
				t.Errorf("restore the MTU: %v", err)
			}
		})
		tr := drops.Start([]drops.Flow{{Proto: "icmp6", Src: client6, Dst: server6}}, watched, ebpf)
		ping6(t, n.a, server6, 1400, 64, false)
		settle()
		res := tr.Stop()
		mustEBPF(t, res)
		d := findDrop(res, func(d *drops.Drop) bool { return d.Reason == "PKT_TOO_BIG" })
		if d == nil || d.Where != "node" || d.Packet != "echo request" || d.Expected() {
			t.Fatalf("no PKT_TOO_BIG at the router: %+v", res)
		}
	})

	t.Run("tracefs-fallback", func(t *testing.T) {
		rule(t, n.b, "INPUT", "-p", "tcp", "--dport", "8080")
		tr := drops.Start(tcp(8080), watched, drops.Options{Method: "tracefs"})
		dialFrom(n.a, 0, netip.AddrPortFrom(server6, 8080))
		res := tr.Stop()
		if res.Method != "tracefs" || !strings.Contains(res.Note, "IPv6") {
			t.Fatalf("fallback: %+v", res)
		}
		if findDrop(res, func(d *drops.Drop) bool { return d.Reason == "NETFILTER_DROP" && d.Proto == "ipv6" && d.Family == 6 }) == nil {
			t.Errorf("tracefs saw no IPv6 NETFILTER_DROP: %+v", res)
		}
	})
}
