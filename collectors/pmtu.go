package collectors

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// PathMTU is tracepath's answer from the namespace: the largest packet with
// DF set that reaches the destination, and whether the path said so with ICMP
// fragmentation-needed or silently dropped the larger ones (a PMTU black
// hole).
type PathMTU struct {
	Dst string `json:"dst"`
	// Family is "ipv4" or "ipv6": ICMP fragmentation-needed or ICMPv6
	// packet-too-big is what the path answers with.
	Family   string `json:"family"`
	Dev      string `json:"dev"`
	IfaceMTU int    `json:"iface_mtu"`
	// CachedPMTU is the path MTU the kernel has already learned for the
	// destination (from an earlier fragmentation-needed), 0 if none.
	CachedPMTU int `json:"cached_pmtu,omitempty"`
	// PathMTU is the largest size (IP header included) that got an echo
	// reply; 0 when even the smallest probe failed.
	PathMTU    int          `json:"path_mtu"`
	Reachable  bool         `json:"reachable"`
	FragNeeded []FragNeeded `json:"frag_needed,omitempty"`
	// Blackhole: sizes between PathMTU and the interface MTU vanished with
	// no fragmentation-needed.
	Blackhole bool       `json:"blackhole"`
	Probes    []MTUProbe `json:"probes"`
}

// Family names an address's family as evidence, probe labels and findings
// do: "ipv4" or "ipv6".
func Family(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() {
		return "ipv6"
	}
	return "ipv4"
}

// FragNeeded is an ICMP fragmentation-needed (IPv6: packet-too-big) and who
// sent it.
type FragNeeded struct {
	From string `json:"from"`
	MTU  int    `json:"mtu"`
}

// MTUProbe is one DF probe.
type MTUProbe struct {
	Size   int     `json:"size"`
	Result string  `json:"result"` // echo-reply, frag-needed, timeout, emsgsize, unreachable
	From   string  `json:"from,omitempty"`
	MS     float64 `json:"ms"`
}

func init() {
	register(spec{name: "pmtu", help: "path MTU to --to with DF-set probes (IPv4 and IPv6): binary search up to the interface MTU, fragmentation-needed / packet-too-big and who sent it, black holes",
		scopes: []Scope{ScopeSource}, probe: true, timeout: 15 * time.Second, needs: needDest}, collectPMTU)
}

func collectPMTU(ctx context.Context, in Input) (*PathMTU, error) {
	if err := needDest(in.Params); err != nil {
		return nil, NotApplicable("no destination: give %v", err)
	}
	out := &PathMTU{Dst: in.To.Addr.String(), Family: Family(in.To.Addr)}
	dev, mtu, cached, err := egressMTU(in)
	if err != nil {
		return nil, err
	}
	out.Dev, out.IfaceMTU, out.CachedPMTU = dev, mtu, cached
	p, err := newICMPProber(in.NS, in.To.Addr, true)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	timeout := in.probeTimeout()
	send := func(size int) MTUProbe {
		a, err := p.probe(ctx, in.To.Addr, size, 0, timeout)
		pr := MTUProbe{Size: size, MS: round3(float64(a.RTT.Microseconds()) / 1000)}
		switch {
		case errors.Is(err, errProbeTimeout):
			pr.Result = "timeout"
		case errors.Is(err, unix.EMSGSIZE):
			pr.Result = "emsgsize"
		case err != nil:
			pr.Result = classifyConnErr(err)
			if pr.Result == "error" {
				pr.Result = err.Error()
			}
		default:
			pr.Result, pr.From = a.Kind, a.From.String()
			if a.tooBig() {
				out.FragNeeded = append(out.FragNeeded, FragNeeded{From: a.From.String(), MTU: a.MTU})
				// One word for both families, so the search below reads
				// the same for IPv4 and IPv6.
				pr.Result = "frag-needed"
			}
		}
		out.Probes = append(out.Probes, pr)
		return pr
	}
	// The common case costs one probe: the full interface MTU passes.
	first := send(mtu)
	if first.Result == "echo-reply" {
		out.PathMTU, out.Reachable = mtu, true
		return out, nil
	}
	// A small probe tells "too big" from "unreachable at any size", and its
	// RTT bounds how long the larger ones are worth waiting for. Every IPv6
	// link carries 1280 bytes; IPv4 promises 576.
	lo, least := 576, 68
	if p.v6 {
		lo, least = 1280, 48
	}
	small := send(lo)
	if small.Result != "echo-reply" {
		lo = least
		if send(lo).Result != "echo-reply" {
			return out, ctx.Err()
		}
	}
	out.Reachable = true
	if rtt := time.Duration(small.MS*float64(time.Millisecond)) * 4; small.Result == "echo-reply" && rtt < timeout {
		timeout = max(rtt, 250*time.Millisecond)
	}
	// hi is the smallest size known to fail. A router's fragmentation-needed
	// says every size above its MTU fails, and its MTU is the next to try.
	hi, next := mtu, 0
	lastFrag := func() int { return out.FragNeeded[len(out.FragNeeded)-1].MTU }
	if first.Result == "frag-needed" {
		if m := lastFrag(); m > lo && m < hi {
			hi, next = m+1, m
		}
	}
	for hi-lo > 1 && ctx.Err() == nil {
		size := (lo + hi) / 2
		if next > lo && next < hi {
			size = next
		}
		next = 0
		switch r := send(size); r.Result {
		case "echo-reply":
			lo = size
		case "frag-needed":
			hi = size
			if m := lastFrag(); m > lo && m < hi {
				hi, next = m+1, m
			}
		default:
			hi = size
		}
	}
	out.PathMTU = lo
	if len(out.FragNeeded) == 0 && lo < mtu && ctx.Err() == nil {
		// A black hole is steady; a lost first probe is not (it may have
		// waited on neighbour resolution while other probes started).
		// Before saying "black hole", ask the full size once more.
		if send(mtu).Result == "echo-reply" {
			out.PathMTU = mtu
		}
	}
	out.Blackhole = len(out.FragNeeded) == 0 && out.PathMTU < mtu
	return out, ctx.Err()
}

// egressMTU is the device the kernel sends through towards the destination,
// its MTU, and the path MTU the kernel has cached for the destination (the
// probes ignore the cache: they find out afresh).
func egressMTU(in Input) (dev string, mtu, cached int, err error) {
	k, err := openKernelRoutes(in.NS)
	if err != nil {
		return "", 0, 0, err
	}
	defer k.Close()
	r := k.get(in.To.Addr)
	if r.err != nil {
		return "", 0, 0, fmt.Errorf("no route to %s: %w", in.To.Addr, r.err)
	}
	l, err := k.h.LinkByIndex(r.index)
	if err != nil {
		return "", 0, 0, err
	}
	mtu = l.Attrs().MTU
	if r.mtu > 0 && r.mtu < mtu {
		cached = r.mtu
	}
	return l.Attrs().Name, mtu, cached, nil
}
