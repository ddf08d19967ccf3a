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

// DNSLookup is one name asked of one server.
type DNSLookup struct {
	Name   string `json:"name"`
	Server string `json:"server"`
	// Role is "resolv.conf" for the pod's nameservers, "endpoint" for a DNS
	// server asked directly (bypassing the Service).
	Role     string     `json:"role"`
	Resolved bool       `json:"resolved"`
	FQDN     string     `json:"fqdn,omitempty"` // the candidate that answered
	Answers  []string   `json:"answers,omitempty"`
	Queries  []DNSQuery `json:"queries"`
}

// DNSQuery is one question on the wire.
type DNSQuery struct {
	FQDN      string   `json:"fqdn"`
	Proto     string   `json:"proto"`
	Rcode     string   `json:"rcode,omitempty"` // NOERROR, NXDOMAIN, SERVFAIL, REFUSED...
	Answers   []string `json:"answers,omitempty"`
	Truncated bool     `json:"truncated,omitempty"`
	MS        float64  `json:"ms"`
	// Error is "timeout", "refused" (ICMP port unreachable) or another
	// failure; empty when a reply came.
	Error string `json:"error,omitempty"`
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
	register("dns", "resolve --dns names with the pod's resolv.conf: every nameserver, every search candidate, rcode, answers, latency",
		[]Scope{ScopeSource}, true, 15*time.Second, collectDNS)
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
	servers := rc.Nameservers
	if len(in.Nameservers) > 0 {
		servers = in.Nameservers
	}
	type srv struct{ addr, role string }
	var all []srv
	for _, s := range servers {
		all = append(all, srv{s, "resolv.conf"})
	}
	for _, s := range in.DNSEndpoints {
		all = append(all, srv{s, "endpoint"})
	}
	for _, s := range all {
		if _, err := netip.ParseAddr(s.addr); err != nil {
			return nil, fmt.Errorf("nameserver %q is not an IP address", s.addr)
		}
	}
	out := &DNS{ResolvConf: path, Nameservers: servers, Search: rc.Search, Ndots: rc.Ndots}
	out.Lookups = make([]DNSLookup, len(in.DNS)*len(all))
	var wg sync.WaitGroup
	for i, name := range in.DNS {
		for j, s := range all {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out.Lookups[i*len(all)+j] = lookup(ctx, in.NS, rc, name, s.addr, s.role, in.probeTimeout())
			}()
		}
	}
	wg.Wait()
	return out, nil
}

// lookup walks the search candidates as glibc does: NXDOMAIN or an empty
// answer moves to the next candidate; an answer ends it. A server that does
// not answer twice in a row is given up on, as a resolver would.
func lookup(ctx context.Context, ns *netns.NS, rc *ResolvConf, name, server, role string, timeout time.Duration) DNSLookup {
	l := DNSLookup{Name: name, Server: server, Role: role}
	silent := 0
	for _, fqdn := range rc.Candidates(name) {
		if ctx.Err() != nil {
			break
		}
		q := Query(ctx, ns, server, fqdn, "udp", timeout)
		if q.Truncated {
			l.Queries = append(l.Queries, q)
			q = Query(ctx, ns, server, fqdn, "tcp", timeout)
		}
		l.Queries = append(l.Queries, q)
		if q.Error != "" {
			silent++
			if silent == 2 || q.Error != "timeout" {
				break
			}
			continue
		}
		silent = 0
		if q.Rcode == "NOERROR" && len(q.Answers) > 0 {
			l.Resolved, l.FQDN, l.Answers = true, fqdn, q.Answers
			break
		}
		if q.Rcode != "NXDOMAIN" && q.Rcode != "NOERROR" {
			break // SERVFAIL, REFUSED: the search stops, as in glibc
		}
	}
	return l
}

// Query asks one DNS server for the A records of fqdn from inside the
// namespace, over "udp" or "tcp".
func Query(ctx context.Context, ns *netns.NS, server, fqdn, proto string, timeout time.Duration) (q DNSQuery) {
	q = DNSQuery{FQDN: fqdn, Proto: proto}
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
		Questions: []dnsmessage.Question{{Name: name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
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
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			q.Answers = append(q.Answers, netip.AddrFrom4(r.A).String())
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

// ResolveDest resolves a destination given by name the way the pod would:
// its resolv.conf, its nameservers, from inside its namespace.
func ResolveDest(ctx context.Context, ns *netns.NS, resolvConf string, d *Dest, timeout time.Duration) error {
	if d.Addr.IsValid() || d.Name == "" {
		return nil
	}
	rc, err := ReadResolvConf(resolvConf)
	if err != nil {
		return err
	}
	var tried []string
	for _, server := range rc.Nameservers {
		l := lookup(ctx, ns, rc, d.Name, server, "resolv.conf", timeout)
		if l.Resolved {
			a, err := netip.ParseAddr(l.Answers[0])
			if err == nil {
				d.Addr = a
				return nil
			}
		}
		last := "no answer"
		if n := len(l.Queries); n > 0 {
			q := l.Queries[n-1]
			last = q.Rcode + q.Error
		}
		tried = append(tried, server+": "+last)
	}
	return fmt.Errorf("cannot resolve %q from the pod (%v); give an IP with --to, and --dns %s to diagnose DNS", d.Name, tried, d.Name)
}
