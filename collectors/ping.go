package collectors

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Ping is `ping -c N` (and the summary line mtr prints) from the namespace.
type Ping struct {
	Dst      string  `json:"dst"`
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	LossPct  float64 `json:"loss_pct"`
	MinMS    float64 `json:"min_ms"`
	AvgMS    float64 `json:"avg_ms"`
	MaxMS    float64 `json:"max_ms"`
	StddevMS float64 `json:"stddev_ms"`
	// Errors are ICMP errors and local send failures, by kind.
	Errors []ProbeError `json:"errors,omitempty"`
}

// ProbeError counts one kind of failure and who reported it.
type ProbeError struct {
	Kind  string `json:"kind"` // unreachable, frag-needed, time-exceeded, timeout, or a local errno text
	From  string `json:"from,omitempty"`
	Code  int    `json:"code,omitempty"`
	Count int    `json:"count"`
}

func init() {
	register(spec{name: "ping", help: "ICMP or ICMPv6 echo from the namespace to --to: loss, min/avg/max/stddev, ICMP errors and who sent them",
		scopes: []Scope{ScopeSource}, probe: true, timeout: 10 * time.Second, needs: func(p *Params) error {
			if p.PingGateway {
				return nil
			}
			return needDest(p)
		}}, collectPing)
}

func collectPing(ctx context.Context, in Input) (*Ping, error) {
	if (in.To == nil || !in.To.Addr.IsValid()) && in.PingGateway {
		gw, err := defaultGateway(in)
		if err != nil {
			return nil, err
		}
		p := *in.Params
		p.To = &Dest{Addr: gw}
		in.Params = &p
	}
	if err := needDest(in.Params); err != nil {
		return nil, NotApplicable("no destination: give %v", err)
	}
	p, err := newICMPProber(in.NS, in.To.Addr, false)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	out := &Ping{Dst: in.To.Addr.String()}
	var rtts []float64
	errs := map[string]*ProbeError{}
	count, interval, timeout := in.pingCount(), in.pingInterval(), in.probeTimeout()
	type res struct {
		a   icmpAnswer
		err error
	}
	results := make(chan res, count)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	// Probes go out on the interval and are answered concurrently, as ping
	// does: a slow reply does not delay the next probe.
	for i := 0; i < count; i++ {
		if i > 0 {
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		out.Sent++
		go func() {
			var r res
			defer func() { results <- r }()
			defer Recover("ping probe", &r.err)
			// 56 bytes of data, as ping sends by default.
			r.a, r.err = p.probe(ctx, in.To.Addr, ipHeaderLen(p.v6)+8+56, 0, timeout)
		}()
	}
	for i := 0; i < out.Sent; i++ {
		r := <-results
		switch {
		case r.err == nil && r.a.Kind == "echo-reply":
			out.Received++
			rtts = append(rtts, float64(r.a.RTT.Microseconds())/1000)
		case r.err == nil:
			countErr(errs, r.a.Kind, r.a.From.String(), r.a.Code)
		case errors.Is(r.err, errProbeTimeout):
			countErr(errs, "timeout", "", 0)
		default:
			countErr(errs, r.err.Error(), "", 0)
		}
	}
	out.Errors = sortedErrs(errs)
	if out.Sent > 0 {
		out.LossPct = 100 * float64(out.Sent-out.Received) / float64(out.Sent)
	}
	out.MinMS, out.AvgMS, out.MaxMS, out.StddevMS = stats(rtts)
	return out, nil
}

func countErr(m map[string]*ProbeError, kind, from string, code int) {
	k := fmt.Sprintf("%s|%s|%d", kind, from, code)
	if e, ok := m[k]; ok {
		e.Count++
		return
	}
	m[k] = &ProbeError{Kind: kind, From: from, Code: code, Count: 1}
}

func sortedErrs(m map[string]*ProbeError) []ProbeError {
	var out []ProbeError
	for _, e := range m {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Kind+out[i].From < out[j].Kind+out[j].From
	})
	return out
}

// stats returns min, mean, max and the population standard deviation, as
// ping's mdev and mtr's StDev report them.
func stats(v []float64) (mn, avg, mx, sd float64) {
	if len(v) == 0 {
		return 0, 0, 0, 0
	}
	mn, mx = math.Inf(1), math.Inf(-1)
	var sum float64
	for _, x := range v {
		mn, mx, sum = math.Min(mn, x), math.Max(mx, x), sum+x
	}
	avg = sum / float64(len(v))
	for _, x := range v {
		sd += (x - avg) * (x - avg)
	}
	sd = math.Sqrt(sd / float64(len(v)))
	return round3(mn), round3(avg), round3(mx), round3(sd)
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// defaultGateway is the namespace's default gateway (a pod's cni0 address):
// the IPv4 one, else the IPv6 one.
func defaultGateway(in Input) (netip.Addr, error) {
	h, err := in.NS.Handle()
	if err != nil {
		return netip.Addr{}, err
	}
	defer h.Close()
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rts, err := h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range rts {
			if !isDefault(r.Dst) {
				continue
			}
			gw := r.Gw
			if gw == nil && len(r.MultiPath) > 0 {
				gw = r.MultiPath[0].Gw
			}
			if gw == nil {
				continue
			}
			a, _ := netip.AddrFromSlice(gw)
			a = a.Unmap()
			if a.IsLinkLocalUnicast() {
				if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
					a = a.WithZone(l.Attrs().Name)
				}
			}
			return a, nil
		}
	}
	return netip.Addr{}, errors.New("no default gateway")
}

// isDefault reports a default route's destination (nil, 0.0.0.0/0 or ::/0).
func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0 && dst.IP.IsUnspecified()
}
