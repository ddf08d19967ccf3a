package collectors

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"golang.org/x/sys/unix"
)

// icmpProber sends ICMP (or ICMPv6) echo requests from a raw socket opened
// inside a namespace and matches what comes back (echo replies, and the
// errors routers send: unreachable, fragmentation needed / packet too big,
// time exceeded) to the probe that caused it, by echo id and sequence. ping,
// the path-MTU probe and the hop probe share it.
type icmpProber struct {
	f    *os.File
	rc   syscall.RawConn
	v6   bool
	zone uint32 // interface index of a link-local destination
	id   uint16
	seq  uint16
	wmu  sync.Mutex
	mu   sync.Mutex
	wait map[uint16]chan icmpAnswer
	done chan struct{}
}

// icmpAnswer is what came back for one probe.
type icmpAnswer struct {
	From netip.Addr
	// Kind is "echo-reply", "unreachable", "frag-needed" (IPv4),
	// "packet-too-big" (IPv6) or "time-exceeded".
	Kind string
	Code int
	MTU  int // next-hop MTU of a fragmentation-needed / packet-too-big
	RTT  time.Duration
	at   time.Time
}

// tooBig reports an answer that says the probe exceeded a link's MTU.
func (a icmpAnswer) tooBig() bool { return a.Kind == "frag-needed" || a.Kind == "packet-too-big" }

// ipHeaderLen is the size of the IP header of a family, which probe sizes
// include (as tracepath and ping -s count them).
func ipHeaderLen(v6 bool) int {
	if v6 {
		return 40
	}
	return 20
}

// newICMPProber opens the raw socket for the family of dst. pmtuProbe sets
// DF (IPv4) / DONTFRAG (IPv6) and makes the kernel ignore its cached path
// MTU: the probe, not the cache, finds out what passes.
func newICMPProber(ns *netns.NS, dst netip.Addr, pmtuProbe bool) (*icmpProber, error) {
	v6 := dst.Is6() && !dst.Is4In6()
	domain, proto := unix.AF_INET, unix.IPPROTO_ICMP
	if v6 {
		domain, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
	}
	fd, err := ns.Socket(domain, unix.SOCK_RAW, proto)
	if err != nil {
		return nil, err
	}
	fail := func(what string, err error) (*icmpProber, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if v6 {
		// Only what answers a probe: no neighbour discovery, no router
		// advertisements.
		var flt unix.ICMPv6Filter
		for i := range flt.Data {
			flt.Data[i] = 0xffffffff
		}
		for _, t := range []int{1, 2, 3, 129} {
			flt.Data[t>>5] &^= 1 << (uint(t) & 31)
		}
		if err := unix.SetsockoptICMPv6Filter(fd, unix.IPPROTO_ICMPV6, unix.ICMPV6_FILTER, &flt); err != nil {
			return fail("set ICMPV6_FILTER", err)
		}
	}
	if pmtuProbe {
		if v6 {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE); err != nil {
				return fail("set IPV6_MTU_DISCOVER", err)
			}
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, 1); err != nil {
				return fail("set IPV6_DONTFRAG", err)
			}
		} else if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE); err != nil {
			return fail("set IP_MTU_DISCOVER", err)
		}
	}
	var zone uint32
	if z := dst.Zone(); z != "" {
		h, err := ns.Handle()
		if err != nil {
			return fail("zone", err)
		}
		l, err := h.LinkByName(z)
		h.Close()
		if err != nil {
			return fail("zone "+z, err)
		}
		zone = uint32(l.Attrs().Index)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return fail("nonblock", err)
	}
	f := os.NewFile(uintptr(fd), "icmp")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &icmpProber{f: f, rc: rc, v6: v6, zone: zone, id: uint16(rand.Uint32()), wait: map[uint16]chan icmpAnswer{}, done: make(chan struct{})}
	go p.readLoop()
	return p, nil
}

func (p *icmpProber) Close() error {
	err := p.f.Close()
	<-p.done
	return err
}

func (p *icmpProber) readLoop() {
	defer close(p.done)
	var perr error
	defer Recover("ICMP reader", &perr)
	buf := make([]byte, 65536)
	for {
		var n int
		var from unix.Sockaddr
		var rerr error
		err := p.rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil || errors.Is(rerr, unix.EBADF) {
			return
		}
		if rerr != nil {
			continue
		}
		var ans icmpAnswer
		var id, seq uint16
		var ok bool
		if p.v6 {
			ans, id, seq, ok = parseICMPv6(buf[:n], from)
		} else {
			ans, id, seq, ok = parseICMPv4(buf[:n])
		}
		if !ok || id != p.id {
			continue
		}
		ans.at = time.Now()
		p.mu.Lock()
		ch := p.wait[seq]
		p.mu.Unlock()
		if ch != nil {
			select {
			case ch <- ans:
			default:
			}
		}
	}
}

// parseICMPv4 reads what a raw IPv4 ICMP socket delivers (the IP header
// first) and finds the echo id and sequence of the probe it answers.
func parseICMPv4(pkt []byte) (ans icmpAnswer, id, seq uint16, ok bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return ans, 0, 0, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < 20 || len(pkt) < ihl+8 {
		return ans, 0, 0, false
	}
	ans.From, _ = netip.AddrFromSlice(pkt[12:16])
	ic := pkt[ihl:]
	typ, code := ic[0], ic[1]
	ans.Code = int(code)
	switch typ {
	case 0: // echo reply
		ans.Kind = "echo-reply"
		return ans, binary.BigEndian.Uint16(ic[4:]), binary.BigEndian.Uint16(ic[6:]), true
	case 3, 11: // destination unreachable, time exceeded: they quote our probe
		q := ic[8:]
		if len(q) < 20 || q[9] != unix.IPPROTO_ICMP {
			return ans, 0, 0, false
		}
		qihl := int(q[0]&0x0f) * 4
		if qihl < 20 || len(q) < qihl+8 || q[qihl] != 8 {
			return ans, 0, 0, false
		}
		ans.Kind = "time-exceeded"
		if typ == 3 {
			ans.Kind = "unreachable"
			if code == 4 {
				ans.Kind = "frag-needed"
				ans.MTU = int(binary.BigEndian.Uint16(ic[6:]))
			}
		}
		return ans, binary.BigEndian.Uint16(q[qihl+4:]), binary.BigEndian.Uint16(q[qihl+6:]), true
	}
	return ans, 0, 0, false
}

// parseICMPv6 reads what a raw ICMPv6 socket delivers (no IP header; the
// sender comes from recvfrom).
func parseICMPv6(ic []byte, from unix.Sockaddr) (ans icmpAnswer, id, seq uint16, ok bool) {
	sa, isV6 := from.(*unix.SockaddrInet6)
	if !isV6 || len(ic) < 8 {
		return ans, 0, 0, false
	}
	ans.From = netip.AddrFrom16(sa.Addr).Unmap()
	typ, code := ic[0], ic[1]
	ans.Code = int(code)
	switch typ {
	case 129: // echo reply
		ans.Kind = "echo-reply"
		return ans, binary.BigEndian.Uint16(ic[4:]), binary.BigEndian.Uint16(ic[6:]), true
	case 1, 2, 3: // unreachable, packet too big, time exceeded: they quote our probe
		q := ic[8:]
		if len(q) < 48 || q[0]>>4 != 6 || q[6] != unix.IPPROTO_ICMPV6 || q[40] != 128 {
			return ans, 0, 0, false
		}
		switch typ {
		case 1:
			ans.Kind = "unreachable"
		case 2:
			ans.Kind = "packet-too-big"
			ans.MTU = int(binary.BigEndian.Uint32(ic[4:]))
		case 3:
			ans.Kind = "time-exceeded"
		}
		return ans, binary.BigEndian.Uint16(q[44:]), binary.BigEndian.Uint16(q[46:]), true
	}
	return ans, 0, 0, false
}

// errProbeTimeout is a probe that got no answer before its deadline.
var errProbeTimeout = errors.New("no answer")

// probe sends one echo request of size bytes (IP header included) with the
// given TTL / hop limit (0: the default) and waits for what comes back.
func (p *icmpProber) probe(ctx context.Context, dst netip.Addr, size, ttl int, timeout time.Duration) (icmpAnswer, error) {
	hdr := ipHeaderLen(p.v6)
	size = max(size, hdr+8)
	ch := make(chan icmpAnswer, 1)
	p.mu.Lock()
	p.seq++
	seq := p.seq
	p.wait[seq] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.wait, seq)
		p.mu.Unlock()
	}()
	msg := make([]byte, size-hdr)
	binary.BigEndian.PutUint16(msg[4:], p.id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	for i := 8; i < len(msg); i++ {
		msg[i] = byte(i)
	}
	var sa unix.Sockaddr
	level, opt := unix.IPPROTO_IP, unix.IP_TTL
	if p.v6 {
		// The kernel computes the ICMPv6 checksum (it covers a
		// pseudo-header with the source it picks).
		msg[0] = 128
		sa = &unix.SockaddrInet6{Addr: dst.As16(), ZoneId: p.zone}
		level, opt = unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS
	} else {
		msg[0] = 8
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
		sa = &unix.SockaddrInet4{Addr: dst.As4()}
	}
	p.wmu.Lock()
	var serr error
	start := time.Now()
	cerr := p.rc.Control(func(fd uintptr) {
		if ttl > 0 {
			if serr = unix.SetsockoptInt(int(fd), level, opt, ttl); serr != nil {
				return
			}
		}
		serr = unix.Sendto(int(fd), msg, 0, sa)
	})
	p.wmu.Unlock()
	if cerr != nil {
		return icmpAnswer{}, cerr
	}
	if serr != nil {
		// EMSGSIZE: larger than the local interface or cached route allows;
		// ENETUNREACH/EHOSTUNREACH: no route.
		return icmpAnswer{}, serr
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case a := <-ch:
		a.RTT = a.at.Sub(start)
		return a, nil
	case <-t.C:
		return icmpAnswer{}, errProbeTimeout
	case <-ctx.Done():
		return icmpAnswer{}, ctx.Err()
	}
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// addrOf turns a netip.Addr into a net.IP for APIs that want one.
func addrOf(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }
