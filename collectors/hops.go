package collectors

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"
)

// Hops is mtr's report from the namespace: each hop towards the destination,
// who answered at that TTL, and its loss and latency over several rounds.
type Hops struct {
	Dst     string `json:"dst"`
	Reached bool   `json:"reached"`
	Rounds  int    `json:"rounds"`
	Hops    []Hop  `json:"hops"`
}

// Hop is one TTL.
type Hop struct {
	TTL      int      `json:"ttl"`
	Addrs    []string `json:"addrs,omitempty"` // who answered ("" never answered)
	Sent     int      `json:"sent"`
	Received int      `json:"received"`
	LossPct  float64  `json:"loss_pct"`
	AvgMS    float64  `json:"avg_ms"`
	BestMS   float64  `json:"best_ms"`
	WorstMS  float64  `json:"worst_ms"`
	StddevMS float64  `json:"stddev_ms"`
	// Errors other than time-exceeded (unreachable from a hop).
	Errors []ProbeError `json:"errors,omitempty"`
}

func init() {
	register(spec{name: "hops", help: "mtr-style hops to --to: per TTL (hop limit) who answered, loss, avg/best/worst/stddev",
		scopes: []Scope{ScopeSource}, probe: true, timeout: 15 * time.Second, needs: needDest}, collectHops)
}

func collectHops(ctx context.Context, in Input) (*Hops, error) {
	if err := needDest(in.Params); err != nil {
		return nil, NotApplicable("no destination: give %v", err)
	}
	p, err := newICMPProber(in.NS, in.To.Addr, false)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	// Routers rate-limit their time-exceeded messages (icmp_ratelimit): a
	// hop that has not answered in half a second is counted as loss, as mtr
	// shows it, rather than holding the whole diagnosis up.
	maxHops, rounds, timeout := in.maxHops(), in.hopRounds(), min(in.probeTimeout(), 500*time.Millisecond)
	type hopAcc struct {
		sent  int
		rtts  []float64
		addrs map[string]bool
		errs  map[string]*ProbeError
		final bool
	}
	acc := make([]hopAcc, maxHops+1)
	for i := range acc {
		acc[i] = hopAcc{addrs: map[string]bool{}, errs: map[string]*ProbeError{}}
	}
	var mu sync.Mutex
	last := maxHops // the TTL at which the destination answered
	for r := 0; r < rounds && ctx.Err() == nil; r++ {
		var wg sync.WaitGroup
		mu.Lock()
		limit := last
		mu.Unlock()
		for ttl := 1; ttl <= limit; ttl++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				defer Recover("hop probe", &err)
				a, err := p.probe(ctx, in.To.Addr, ipHeaderLen(p.v6)+44, ttl, timeout)
				mu.Lock()
				defer mu.Unlock()
				h := &acc[ttl]
				h.sent++
				switch {
				case err == nil && (a.Kind == "echo-reply" || a.Kind == "time-exceeded"):
					h.rtts = append(h.rtts, float64(a.RTT.Microseconds())/1000)
					h.addrs[a.From.String()] = true
					if a.Kind == "echo-reply" {
						h.final = true
						last = min(last, ttl)
					}
				case err == nil:
					countErr(h.errs, a.Kind, a.From.String(), a.Code)
					h.addrs[a.From.String()] = true
					h.final = true
					last = min(last, ttl)
				case errors.Is(err, errProbeTimeout):
				default:
					countErr(h.errs, err.Error(), "", 0)
				}
			}()
			// mtr paces its probes; a burst of TTL-limited packets would be
			// rate-limited by the routers' ICMP limits.
			time.Sleep(2 * time.Millisecond)
		}
		wg.Wait()
	}
	out := &Hops{Dst: in.To.Addr.String(), Rounds: rounds}
	for ttl := 1; ttl <= last; ttl++ {
		h := acc[ttl]
		hop := Hop{TTL: ttl, Sent: h.sent, Received: len(h.rtts), Errors: sortedErrs(h.errs)}
		for a := range h.addrs {
			hop.Addrs = append(hop.Addrs, a)
		}
		sort.Strings(hop.Addrs)
		if h.sent > 0 {
			hop.LossPct = round3(100 * float64(h.sent-len(h.rtts)) / float64(h.sent))
		}
		hop.BestMS, hop.AvgMS, hop.WorstMS, hop.StddevMS = stats(h.rtts)
		out.Hops = append(out.Hops, hop)
		if h.final && len(h.errs) == 0 {
			out.Reached = true
		}
	}
	return out, ctx.Err()
}
