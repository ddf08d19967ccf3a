package collectors

import (
	"context"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Neighbours is `ip neigh` and `bridge fdb` of a namespace.
type Neighbours struct {
	Neighbours []Neighbour `json:"neighbours"`
	FDB        []FDBEntry  `json:"fdb"`
}

// Neighbour is an ARP or IPv6 neighbour (NDP) entry.
type Neighbour struct {
	IP    string `json:"ip"`
	MAC   string `json:"mac,omitempty"`
	Dev   string `json:"dev"`
	State string `json:"state"` // REACHABLE, STALE, FAILED, PERMANENT...
}

// FDBEntry is a bridge forwarding entry; on a VXLAN device, Dst is the remote
// VTEP that frames for MAC are sent to.
type FDBEntry struct {
	MAC string `json:"mac"`
	Dev string `json:"dev"`
	Dst string `json:"dst,omitempty"`
}

func init() {
	register(spec{name: "neighbours", help: "ARP and IPv6 neighbour tables and bridge/VXLAN forwarding entries (FDB)",
		scopes: Scopes, defaults: []Scope{ScopeSource, ScopeNode, ScopePeerNode}, timeout: 2 * time.Second}, collectNeighbours)
}

var neighStates = []struct {
	bit  int
	name string
}{
	{unix.NUD_PERMANENT, "PERMANENT"}, {unix.NUD_NOARP, "NOARP"}, {unix.NUD_REACHABLE, "REACHABLE"},
	{unix.NUD_STALE, "STALE"}, {unix.NUD_DELAY, "DELAY"}, {unix.NUD_PROBE, "PROBE"},
	{unix.NUD_INCOMPLETE, "INCOMPLETE"}, {unix.NUD_FAILED, "FAILED"},
}

func neighState(s int) string {
	var parts []string
	for _, st := range neighStates {
		if s&st.bit != 0 {
			parts = append(parts, st.name)
		}
	}
	if len(parts) == 0 {
		return "NONE"
	}
	return strings.Join(parts, "|")
}

func collectNeighbours(ctx context.Context, in Input) (*Neighbours, error) {
	h, err := in.NS.Handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	out := &Neighbours{}
	for _, l := range links {
		a := l.Attrs()
		var ns []netlink.Neigh
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			got, err := h.NeighList(a.Index, fam)
			if err != nil {
				return out, err
			}
			ns = append(ns, got...)
		}
		for _, n := range ns {
			nb := Neighbour{IP: n.IP.String(), Dev: a.Name, State: neighState(n.State)}
			if len(n.HardwareAddr) > 0 {
				nb.MAC = n.HardwareAddr.String()
			}
			out.Neighbours = append(out.Neighbours, nb)
		}
		if l.Type() != "vxlan" && l.Type() != "bridge" {
			continue
		}
		fdb, err := h.NeighList(a.Index, unix.AF_BRIDGE)
		if err != nil {
			return out, err
		}
		for _, n := range fdb {
			if len(n.HardwareAddr) == 0 {
				continue
			}
			e := FDBEntry{MAC: n.HardwareAddr.String(), Dev: a.Name}
			if n.IP != nil {
				e.Dst = n.IP.String()
			}
			out.FDB = append(out.FDB, e)
		}
	}
	return out, ctx.Err()
}
