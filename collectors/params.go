package collectors

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/vishvananda/netlink"
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

	// ExtraFlows are further flows for the firewall collectors to trace
	// (e.g. the overlay's UDP between two nodes). A flow without a source
	// is from the source namespace; one without a destination is to it.
	ExtraFlows []Flow `json:"extra_flows,omitempty"`
	// DNSServers are the nameservers the DNS probe will ask (Prepare).
	DNSServers []string `json:"dns_servers,omitempty"`
	// Flows are every flow the run's probes send, with the source address
	// the kernel picks for each (Prepare); the firewall collectors trace
	// them and the drops watch watches them.
	Flows []Flow `json:"flows,omitempty"`
	// Prepared is set once Prepare has filled the fields above.
	Prepared bool `json:"prepared,omitempty"`

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

// needDest and needPort say what a probe lacks: a destination, a port.
func needDest(p *Params) error {
	if p.To == nil || !p.To.Addr.IsValid() {
		return fmt.Errorf("--to IP or HOST:PORT")
	}
	return nil
}

func needPort(p *Params) error {
	if p.To == nil || !p.To.Addr.IsValid() || p.To.Port == 0 {
		return fmt.Errorf("--to HOST:PORT with a port")
	}
	return nil
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
	if numericTLD(host) {
		return nil, fmt.Errorf("bad destination %q: %q is not an IP address (IPv4 is four numbers from 0 to 255) and a name cannot end in a number (%s)", s, host, accepted)
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

// numericTLD says whether a name's last label is all digits: no top-level
// domain is (RFC 3696), so it is a mistyped IP address, which a resolver
// would be asked about in vain (or ping would read as an address).
func numericTLD(s string) bool {
	s = strings.TrimSuffix(s, ".")
	last := s[strings.LastIndexByte(s, '.')+1:]
	if last == "" {
		return false
	}
	for _, r := range last {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// ValidateName checks a name given to --dns.
func ValidateName(s string) error {
	if numericTLD(s) {
		return fmt.Errorf("bad DNS name %q: a name cannot end in a number (an IP address is not a name to resolve)", s)
	}
	if !validHostname(s) {
		return fmt.Errorf("bad DNS name %q: letters, digits, '-' and '_' in dot-separated labels of at most 63 characters", s)
	}
	return nil
}

// Prepare fills what the collectors derive from the source namespace before
// a run, for the shared parameters and every job's own: the resolv.conf path,
// the nameservers the DNS probe will ask, and the flows of every probe of the
// run with the source address the kernel picks towards each destination.
func Prepare(t *Target, shared *Params, jobs []Job) error {
	if t.Source == nil {
		return badInput(fmt.Errorf("no source namespace"))
	}
	all := []*Params{shared}
	for _, j := range jobs {
		if j.Params != nil && j.Params != shared {
			all = append(all, j.Params)
		}
	}
	// The jobs' own parameters are mostly copies of the shared ones: each
	// resolv.conf is read once.
	servers := map[string][]string{}
	for _, p := range all {
		if p.ResolvConf == "" {
			p.ResolvConf = shared.ResolvConf
		}
		if p.ResolvConf == "" {
			p.ResolvConf = DefaultResolvConf(t.Source.Path())
		}
		if len(p.DNSServers) == 0 {
			p.DNSServers = p.Nameservers
		}
		if len(p.DNSServers) == 0 && len(p.DNS) > 0 {
			if _, read := servers[p.ResolvConf]; !read {
				if rc, err := ReadResolvConf(p.ResolvConf); err == nil {
					servers[p.ResolvConf] = rc.Servers()
				} else {
					servers[p.ResolvConf] = nil
				}
			}
			p.DNSServers = servers[p.ResolvConf]
		}
	}
	src, err := newSourcer(t.Source)
	if err != nil {
		return err
	}
	defer src.Close()
	var flows []Flow
	for _, p := range all {
		flows = append(flows, p.probeFlows()...)
	}
	flows = src.resolve(flows)
	for _, p := range all {
		p.Flows, p.Prepared = flows, true
	}
	return nil
}

// sourcer finds the address a namespace sends from towards a destination,
// as `ip route get` says, else its first global address of that family.
type sourcer struct {
	*kernelRoutes
	addrs []netip.Addr
}

func newSourcer(ns *netns.NS) (*sourcer, error) {
	k, err := openKernelRoutes(ns)
	if err != nil {
		return nil, err
	}
	s := &sourcer{kernelRoutes: k}
	if as, err := k.h.AddrList(nil, netlink.FAMILY_ALL); err == nil {
		for _, a := range as {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap().IsGlobalUnicast() {
				s.addrs = append(s.addrs, ip.Unmap())
			}
		}
	}
	return s, nil
}

func (s *sourcer) from(dst netip.Addr) netip.Addr {
	if !dst.IsValid() {
		return netip.Addr{}
	}
	if a := s.get(dst).src; a.IsValid() && a.Is4() == dst.Is4() {
		return a
	}
	for _, x := range s.addrs {
		if x.Is4() == dst.Is4() {
			return x
		}
	}
	return netip.Addr{}
}

// resolve fills the flows' missing ends with the namespace's own address and
// drops duplicates.
func (s *sourcer) resolve(flows []Flow) []Flow {
	var out []Flow
	for _, f := range flows {
		switch {
		case !f.Src.IsValid():
			f.Src = s.from(f.Dst)
		case !f.Dst.IsValid():
			f.Dst = s.from(f.Src)
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// Limits on a question that arrives from elsewhere (an agent's caller):
// enough for any diagnosis, small enough that no question ties up a node.
const (
	MaxPingCount    = 100
	MaxTCPAttempts  = 20
	MaxHopRounds    = 10
	MaxHopsLimit    = 64
	MaxProbeTimeout = 30 * time.Second
	MaxDNSNames     = 16
	MaxFlows        = 256
	MaxFilterLen    = 1024
)

// Validate checks parameters before anything runs, and says what is
// accepted. Paths are checked by the caller's policy (an agent takes none).
func (p *Params) Validate() error {
	bound := func(what string, v, max int) error {
		if v < 0 || v > max {
			return fmt.Errorf("%s %d: accepted 0 (the default) to %d", what, v, max)
		}
		return nil
	}
	for _, err := range []error{
		bound("ping count", p.PingCount, MaxPingCount),
		bound("TCP attempts", p.TCPAttempts, MaxTCPAttempts),
		bound("hop rounds", p.HopRounds, MaxHopRounds),
		bound("max hops", p.MaxHops, MaxHopsLimit),
		bound("DNS names", len(p.DNS), MaxDNSNames),
		bound("flows", len(p.Flows)+len(p.ExtraFlows), MaxFlows),
		bound("filter length", len(p.Capture.Filter), MaxFilterLen),
	} {
		if err != nil {
			return err
		}
	}
	if p.ProbeTimeout < 0 || p.ProbeTimeout > MaxProbeTimeout {
		return fmt.Errorf("probe timeout %s: accepted 0 (the default, %s) to %s", p.ProbeTimeout, DefaultProbeTimeout, MaxProbeTimeout)
	}
	if p.PingInterval < 0 || p.PingInterval > 10*time.Second {
		return fmt.Errorf("ping interval %s: accepted 0 (the default, %s) to 10s", p.PingInterval, DefaultPingInterval)
	}
	if c := p.Capture; c.Duration < 0 || c.Duration > MaxCaptureDuration || c.MaxPackets < 0 || c.MaxBytes < 0 || c.SnapLen < 0 || c.SnapLen > PayloadSnapLen {
		return fmt.Errorf("capture: duration 0 to %s, packets, bytes and snap length not negative, snap length at most %d", MaxCaptureDuration, PayloadSnapLen)
	}
	if strings.ContainsAny(p.Capture.Iface, "/\x00 ") || len(p.Capture.Iface) > 15 {
		return fmt.Errorf("capture interface %q: an interface name is at most 15 characters, without '/' or spaces", p.Capture.Iface)
	}
	for _, n := range p.DNS {
		if err := ValidateName(n); err != nil {
			return err
		}
	}
	for _, list := range [][]string{p.Nameservers, p.DNSEndpoints, p.DNSServers} {
		for _, a := range list {
			if _, err := netip.ParseAddr(a); err != nil {
				return fmt.Errorf("DNS server %q: give an IP address", a)
			}
		}
	}
	switch p.DropsMethod {
	case "", "ebpf", "tracefs":
	default:
		return fmt.Errorf("drops method %q: accepted: ebpf, tracefs, or empty (eBPF, else tracefs)", p.DropsMethod)
	}
	if p.To != nil && p.To.Name != "" {
		if err := ValidateName(p.To.Name); err != nil {
			return err
		}
	}
	return nil
}
