package collectors

import (
	"fmt"

	"golang.org/x/sys/unix"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Params is the question the collectors answer: where to probe, which names
// to resolve, and how hard to try. Zero values take the defaults.
type Params struct {
	// To is the destination of the probes (ping, TCP, path MTU, hops).
	To *Dest `json:"to,omitempty"`
	// DNS names to resolve with the pod's resolv.conf.
	DNS []string `json:"dns,omitempty"`
	// ResolvConf is the pod's resolv.conf path (see DefaultResolvConf).
	ResolvConf string `json:"resolv_conf,omitempty"`
	// Nameservers overrides the resolv.conf nameservers (IPs only).
	Nameservers []string `json:"nameservers,omitempty"`
	// DNSEndpoints are DNS servers also asked directly, bypassing the DNS
	// Service (the CoreDNS pods): the Service failing while they answer is
	// a broken path, not a broken DNS.
	DNSEndpoints []string `json:"dns_endpoints,omitempty"`

	// Src is the source pod's address, filled by Prepare; the firewall
	// collectors trace the probes' flows from it.
	Src netip.Addr `json:"src,omitzero"`
	// ExtraFlows are further flows for the firewall collectors to trace
	// (e.g. the overlay's UDP between two nodes).
	ExtraFlows []Flow `json:"extra_flows,omitempty"`
	// dnsServers are the nameservers the DNS probe will ask (Prepare).
	DNSServers []string `json:"dns_servers,omitempty"`

	// PingGateway pings the default gateway when there is no destination.
	PingGateway bool `json:"ping_gateway,omitempty"`

	PingCount    int           `json:"ping_count,omitempty"`
	PingInterval time.Duration `json:"ping_interval,omitempty"`
	TCPAttempts  int           `json:"tcp_attempts,omitempty"`
	ProbeTimeout time.Duration `json:"probe_timeout,omitempty"`
	HopRounds    int           `json:"hop_rounds,omitempty"`
	MaxHops      int           `json:"max_hops,omitempty"`

	Capture CaptureOptions `json:"capture"`
	// DropsMethod forces how the kernel's drop reasons are read: "ebpf" or
	// "tracefs"; empty tries eBPF, then tracefs.
	DropsMethod string `json:"drops_method,omitempty"`
}

// Defaults for the probes: small enough to answer in about a second on a
// healthy path, large enough to see loss.
const (
	DefaultPingCount    = 5
	DefaultPingInterval = 100 * time.Millisecond
	DefaultTCPAttempts  = 3
	DefaultProbeTimeout = time.Second
	DefaultHopRounds    = 3
	DefaultMaxHops      = 16
)

func (p *Params) pingCount() int   { return orInt(p.PingCount, DefaultPingCount) }
func (p *Params) tcpAttempts() int { return orInt(p.TCPAttempts, DefaultTCPAttempts) }
func (p *Params) hopRounds() int   { return orInt(p.HopRounds, DefaultHopRounds) }
func (p *Params) maxHops() int     { return orInt(p.MaxHops, DefaultMaxHops) }
func (p *Params) probeTimeout() time.Duration {
	if p.ProbeTimeout > 0 {
		return p.ProbeTimeout
	}
	return DefaultProbeTimeout
}
func (p *Params) pingInterval() time.Duration {
	if p.PingInterval > 0 {
		return p.PingInterval
	}
	return DefaultPingInterval
}

func orInt(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// Dest is a probe destination: an IP and, for TCP, a port.
type Dest struct {
	Addr netip.Addr `json:"addr"`
	Port uint16     `json:"port,omitempty"`
	// Name is what the user typed when it was a name.
	Name string `json:"name,omitempty"`
}

func (d *Dest) String() string {
	if d.Port == 0 {
		return d.Addr.String()
	}
	return netip.AddrPortFrom(d.Addr, d.Port).String()
}

// ParseDest parses --to: "IP", "IP:PORT", "[IPv6]:PORT", "NAME:PORT" or "NAME".
// Names are returned unresolved (Addr invalid); ResolveDest resolves them the
// way the pod would.
func ParseDest(s string) (*Dest, error) {
	const accepted = "accepted: IP, IP:PORT, [IPv6]:PORT, NAME or NAME:PORT, e.g. 10.0.0.5:8080 or web.default.svc:80"
	if s == "" {
		return nil, fmt.Errorf("empty destination (%s)", accepted)
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return &Dest{Addr: a.Unmap()}, nil
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		host, portStr = s, ""
	}
	d := &Dest{}
	if portStr != "" {
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || port == 0 {
			return nil, fmt.Errorf("bad port %q in %q: a port is a number from 1 to 65535 (%s)", portStr, s, accepted)
		}
		d.Port = uint16(port)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		d.Addr = a.Unmap()
		return d, nil
	}
	if !validHostname(host) {
		return nil, fmt.Errorf("bad destination %q: not an IP address or a DNS name (%s)", s, accepted)
	}
	d.Name = strings.TrimSuffix(host, ".")
	return d, nil
}

// validHostname accepts DNS names as RFC 1123 allows them (Kubernetes Service
// names included), nothing a shell or a resolver would treat specially.
func validHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// ValidateName checks a name given to --dns.
func ValidateName(s string) error {
	if !validHostname(s) {
		return fmt.Errorf("bad DNS name %q: letters, digits, '-' and '_' in dot-separated labels of at most 63 characters", s)
	}
	return nil
}

// Prepare fills what the collectors derive from the source namespace: the
// resolv.conf path, the nameservers the DNS probe will ask, and the source
// address of the probes (the one the kernel picks towards the destination,
// else the first global address).
func (p *Params) Prepare(t *Target) error {
	if t.Source == nil {
		return fmt.Errorf("no source namespace")
	}
	if p.ResolvConf == "" {
		p.ResolvConf = DefaultResolvConf(t.Source.Path())
	}
	if len(p.DNS) > 0 || len(p.DNSServers) == 0 {
		p.DNSServers = p.Nameservers
		if len(p.DNSServers) == 0 {
			if rc, err := ReadResolvConf(p.ResolvConf); err == nil {
				p.DNSServers = rc.Nameservers
			}
		}
	}
	if p.Src.IsValid() {
		return nil
	}
	h, err := t.Source.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	if p.To != nil && p.To.Addr.Is4() {
		if rts, err := h.RouteGet(net.IP(p.To.Addr.AsSlice())); err == nil && len(rts) > 0 && rts[0].Src != nil {
			p.Src, _ = netip.AddrFromSlice(rts[0].Src.To4())
			return nil
		}
	}
	addrs, err := h.AddrList(nil, unix.AF_INET)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && !ip.IsLoopback() {
			p.Src = ip
			return nil
		}
	}
	return nil
}
