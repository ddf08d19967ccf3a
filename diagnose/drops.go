package diagnose

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/drops"
)

// The kernel's drop reasons, read as verdicts. They come first wherever a
// rule has to choose between causes that look alike from outside.

// kernelDrops returns the drops of the probes' flows that the probes did not
// cause on purpose, attributed by 5-tuple (tracefs' approximate drops are
// not used to decide).
func (f *facts) kernelDrops(keep func(d *drops.Drop) bool) []drops.Drop {
	if f.drops == nil || f.drops.Approximate {
		return nil
	}
	var out []drops.Drop
	for i := range f.drops.Drops {
		d := &f.drops.Drops[i]
		if d.Expected() || !keep(d) {
			continue
		}
		out = append(out, *d)
	}
	return out
}

// tcpProbeAddrs are the addresses and ports the TCP probe's packets carry:
// the destination asked, and for a Service the backend it is translated to.
func (f *facts) tcpProbeAddrs() map[netip.AddrPort]bool {
	out := map[netip.AddrPort]bool{}
	if f.req.To == nil || f.req.To.Port == 0 {
		return out
	}
	out[netip.AddrPortFrom(f.req.To.Addr, f.req.To.Port)] = true
	if c := f.req.Cluster; c != nil && c.Service != nil {
		for _, e := range c.Service.Endpoints {
			if a, err := netip.ParseAddr(e.IP); err == nil {
				out[netip.AddrPortFrom(a, uint16(c.Service.TargetPort))] = true
			}
		}
	}
	return out
}

// tcpDrops are the kernel's drops of the TCP probe's packets, both ways.
func (f *facts) tcpDrops(reasons ...string) []drops.Drop {
	addrs := f.tcpProbeAddrs()
	return f.kernelDrops(func(d *drops.Drop) bool {
		if d.Proto != "tcp" || !reasonIn(d.Reason, reasons) {
			return false
		}
		far, port := d.Dst, d.DPort
		if d.Answer {
			far, port = d.Src, d.SPort
		}
		a, err := netip.ParseAddr(far)
		return err == nil && addrs[netip.AddrPortFrom(a, port)]
	})
}

// pathDrops are the kernel's drops of any probe to the destination (TCP,
// ICMP echo, path-MTU probes), both ways.
func (f *facts) pathDrops(reasons ...string) []drops.Drop {
	if f.req.To == nil {
		return f.kernelDrops(func(d *drops.Drop) bool { return reasonIn(d.Reason, reasons) })
	}
	dsts := map[string]bool{f.req.To.Addr.String(): true}
	if c := f.req.Cluster; c != nil && c.Service != nil {
		for _, e := range c.Service.Endpoints {
			dsts[e.IP] = true
		}
	}
	return f.kernelDrops(func(d *drops.Drop) bool {
		far := d.Dst
		if d.Answer {
			far = d.Src
		}
		return reasonIn(d.Reason, reasons) && dsts[far]
	})
}

// reasonIn matches a reason against names or name prefixes ending in "*".
func reasonIn(reason string, names []string) bool {
	if len(names) == 0 {
		return true
	}
	for _, n := range names {
		if p, ok := strings.CutSuffix(n, "*"); ok && strings.HasPrefix(reason, p) || reason == n {
			return true
		}
	}
	return false
}

// dropScope is the scope a drop happened in, "" when it is a namespace the
// diagnosis was not given.
func dropScope(d drops.Drop) collectors.Scope { return collectors.Scope(d.Where) }

// dropPlace names where the kernel dropped a packet, in the user's words.
func (f *facts) dropPlace(d drops.Drop) string {
	if d.Where != "" {
		return f.scopeName(dropScope(d))
	}
	if d.NetnsName != "" {
		return "namespace " + d.NetnsName
	}
	return fmt.Sprintf("namespace net:[%d]", d.Netns)
}

// dropLine tells one drop as a person would, lined up with the capture when
// the capture saw the packet leave: "SYN to 198.18.64.5:8080 sent at
// 12:00:01.234, dropped 0.2 ms later in default/web by nf_hook_slow:
// NETFILTER_DROP".
func (f *facts) dropLine(d drops.Drop) Observation {
	what := d.Packet
	if what == "" {
		what = strings.ToUpper(d.Proto) + " packet"
	}
	to := d.Dst
	if d.DPort != 0 {
		to = fmt.Sprintf("%s:%d", d.Dst, d.DPort)
	}
	if d.Answer {
		what += " (answer)"
		to = fmt.Sprintf("%s from %s", d.Dst, d.Src)
		if d.SPort != 0 {
			to = fmt.Sprintf("%s from %s:%d", d.Dst, d.Src, d.SPort)
		}
	}
	dev := ""
	if d.Dev != "" {
		dev = " on " + d.Dev
	}
	when := "at " + d.At.Format("15:04:05.000000")
	if sent, ok := f.sentAt(d); ok {
		when = fmt.Sprintf("sent at %s, dropped %s later", sent.Format("15:04:05.000000"), d.At.Sub(sent).Round(time.Microsecond))
	} else {
		when = "dropped " + when
	}
	return obs("drops", "%s to %s %s in %s%s by %s: %s", what, to, when, f.dropPlace(d), dev, d.Func(), d.Reason)
}

// sentAt finds in the source's capture when the dropped packet's flow was
// first seen leaving.
func (f *facts) sentAt(d drops.Drop) (time.Time, bool) {
	if f.capture == nil || f.capture.Summary == nil || d.Answer || d.Proto != "tcp" {
		return time.Time{}, false
	}
	want := fmt.Sprintf("-> %s:%d", d.Dst, d.DPort)
	for _, fl := range f.capture.Summary.Flows {
		if strings.HasPrefix(fl.Flow, "tcp ") && strings.HasSuffix(fl.Flow, want) && strings.Contains(fl.Flow, fmt.Sprintf("%s:%d ", d.Src, d.SPort)) {
			if !fl.First.After(d.At) {
				return fl.First, true
			}
		}
	}
	return time.Time{}, false
}

// dropsNote says what the drops collector could see, for findings that did
// not rest on it.
func (f *facts) dropsNote() []Observation {
	if f.drops == nil {
		return nil
	}
	switch {
	case f.drops.Method == "unavailable":
		return []Observation{obs("drops", "the kernel's drop reasons were not available: %s", f.drops.Note)}
	case f.drops.Approximate:
		if len(f.drops.ByReason) == 0 {
			return []Observation{obs("drops", "the kernel dropped no IPv4 or IPv6 packet during the probes (%s)", f.drops.Method)}
		}
		var parts []string
		for r, n := range f.drops.ByReason {
			parts = append(parts, fmt.Sprintf("%d %s", n, r))
		}
		slices.Sort(parts)
		return []Observation{obs("drops", "approximate (tracefs, by time only): the kernel dropped %s during the probes", strings.Join(parts, ", "))}
	}
	return nil
}

// withDrops adds the kernel's account of the probes' drops to a finding's
// evidence (at most a few distinct ones; the raw evidence has them all).
func (f *facts) withDrops(ev []Observation) []Observation {
	for _, o := range ev {
		if o.Collector == "drops" {
			return ev
		}
	}
	if f.drops == nil {
		return ev
	}
	seen := map[string]bool{}
	n := 0
	for _, d := range f.kernelDrops(func(*drops.Drop) bool { return true }) {
		k := d.Reason + "|" + d.Where + d.NetnsName + "|" + d.Packet
		if seen[k] || n == 3 {
			continue
		}
		seen[k] = true
		n++
		ev = append(ev, f.dropLine(d))
	}
	if n == 0 && f.drops.Method == "ebpf" {
		expected := 0
		for i := range f.drops.Drops {
			if f.drops.Drops[i].Expected() {
				expected++
			}
		}
		line := "the kernel dropped none of the probes' packets"
		if expected > 0 {
			line += fmt.Sprintf(" (apart from %d it drops by design: expired hop probes, late answers to closed probe sockets, queues of closed sockets)", expected)
		}
		ev = append(ev, obs("drops", "%s", line))
	}
	return append(ev, f.dropsNote()...)
}

// nsCommand is how to run a command in the namespace a drop happened in.
func (f *facts) nsCommand(d drops.Drop) string {
	switch {
	case d.Where != "":
		if p := f.scopePath(dropScope(d)); p != "" {
			return "nsenter --net=" + p + " "
		}
	case d.NetnsName != "" && !strings.HasPrefix(d.NetnsName, "pid "):
		return "ip netns exec " + d.NetnsName + " "
	case strings.HasPrefix(d.NetnsName, "pid "):
		pid, _, _ := strings.Cut(strings.TrimPrefix(d.NetnsName, "pid "), " ")
		return "nsenter -t " + pid + " -n "
	}
	return ""
}

// scopePath is the namespace path of a scope in the request, when it has one.
func (f *facts) scopePath(s collectors.Scope) string { return f.req.place(s).Netns }

// dropLines tells at most n drops.
func (f *facts) dropLines(ds []drops.Drop, n int) []Observation {
	var out []Observation
	for i := 0; i < len(ds) && i < n; i++ {
		out = append(out, f.dropLine(ds[i]))
	}
	return out
}
