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
	register("ping", "ICMP echo from the namespace to --to: loss, min/avg/max/stddev, ICMP errors and who sent them",
		[]Scope{ScopeSource}, true, 10*time.Second, collectPing)
}

var errNoDest = errors.New("no destination: give --to IP or IP:PORT")

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
	if in.To == nil || !in.To.Addr.IsValid() {
		return nil, errNoDest
	}
	p, err := newICMPProber(in.NS, false)
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
			a, err := p.probe(ctx, in.To.Addr, 84, 0, timeout)
			results <- res{a, err}
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

// defaultGateway is the namespace's default gateway (the pod's cni0 address).
func defaultGateway(in Input) (netip.Addr, error) {
	h, err := in.NS.Handle()
	if err != nil {
		return netip.Addr{}, err
	}
	defer h.Close()
	rts, err := h.RouteGet(net.IPv4(8, 8, 8, 8))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("no default route: %w", err)
	}
	if len(rts) == 0 || rts[0].Gw == nil {
		return netip.Addr{}, errors.New("no default gateway")
	}
	a, _ := netip.AddrFromSlice(rts[0].Gw.To4())
	return a, nil
}
