package collectors

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Sockets is `ss -ltnu` and `ss -s` of a namespace, read through sock_diag:
// who listens on which address and port, how full each listen queue is, and
// how many TCP sockets are in each state.
type Sockets struct {
	Listeners []Listener     `json:"listeners"`
	TCPStates map[string]int `json:"tcp_states"`
	// TopRemotes are the destinations holding the most TCP sockets: one
	// destination holding as many as the ephemeral range is port exhaustion.
	TopRemotes []RemoteCount `json:"top_remotes,omitempty"`
}

// RemoteCount is how many TCP sockets one remote address and port holds.
type RemoteCount struct {
	Remote  string `json:"remote"`
	Sockets int    `json:"sockets"`
}

// Listener is a listening TCP socket or a bound UDP socket.
type Listener struct {
	Proto string `json:"proto"` // tcp, udp
	Addr  string `json:"addr"`  // 0.0.0.0, ::, 127.0.0.1...
	Port  int    `json:"port"`
	// Backlog and Queued are the accept queue's size and fill (TCP).
	Backlog uint32 `json:"backlog,omitempty"`
	Queued  uint32 `json:"queued,omitempty"`
}

// Loopback reports whether the listener accepts only local connections.
func (l Listener) Loopback() bool {
	a, err := netip.ParseAddr(l.Addr)
	return err == nil && a.IsLoopback()
}

// On returns the listeners of a protocol and port.
func (s *Sockets) On(proto string, port int) []Listener {
	var out []Listener
	for _, l := range s.Listeners {
		if l.Proto == proto && l.Port == port {
			out = append(out, l)
		}
	}
	return out
}

func init() {
	register(spec{name: "sockets", help: "listening TCP/UDP sockets with their address and accept queue, TCP sockets by state (sock_diag)",
		scopes: Scopes, defaults: []Scope{ScopeSource, ScopePeer, ScopeNode}, timeout: 2 * time.Second}, collectSockets)
}

var tcpStateNames = map[uint8]string{
	netlink.TCP_ESTABLISHED: "ESTABLISHED", netlink.TCP_SYN_SENT: "SYN-SENT", netlink.TCP_SYN_RECV: "SYN-RECV",
	netlink.TCP_FIN_WAIT1: "FIN-WAIT-1", netlink.TCP_FIN_WAIT2: "FIN-WAIT-2", netlink.TCP_TIME_WAIT: "TIME-WAIT",
	netlink.TCP_CLOSE: "CLOSE", netlink.TCP_CLOSE_WAIT: "CLOSE-WAIT", netlink.TCP_LAST_ACK: "LAST-ACK",
	netlink.TCP_LISTEN: "LISTEN", netlink.TCP_CLOSING: "CLOSING",
}

func collectSockets(ctx context.Context, in Input) (*Sockets, error) {
	h, err := in.NS.Handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	out := &Sockets{TCPStates: map[string]int{}}
	remotes := map[string]int{}
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		tcp, err := h.SocketDiagTCP(fam)
		if err != nil {
			return out, fmt.Errorf("sock_diag tcp: %w", err)
		}
		for _, s := range tcp {
			out.TCPStates[tcpStateNames[s.State]]++
			if s.State != netlink.TCP_LISTEN && s.ID.DestinationPort != 0 {
				remotes[netip.AddrPortFrom(mustAddr(s.ID.Destination), s.ID.DestinationPort).String()]++
			}
			if s.State == netlink.TCP_LISTEN {
				out.Listeners = append(out.Listeners, Listener{Proto: "tcp", Addr: ipString(s.ID.Source), Port: int(s.ID.SourcePort),
					Backlog: s.WQueue, Queued: s.RQueue})
			}
		}
		udp, err := h.SocketDiagUDP(fam)
		if err != nil {
			return out, fmt.Errorf("sock_diag udp: %w", err)
		}
		for _, s := range udp {
			// Bound, unconnected: a server.
			if s.ID.DestinationPort == 0 {
				out.Listeners = append(out.Listeners, Listener{Proto: "udp", Addr: ipString(s.ID.Source), Port: int(s.ID.SourcePort)})
			}
		}
	}
	for r, n := range remotes {
		out.TopRemotes = append(out.TopRemotes, RemoteCount{r, n})
	}
	sort.Slice(out.TopRemotes, func(i, j int) bool {
		if out.TopRemotes[i].Sockets != out.TopRemotes[j].Sockets {
			return out.TopRemotes[i].Sockets > out.TopRemotes[j].Sockets
		}
		return out.TopRemotes[i].Remote < out.TopRemotes[j].Remote
	})
	if len(out.TopRemotes) > 5 {
		out.TopRemotes = out.TopRemotes[:5]
	}
	sort.Slice(out.Listeners, func(i, j int) bool {
		a, b := out.Listeners[i], out.Listeners[j]
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.Addr < b.Addr
	})
	return out, ctx.Err()
}

func mustAddr(ip []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func ipString(ip []byte) string {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return ""
	}
	return a.Unmap().String()
}
