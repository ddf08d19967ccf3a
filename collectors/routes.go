package collectors

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Routes is `ip route show table all`, `ip rule` and `ip route get DEST`.
type Routes struct {
	Routes []Route `json:"routes"`
	Rules  []Rule  `json:"rules"`
	// Chosen is the route the kernel picks for the probe destination.
	Chosen *ChosenRoute `json:"chosen,omitempty"`
	// Lookups are the routes the kernel picks for every destination the
	// run's probes go to (both families of a dual-stack question, DNS
	// servers, a Service's backend).
	Lookups []ChosenRoute `json:"lookups,omitempty"`
}

// To returns the route the kernel picks for dst, if it was looked up.
func (r *Routes) To(dst netip.Addr) *ChosenRoute {
	if r.Chosen != nil && r.Chosen.Dst == dst.String() {
		return r.Chosen
	}
	for i := range r.Lookups {
		if r.Lookups[i].Dst == dst.String() {
			return &r.Lookups[i]
		}
	}
	return nil
}

// Route is one route.
type Route struct {
	Table int `json:"table"`
	// Family is "ipv4" or "ipv6".
	Family   string    `json:"family"`
	Dst      string    `json:"dst"` // CIDR or "default"
	Type     string    `json:"type"`
	Gateway  string    `json:"gateway,omitempty"`
	Dev      string    `json:"dev,omitempty"`
	Src      string    `json:"src,omitempty"`
	Protocol string    `json:"protocol"`
	Scope    string    `json:"scope"`
	Metric   int       `json:"metric,omitempty"`
	MTU      int       `json:"mtu,omitempty"`
	Onlink   bool      `json:"onlink,omitempty"`
	Nexthops []Nexthop `json:"nexthops,omitempty"`
}

// Nexthop is one path of a multipath route.
type Nexthop struct {
	Gateway string `json:"gateway,omitempty"`
	Dev     string `json:"dev,omitempty"`
	Weight  int    `json:"weight"`
}

// Rule is a policy routing rule.
type Rule struct {
	Priority int    `json:"priority"`
	Family   string `json:"family"`
	Table    int    `json:"table"`
	Src      string `json:"src,omitempty"`
	Dst      string `json:"dst,omitempty"`
	Mark     uint32 `json:"mark,omitempty"`
	IifName  string `json:"iif,omitempty"`
	OifName  string `json:"oif,omitempty"`
}

// ChosenRoute is the kernel's answer to `ip route get`.
type ChosenRoute struct {
	Dst     string `json:"dst"`
	Dev     string `json:"dev,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	Src     string `json:"src,omitempty"`
	Error   string `json:"error,omitempty"` // e.g. "network is unreachable"
}

// Defaults returns the default routes of the main table of a family
// ("ipv4", "ipv6"), multipath ones counted per path: two means two ways out,
// the seed's 50 % loss.
func (r *Routes) Defaults(family string) []Route {
	var out []Route
	for _, rt := range r.Routes {
		if rt.Dst == "default" && rt.Table == unix.RT_TABLE_MAIN && rt.Type == "unicast" && rt.Family == family {
			out = append(out, rt)
		}
	}
	return out
}

func familyOf(f int) string {
	if f == netlink.FAMILY_V6 {
		return "ipv6"
	}
	return "ipv4"
}

func init() {
	register(spec{name: "routes", help: "IPv4 and IPv6 routes of every table (multipath included), policy rules, and the route chosen for the destination",
		scopes: Scopes, timeout: 2 * time.Second}, collectRoutes)
}

var routeTypes = map[int]string{unix.RTN_UNICAST: "unicast", unix.RTN_LOCAL: "local", unix.RTN_BROADCAST: "broadcast",
	unix.RTN_BLACKHOLE: "blackhole", unix.RTN_UNREACHABLE: "unreachable", unix.RTN_PROHIBIT: "prohibit", unix.RTN_MULTICAST: "multicast",
	unix.RTN_ANYCAST: "anycast", unix.RTN_THROW: "throw", unix.RTN_NAT: "nat"}

func collectRoutes(ctx context.Context, in Input) (*Routes, error) {
	h, err := in.NS.Handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	_, names, err := linkNames(h)
	if err != nil {
		return nil, err
	}
	var rts []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		got, err := h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		rts = append(rts, got...)
	}
	out := &Routes{}
	for _, r := range rts {
		rt := Route{Table: r.Table, Family: familyOf(r.Family), Dst: "default", Type: routeTypes[r.Type], Dev: names[r.LinkIndex],
			Protocol: r.Protocol.String(), Scope: r.Scope.String(), Metric: r.Priority, MTU: r.MTU,
			Onlink: r.Flags&unix.RTNH_F_ONLINK != 0}
		if rt.Type == "" {
			rt.Type = fmt.Sprint(r.Type)
		}
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 || !r.Dst.IP.IsUnspecified() {
				rt.Dst = r.Dst.String()
			}
		}
		if r.Gw != nil {
			rt.Gateway = r.Gw.String()
		}
		if r.Src != nil {
			rt.Src = r.Src.String()
		}
		for _, nh := range r.MultiPath {
			n := Nexthop{Dev: names[nh.LinkIndex], Weight: nh.Hops + 1}
			if nh.Gw != nil {
				n.Gateway = nh.Gw.String()
			}
			rt.Nexthops = append(rt.Nexthops, n)
		}
		out.Routes = append(out.Routes, rt)
	}
	rules, err := h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return out, fmt.Errorf("list rules: %w", err)
	}
	for _, r := range rules {
		ru := Rule{Priority: r.Priority, Family: familyOf(r.Family), Table: r.Table, Mark: r.Mark, IifName: r.IifName, OifName: r.OifName}
		if r.Src != nil {
			ru.Src = r.Src.String()
		}
		if r.Dst != nil {
			ru.Dst = r.Dst.String()
		}
		out.Rules = append(out.Rules, ru)
	}
	kr := newKernelRoutes(h, names)
	get := func(dst netip.Addr) ChosenRoute {
		r := kr.get(dst)
		c := ChosenRoute{Dst: dst.String(), Dev: r.dev}
		if r.err != nil {
			c.Error = r.err.Error()
		}
		if r.gw.IsValid() {
			c.Gateway = r.gw.String()
		}
		if r.src.IsValid() {
			c.Src = r.src.String()
		}
		return c
	}
	if in.To != nil && in.To.Addr.IsValid() {
		c := get(in.To.Addr)
		out.Chosen = &c
	}
	seen := map[netip.Addr]bool{}
	for _, f := range in.flowsIn() {
		if f.Dst.IsValid() && !seen[f.Dst] && (out.Chosen == nil || out.Chosen.Dst != f.Dst.String()) {
			seen[f.Dst] = true
			out.Lookups = append(out.Lookups, get(f.Dst))
		}
	}
	return out, ctx.Err()
}
