package collectors

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"golang.org/x/net/dns/dnsmessage"
)

// DNS is dig run the way the pod's resolver would run it: every name, asked of
// every nameserver in the pod's resolv.conf (and of the DNS Service's
// endpoints when given), through the FQDNs glibc would try under the search
// list and ndots, over UDP and over TCP when the answer is truncated.
type DNS struct {
	ResolvConf  string      `json:"resolv_conf"`
	Nameservers []string    `json:"nameservers"`
	Search      []string    `json:"search"`
	Ndots       int         `json:"ndots"`
	Lookups     []DNSLookup `json:"lookups"`
}

// Roles of the servers a lookup asks.
const (
	// RoleResolvConf: a nameserver of the pod's resolv.conf.
	RoleResolvConf = "resolv.conf"
	// RoleEndpoint: a DNS server asked directly, bypassing the Service.
	RoleEndpoint = "endpoint"
	// RoleFallback: the server glibc asks when resolv.conf names none.
	RoleFallback = "glibc-fallback"
)

// DNSLookup is one name asked of one server.
type DNSLookup struct {
	Name   string `json:"name"`
	Server string `json:"server"`
	// Role is RoleResolvConf, RoleEndpoint or RoleFallback.
	Role     string     `json:"role"`
	Resolved bool       `json:"resolved"`
	FQDN     string     `json:"fqdn,omitempty"` // the candidate that answered
	Answers  []string   `json:"answers,omitempty"`
	Queries  []DNSQuery `json:"queries"`
}

// DNSQuery is one question on the wire.
type DNSQuery struct {
	FQDN string `json:"fqdn"`
	// Type is "A" or "AAAA": like getaddrinfo, the probe asks both.
	Type      string   `json:"type"`
	Proto     string   `json:"proto"`
	Rcode     string   `json:"rcode,omitempty"` // NOERROR, NXDOMAIN, SERVFAIL, REFUSED...
	Answers   []string `json:"answers,omitempty"`
	Truncated bool     `json:"truncated,omitempty"`
	MS        float64  `json:"ms"`
	// Error is "timeout", "refused" (ICMP port unreachable),
	// "unreachable" or another failure; empty when a reply came.
	Error string `json:"error,omitempty"`
}

// TimedOut reports a query that got no answer in time.
func (q DNSQuery) TimedOut() bool { return q.Error == "timeout" }

// Refused reports a query the server's host refused (nothing on port 53)
// or the server answered REFUSED.
func (q DNSQuery) Refused() bool { return q.Error == "refused" || q.Rcode == "REFUSED" }

// Last is the lookup's last query, which ended it.
func (l DNSLookup) Last() (DNSQuery, bool) {
	if len(l.Queries) == 0 {
		return DNSQuery{}, false
	}
	return l.Queries[len(l.Queries)-1], true
}

// Failed reports lookups that did not resolve.
func (d *DNS) Failed() []DNSLookup {
	var out []DNSLookup
	for _, l := range d.Lookups {
		if !l.Resolved {
			out = append(out, l)
		}
	}
	return out
}

func init() {
	register(spec{name: "dns", help: "resolve --dns names (A and AAAA) with the pod's resolv.conf: every nameserver, every search candidate, rcode, answers, latency",
		scopes: []Scope{ScopeSource}, probe: true, timeout: 15 * time.Second, needs: func(p *Params) error {
			if len(p.DNS) == 0 {
				return fmt.Errorf("--dns NAME")
			}
			return nil
		}}, collectDNS)
}

func collectDNS(ctx context.Context, in Input) (*DNS, error) {
	if len(in.DNS) == 0 {
		return nil, errors.New("no names: give --dns NAME")
	}
	for _, n := range in.DNS {
		if err := ValidateName(n); err != nil {
			return nil, err
		}
	}
	path := in.ResolvConf
	if path == "" {
		path = DefaultResolvConf(in.NS.Path())
	}
	rc, err := ReadResolvConf(path)
	if err != nil {
		return nil, err
	}
	servers, role := rc.Nameservers, RoleResolvConf
	if len(in.Nameservers) > 0 {
		servers = in.Nameservers
	}
	if len(servers) == 0 {
		// As glibc does; the finding says the file names none.
		servers, role = rc.Servers(), RoleFallback
	}
	type srv struct{ addr, role string }
	var all []srv
	for _, s := range servers {
		all = append(all, srv{s, role})
	}
	for _, s := range in.DNSEndpoints {
		all = append(all, srv{s, RoleEndpoint})
	}
	for _, s := range all {
		if _, err := netip.ParseAddr(s.addr); err != nil {
			return nil, fmt.Errorf("nameserver %q is not an IP address", s.addr)
		}
	}
	out := &DNS{ResolvConf: path, Nameservers: servers, Search: rc.Search, Ndots: rc.Ndots}
	out.Lookups = make([]DNSLookup, len(in.DNS)*len(all))
	var wg sync.WaitGroup
	var perr error
	var mu sync.Mutex
	for i, name := range in.DNS {
		for j, s := range all {
			wg.Go(func() {
				var err error
				defer func() {
					if err != nil {
						mu.Lock()
						perr = errors.Join(perr, err)
						mu.Unlock()
					}
				}()
				defer Recover("DNS lookup", &err)
				out.Lookups[i*len(all)+j] = lookup(ctx, in.NS, rc, name, s.addr, s.role, in.probeTimeout())
			})
		}
	}
	wg.Wait()
	return out, perr
}

// lookup walks the search candidates as glibc does, asking A and AAAA of
// each as getaddrinfo does: an answer to either ends it; NXDOMAIN or an
// empty answer moves to the next candidate. A server that does not answer
// twice in a row is given up on, as a resolver would.
func lookup(ctx context.Context, ns *netns.NS, rc *ResolvConf, name, server, role string, timeout time.Duration) DNSLookup {
	l := DNSLookup{Name: name, Server: server, Role: role}
	silent := 0
	for _, fqdn := range rc.Candidates(name) {
		if ctx.Err() != nil {
			break
		}
		var qs [2]DNSQuery
		var wg sync.WaitGroup
		for i, typ := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
			wg.Go(func() { qs[i] = askOver(ctx, ns, server, fqdn, typ, timeout) })
		}
		wg.Wait()
		// The A query drives the walk; AAAA only adds answers (a name may
		// have only AAAA records).
		a, aaaa := qs[0], qs[1]
		l.Queries = append(l.Queries, aaaa, a)
		answers := append(append([]string{}, a.Answers...), aaaa.Answers...)
		if len(answers) > 0 && (a.Rcode == "NOERROR" || aaaa.Rcode == "NOERROR") {
			l.Resolved, l.FQDN, l.Answers = true, fqdn, answers
			break
		}
		if a.Error != "" {
			silent++
			if silent == 2 || !a.TimedOut() {
				break
			}
			continue
		}
		silent = 0
		if a.Rcode != "NXDOMAIN" && a.Rcode != "NOERROR" {
			break // SERVFAIL, REFUSED: the search stops, as in glibc
		}
	}
	return l
}

// askOver asks over UDP, and again over TCP when the answer is truncated
// (Truncated stays set on the TCP query: the UDP answer did not fit).
func askOver(ctx context.Context, ns *netns.NS, server, fqdn string, typ dnsmessage.Type, timeout time.Duration) DNSQuery {
	q := QueryType(ctx, ns, server, fqdn, typ, "udp", timeout)
	if q.Truncated {
		tq := QueryType(ctx, ns, server, fqdn, typ, "tcp", timeout)
		tq.Truncated = true // remembered: the UDP answer did not fit
		return tq
	}
	return q
}

// Query asks one DNS server for the A records of fqdn from inside the
// namespace, over "udp" or "tcp".
func Query(ctx context.Context, ns *netns.NS, server, fqdn, proto string, timeout time.Duration) DNSQuery {
	return QueryType(ctx, ns, server, fqdn, dnsmessage.TypeA, proto, timeout)
}

// QueryType asks one DNS server for records of a type (A or AAAA).
func QueryType(ctx context.Context, ns *netns.NS, server, fqdn string, typ dnsmessage.Type, proto string, timeout time.Duration) (q DNSQuery) {
	q = DNSQuery{FQDN: fqdn, Type: strings.TrimPrefix(typ.String(), "Type"), Proto: proto}
	start := time.Now()
	defer func() { q.MS = round3(float64(time.Since(start).Microseconds()) / 1000) }()
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	name, err := dnsmessage.NewName(fqdn)
	if err != nil {
		q.Error = err.Error()
		return q
	}
	id := uint16(rand.Uint32())
	msg := dnsmessage.Message{Header: dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: name, Type: typ, Class: dnsmessage.ClassINET}}}
	wire, err := msg.Pack()
	if err != nil {
		q.Error = err.Error()
		return q
	}
	c, err := ns.Dial(qctx, proto, net.JoinHostPort(server, "53"))
	if err != nil {
		q.Error = dnsErr(err)
		return q
	}
	defer c.Close()
	dl, _ := qctx.Deadline()
	c.SetDeadline(dl)
	var reply []byte
	if proto == "tcp" {
		framed := binary.BigEndian.AppendUint16(nil, uint16(len(wire)))
		if _, err := c.Write(append(framed, wire...)); err != nil {
			q.Error = dnsErr(err)
			return q
		}
		var lenb [2]byte
		if _, err := io.ReadFull(c, lenb[:]); err != nil {
			q.Error = dnsErr(err)
			return q
		}
		reply = make([]byte, binary.BigEndian.Uint16(lenb[:]))
		if _, err := io.ReadFull(c, reply); err != nil {
			q.Error = dnsErr(err)
			return q
		}
	} else {
		if _, err := c.Write(wire); err != nil {
			q.Error = dnsErr(err)
			return q
		}
		buf := make([]byte, 65535)
		for {
			n, err := c.Read(buf)
			if err != nil {
				q.Error = dnsErr(err)
				return q
			}
			if n >= 2 && binary.BigEndian.Uint16(buf) == id {
				reply = buf[:n]
				break
			}
		}
	}
	var m dnsmessage.Message
	if err := m.Unpack(reply); err != nil {
		q.Error = "malformed reply: " + err.Error()
		return q
	}
	q.Rcode = rcodeName(m.Header.RCode)
	q.Truncated = m.Header.Truncated
	for _, a := range m.Answers {
		switch r := a.Body.(type) {
		case *dnsmessage.AResource:
			q.Answers = append(q.Answers, netip.AddrFrom4(r.A).String())
		case *dnsmessage.AAAAResource:
			q.Answers = append(q.Answers, netip.AddrFrom16(r.AAAA).String())
		}
	}
	return q
}

func rcodeName(r dnsmessage.RCode) string {
	switch r {
	case dnsmessage.RCodeSuccess:
		return "NOERROR"
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeNameError:
		return "NXDOMAIN"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	}
	return fmt.Sprintf("RCODE%d", r)
}

func dnsErr(err error) string {
	switch classifyConnErr(err) {
	case "timeout":
		return "timeout"
	case "refused":
		return "refused"
	case "unreachable":
		return "unreachable"
	}
	return err.Error()
}

// ResolveName resolves a name the way the pod would (its resolv.conf, its
// nameservers, from inside its namespace) and returns its addresses: the
// IPv4 ones first, then the IPv6 ones.
func ResolveName(ctx context.Context, ns *netns.NS, resolvConf, name string, timeout time.Duration) ([]netip.Addr, error) {
	rc, err := ReadResolvConf(resolvConf)
	if err != nil {
		return nil, err
	}
	var tried []string
	for _, server := range rc.Servers() {
		l := lookup(ctx, ns, rc, name, server, RoleResolvConf, timeout)
		if l.Resolved {
			var v4, v6 []netip.Addr
			for _, s := range l.Answers {
				if a, err := netip.ParseAddr(s); err == nil {
					if a.Is4() {
						v4 = append(v4, a)
					} else {
						v6 = append(v6, a)
					}
				}
			}
			if len(v4)+len(v6) > 0 {
				return append(v4, v6...), nil
			}
		}
		last := "no answer"
		if q, ok := l.Last(); ok {
			last = q.Rcode + q.Error
		}
		tried = append(tried, server+": "+last)
	}
	return nil, fmt.Errorf("cannot resolve %q from the pod (%v); give an IP with --to, and --dns %s to diagnose DNS", name, tried, name)
}

// ResolveDest resolves a destination given by name to its first address
// (IPv4 if it has one).
func ResolveDest(ctx context.Context, ns *netns.NS, resolvConf string, d *Dest, timeout time.Duration) error {
	if d.Addr.IsValid() || d.Name == "" {
		return nil
	}
	addrs, err := ResolveName(ctx, ns, resolvConf, d.Name, timeout)
	if err != nil {
		return err
	}
	d.Addr = addrs[0]
	return nil
}
