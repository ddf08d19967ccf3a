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
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"golang.org/x/sys/unix"
)

// icmpProber sends ICMP echo requests from a raw socket opened inside a
// namespace and matches what comes back (echo replies, and the errors routers
// send: unreachable, fragmentation needed, time exceeded) to the probe that
// caused it, by echo id and sequence. ping, the path-MTU probe and the hop
// probe share it.
type icmpProber struct {
	f    *os.File
	rc   interface{ Control(func(uintptr)) error }
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
	// Kind is "echo-reply", "unreachable", "frag-needed" or "time-exceeded".
	Kind string
	Code int
	MTU  int // next-hop MTU of a fragmentation-needed
	RTT  time.Duration
	at   time.Time
}

func newICMPProber(ns *netns.NS, pmtuProbe bool) (*icmpProber, error) {
	fd, err := ns.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
	if err != nil {
		return nil, err
	}
	if pmtuProbe {
		// DF set, and the kernel's cached path MTU ignored: the probe, not
		// the cache, finds out what passes.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("set IP_MTU_DISCOVER: %w", err)
		}
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "icmp")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &icmpProber{f: f, rc: rc, id: uint16(rand.Uint32()), wait: map[uint16]chan icmpAnswer{}, done: make(chan struct{})}
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
	buf := make([]byte, 65536)
	for {
		n, err := p.f.Read(buf)
		if err != nil {
			return
		}
		now := time.Now()
		pkt := buf[:n]
		// A raw IPv4 socket delivers the IP header too.
		if len(pkt) < 20 || pkt[0]>>4 != 4 {
			continue
		}
		ihl := int(pkt[0]&0x0f) * 4
		if len(pkt) < ihl+8 {
			continue
		}
		from, _ := netip.AddrFromSlice(pkt[12:16])
		ic := pkt[ihl:]
		typ, code := ic[0], ic[1]
		var seq, id uint16
		ans := icmpAnswer{From: from, Code: int(code)}
		switch typ {
		case 0: // echo reply
			id, seq = binary.BigEndian.Uint16(ic[4:]), binary.BigEndian.Uint16(ic[6:])
			ans.Kind = "echo-reply"
		case 3, 11: // destination unreachable, time exceeded: quote our probe
			q := ic[8:]
			if len(q) < 20 || q[9] != unix.IPPROTO_ICMP {
				continue
			}
			qihl := int(q[0]&0x0f) * 4
			if len(q) < qihl+8 || q[qihl] != 8 {
				continue
			}
			id, seq = binary.BigEndian.Uint16(q[qihl+4:]), binary.BigEndian.Uint16(q[qihl+6:])
			ans.Kind = "time-exceeded"
			if typ == 3 {
				ans.Kind = "unreachable"
				if code == 4 {
					ans.Kind = "frag-needed"
					ans.MTU = int(binary.BigEndian.Uint16(ic[6:]))
				}
			}
		default:
			continue
		}
		if id != p.id {
			continue
		}
		p.mu.Lock()
		ch := p.wait[seq]
		p.mu.Unlock()
		if ch != nil {
			select {
			case ch <- icmpAnswer{From: ans.From, Kind: ans.Kind, Code: ans.Code, MTU: ans.MTU, at: now}:
			default:
			}
		}
	}
}

// errProbeTimeout is a probe that got no answer before its deadline.
var errProbeTimeout = errors.New("no answer")

// probe sends one echo request of size bytes (IP header included) with the
// given TTL (0: the default) and waits for what comes back.
func (p *icmpProber) probe(ctx context.Context, dst netip.Addr, size, ttl int, timeout time.Duration) (icmpAnswer, error) {
	if size < 28 {
		size = 28
	}
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
	msg := make([]byte, size-20)
	msg[0] = 8
	binary.BigEndian.PutUint16(msg[4:], p.id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	for i := 8; i < len(msg); i++ {
		msg[i] = byte(i)
	}
	binary.BigEndian.PutUint16(msg[2:], checksum(msg))
	sa := &unix.SockaddrInet4{Addr: dst.As4()}
	p.wmu.Lock()
	var serr error
	start := time.Now()
	cerr := p.rc.Control(func(fd uintptr) {
		if ttl > 0 {
			if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl); serr != nil {
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
