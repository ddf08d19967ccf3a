package collectors

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// TCP is paping / `telnet HOST PORT` from the namespace: several connects,
// each classified the way the kernel answered it.
type TCP struct {
	Dst      string       `json:"dst"`
	Attempts []TCPAttempt `json:"attempts"`
	// Counts by result.
	Connected    int     `json:"connected"`
	Refused      int     `json:"refused"`
	Timeout      int     `json:"timeout"`
	Unreachable  int     `json:"unreachable"`
	AddrNotAvail int     `json:"addr_not_avail"`
	Other        int     `json:"other"`
	AvgConnectMS float64 `json:"avg_connect_ms,omitempty"`
}

// TCPAttempt is one connect.
type TCPAttempt struct {
	// Result is connected, refused (RST), timeout (no answer), unreachable
	// (ICMP or no route), addr-not-avail (no free local port) or error.
	Result string  `json:"result"`
	MS     float64 `json:"ms"`
	Local  string  `json:"local,omitempty"`
	Error  string  `json:"error,omitempty"`
}

func init() {
	register(spec{name: "tcp", help: "TCP connects to --to HOST:PORT like paping: connected, refused, timeout, unreachable or no free port, with connect time",
		scopes: []Scope{ScopeSource}, probe: true, timeout: 10 * time.Second, needs: needPort}, collectTCP)
}

func collectTCP(ctx context.Context, in Input) (*TCP, error) {
	if err := needPort(in.Params); err != nil {
		return nil, NotApplicable("no port: give %v", err)
	}
	out := &TCP{Dst: in.To.String()}
	var total float64
	for _, a := range tcpAttempts(ctx, in) {
		out.Attempts = append(out.Attempts, a)
		switch a.Result {
		case "connected":
			out.Connected++
			total += a.MS
		case "refused":
			out.Refused++
		case "timeout":
			out.Timeout++
		case "unreachable":
			out.Unreachable++
		case "addr-not-avail":
			out.AddrNotAvail++
		default:
			out.Other++
		}
	}
	if out.Connected > 0 {
		out.AvgConnectMS = round3(total / float64(out.Connected))
	}
	return out, nil
}

// tcpStagger is the gap between the starts of two connects. They overlap
// rather than run one after another, so that a path that drops in silence
// costs one probe timeout, not one per attempt: a finding under an alert has
// seconds, not tens of them. Each connect still has its own source port and
// its own full timeout, so loss on a flow is still seen per attempt.
const tcpStagger = 100 * time.Millisecond

// tcpAttempts runs the connects, started tcpStagger apart, and returns those
// that started (a cancelled context starts no more), in the order started.
func tcpAttempts(ctx context.Context, in Input) []TCPAttempt {
	n := in.tcpAttempts()
	res := make([]TCPAttempt, n)
	started := make([]bool, n)
	var wg sync.WaitGroup
	tick := time.NewTicker(tcpStagger)
	defer tick.Stop()
start:
	for i := 0; i < n; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				break start
			case <-tick.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		started[i] = true
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res[i] = tcpAttempt(ctx, in, in.probeTimeout())
		}(i)
	}
	wg.Wait()
	out := res[:0]
	for i, a := range res {
		if started[i] {
			out = append(out, a)
		}
	}
	return out
}

func tcpAttempt(ctx context.Context, in Input, timeout time.Duration) TCPAttempt {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	c, err := in.NS.Dial(dctx, "tcp", in.To.String())
	a := TCPAttempt{MS: round3(float64(time.Since(start).Microseconds()) / 1000)}
	if err == nil {
		a.Result = "connected"
		a.Local = c.LocalAddr().String()
		c.Close()
		return a
	}
	a.Error = err.Error()
	a.Result = classifyConnErr(err)
	return a
}

// classifyConnErr names a connect failure by what the network did.
func classifyConnErr(err error) string {
	var se syscall.Errno
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return "unreachable"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "addr-not-avail"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return "timeout"
	case errors.As(err, &se):
		return "error"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "error"
}
