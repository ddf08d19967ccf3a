package collectors

import (
	"context"
	"net"
	"sort"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Links is `ip -d addr` and `tc -s qdisc` of a namespace.
type Links struct {
	Links []Link `json:"links"`
}

// Link is one interface.
type Link struct {
	Index     int    `json:"index"`
	Name      string `json:"name"`
	Type      string `json:"type"`
	AdminUp   bool   `json:"admin_up"`
	OperState string `json:"oper_state"`
	Carrier   bool   `json:"carrier"`
	MTU       int    `json:"mtu"`
	MAC       string `json:"mac,omitempty"`
	Master    string `json:"master,omitempty"`
	// PeerIndex is a veth's peer interface index; PeerNetnsID the peer's
	// namespace id as this namespace knows it (-1: same namespace).
	PeerIndex   int         `json:"peer_index,omitempty"`
	PeerNetnsID int         `json:"peer_netns_id,omitempty"`
	Addrs       []string    `json:"addrs,omitempty"` // CIDR
	VXLAN       *VXLANInfo  `json:"vxlan,omitempty"`
	Tunnel      *TunnelInfo `json:"tunnel,omitempty"`
	Stats       *LinkStats  `json:"stats,omitempty"`
	Qdisc       *QdiscStats `json:"qdisc,omitempty"`
}

// VXLANInfo is the overlay device's configuration (flannel.1, vxlan.calico).
type VXLANInfo struct {
	VNI      int    `json:"vni"`
	Local    string `json:"local,omitempty"`
	Port     int    `json:"port"`
	Parent   string `json:"parent,omitempty"`
	Learning bool   `json:"learning"`
}

// TunnelInfo is an IP-in-IP device (Calico's tunl0).
type TunnelInfo struct {
	Local  string `json:"local,omitempty"`
	Remote string `json:"remote,omitempty"`
	Parent string `json:"parent,omitempty"`
}

// LinkStats are the interface's counters.
type LinkStats struct {
	RxPackets uint64 `json:"rx_packets"`
	TxPackets uint64 `json:"tx_packets"`
	RxDropped uint64 `json:"rx_dropped"`
	TxDropped uint64 `json:"tx_dropped"`
	RxErrors  uint64 `json:"rx_errors"`
	TxErrors  uint64 `json:"tx_errors"`
}

// QdiscStats is the root qdisc and its queue counters (a full NIC queue
// shows as drops and a standing backlog).
type QdiscStats struct {
	Kind       string `json:"kind"`
	Drops      uint32 `json:"drops"`
	Overlimits uint32 `json:"overlimits"`
	Backlog    uint32 `json:"backlog_bytes"`
	QueueLen   uint32 `json:"queue_packets"`
}

// ByName returns the link with the given name.
func (l *Links) ByName(name string) *Link {
	for i := range l.Links {
		if l.Links[i].Name == name {
			return &l.Links[i]
		}
	}
	return nil
}

// ByIndex returns the link with the given index.
func (l *Links) ByIndex(idx int) *Link {
	for i := range l.Links {
		if l.Links[i].Index == idx {
			return &l.Links[i]
		}
	}
	return nil
}

func init() {
	register(spec{name: "links", help: "interfaces: type, state, carrier, MTU, master, veth peer, addresses, VXLAN/IP-in-IP settings, counters, root qdisc",
		scopes: Scopes, timeout: 2 * time.Second}, collectLinks)
}

// linkNames lists a namespace's links and names them by index, for the
// dumps that refer to devices by index (masters, veth peers, routes).
func linkNames(h *netlink.Handle) ([]netlink.Link, map[int]string, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, nil, err
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	return links, names, nil
}

func collectLinks(ctx context.Context, in Input) (*Links, error) {
	h, err := in.NS.Handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, names, err := linkNames(h)
	if err != nil {
		return nil, err
	}
	out := &Links{}
	for _, l := range links {
		a := l.Attrs()
		lk := Link{
			Index: a.Index, Name: a.Name, Type: l.Type(), MTU: a.MTU,
			AdminUp:   a.Flags&net.FlagUp != 0,
			OperState: a.OperState.String(),
			Carrier:   a.RawFlags&unix.IFF_LOWER_UP != 0,
			Master:    names[a.MasterIndex],
		}
		if len(a.HardwareAddr) > 0 {
			lk.MAC = a.HardwareAddr.String()
		}
		if s := a.Statistics; s != nil {
			lk.Stats = &LinkStats{RxPackets: s.RxPackets, TxPackets: s.TxPackets, RxDropped: s.RxDropped,
				TxDropped: s.TxDropped, RxErrors: s.RxErrors, TxErrors: s.TxErrors}
		}
		switch v := l.(type) {
		case *netlink.Veth:
			lk.PeerIndex, lk.PeerNetnsID = a.ParentIndex, a.NetNsID
		case *netlink.Vxlan:
			lk.VXLAN = &VXLANInfo{VNI: v.VxlanId, Port: v.Port, Parent: names[v.VtepDevIndex], Learning: v.Learning}
			if v.SrcAddr != nil {
				lk.VXLAN.Local = v.SrcAddr.String()
			}
		case *netlink.Iptun:
			lk.Tunnel = &TunnelInfo{Parent: names[int(v.Link)]}
			if v.Local != nil {
				lk.Tunnel.Local = v.Local.String()
			}
			if v.Remote != nil {
				lk.Tunnel.Remote = v.Remote.String()
			}
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err == nil {
			for _, ad := range addrs {
				if ad.IPNet != nil && !ad.IP.IsLinkLocalUnicast() {
					lk.Addrs = append(lk.Addrs, ad.IPNet.String())
				}
			}
		}
		if qs, err := h.QdiscList(l); err == nil {
			for _, q := range qs {
				qa := q.Attrs()
				if qa.Parent != netlink.HANDLE_ROOT {
					continue
				}
				qst := &QdiscStats{Kind: q.Type()}
				if st := qa.Statistics; st != nil && st.Queue != nil {
					qst.Drops, qst.Overlimits, qst.Backlog, qst.QueueLen = st.Queue.Drops, st.Queue.Overlimits, st.Queue.Backlog, st.Queue.Qlen
				}
				lk.Qdisc = qst
			}
		}
		out.Links = append(out.Links, lk)
	}
	sort.Slice(out.Links, func(i, j int) bool { return out.Links[i].Index < out.Links[j].Index })
	return out, ctx.Err()
}
