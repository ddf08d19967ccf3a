package collectors

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"time"
)

// PcapSummary is what an engineer looks for in a capture, per flow: SYNs that
// got no SYN-ACK and how often they were retransmitted, resets, ICMP errors
// (with the next-hop MTU of fragmentation-needed), DNS queries that got no
// answer, and full-size segments sent again.
type PcapSummary struct {
	Packets int        `json:"packets"`
	Flows   []FlowNote `json:"flows,omitempty"`
	ICMP    []ICMPNote `json:"icmp,omitempty"`
	DNS     []DNSNote  `json:"dns_unanswered,omitempty"`
}

// FlowNote is one TCP flow, as its initiator opened it.
type FlowNote struct {
	Flow string `json:"flow"` // "tcp SRC:PORT -> DST:PORT"
	// Client and Server are the flow's ends.
	Client  netip.AddrPort `json:"client"`
	Server  netip.AddrPort `json:"server"`
	SYNs    int            `json:"syns"`
	SYNACK  bool           `json:"synack"`
	RSTFrom string         `json:"rst_from,omitempty"`
	// FullSizeRetx counts data the client sent again in segments of at
	// least the server's MSS less options: the signature of a PMTU black
	// hole. MSS is what the server's SYN-ACK advertised.
	FullSizeRetx int       `json:"full_size_retransmits,omitempty"`
	Retransmits  int       `json:"retransmits,omitempty"`
	MSS          int       `json:"mss,omitempty"`
	First        time.Time `json:"first"`
}

// ICMPNote is an ICMP (or ICMPv6) error and the flow it is about.
type ICMPNote struct {
	From string `json:"from"`
	// Family is "ipv6" for ICMPv6 (type 1 unreachable, 2 packet too big,
	// 3 time exceeded), empty for ICMP.
	Family string    `json:"family,omitempty"`
	Type   int       `json:"type"`
	Code   int       `json:"code"`
	MTU    int       `json:"mtu,omitempty"`
	About  string    `json:"about,omitempty"`
	At     time.Time `json:"at"`
	Count  int       `json:"count"`
}

// DNSNote is a DNS query with no response in the capture.
type DNSNote struct {
	Server string    `json:"server"`
	ID     uint16    `json:"id"`
	Tries  int       `json:"tries"`
	At     time.Time `json:"at"`
}

type pcapSummarizer struct {
	n     int
	flows map[string]*flowAcc
	icmp  map[string]*ICMPNote
	dnsQ  map[string]*DNSNote
	dnsA  map[string]bool
}

type flowAcc struct {
	FlowNote
	sentEnd uint32 // highest sequence number the client has sent
	sentAny bool
}

func newPcapSummarizer() *pcapSummarizer {
	return &pcapSummarizer{flows: map[string]*flowAcc{}, icmp: map[string]*ICMPNote{}, dnsQ: map[string]*DNSNote{}, dnsA: map[string]bool{}}
}

// ipPacket is the part of an IPv4 or IPv6 packet the summary reads.
type ipPacket struct {
	src, dst netip.Addr
	proto    byte   // the transport: 6, 17, 1 or 58
	l4       []byte // from the transport header on, as far as captured
	l4Len    int    // the transport's length on the wire
}

// parseIP reads an IPv4 or IPv6 header (and IPv6's extension headers);
// ok is false for anything else, and for fragments after the first.
func parseIP(et uint16, ip []byte) (p ipPacket, ok bool) {
	switch {
	case et == 0x0800 && len(ip) >= 20 && ip[0]>>4 == 4:
		ihl := int(ip[0]&0x0f) * 4
		if ihl < 20 || len(ip) < ihl {
			return p, false
		}
		if binary.BigEndian.Uint16(ip[6:])&0x1fff != 0 {
			return p, false // a later fragment: no transport header
		}
		p.src, _ = netip.AddrFromSlice(ip[12:16])
		p.dst, _ = netip.AddrFromSlice(ip[16:20])
		p.proto, p.l4 = ip[9], ip[ihl:]
		p.l4Len = int(binary.BigEndian.Uint16(ip[2:])) - ihl
		return p, true
	case et == 0x86dd && len(ip) >= 40 && ip[0]>>4 == 6:
		p.src = netip.AddrFrom16([16]byte(ip[8:24]))
		p.dst = netip.AddrFrom16([16]byte(ip[24:40]))
		next, off := ip[6], 40
		p.l4Len = int(binary.BigEndian.Uint16(ip[4:]))
		// A few extension headers at most; probes carry none.
		for range 8 {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(ip) < off+8 {
					return p, false
				}
				l := (int(ip[off+1]) + 1) * 8
				next, off, p.l4Len = ip[off], off+l, p.l4Len-l
				continue
			case 44: // fragment
				if len(ip) < off+8 || binary.BigEndian.Uint16(ip[off+2:])&0xfff8 != 0 {
					return p, false
				}
				next, off, p.l4Len = ip[off], off+8, p.l4Len-8
				continue
			}
			break
		}
		if off > len(ip) {
			return p, false
		}
		p.proto, p.l4 = next, ip[off:]
		return p, true
	}
	return p, false
}

// add reads one Ethernet frame (possibly truncated to the snap length).
func (s *pcapSummarizer) add(at time.Time, frame []byte, wire int) {
	s.n++
	if len(frame) < 14 {
		return
	}
	et := binary.BigEndian.Uint16(frame[12:])
	ip := frame[14:]
	if et == 0x8100 && len(frame) >= 18 {
		et, ip = binary.BigEndian.Uint16(frame[16:]), frame[18:]
	}
	pkt, ok := parseIP(et, ip)
	if !ok {
		return
	}
	src, dst, l4 := pkt.src, pkt.dst, pkt.l4
	switch pkt.proto {
	case 6:
		if len(l4) < 14 {
			return
		}
		sp, dp := binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
		seq := binary.BigEndian.Uint32(l4[4:])
		flags := l4[13]
		doff := int(l4[12]>>4) * 4
		payload := pkt.l4Len - doff
		a, b := netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp)
		syn, ack, rst := flags&0x02 != 0, flags&0x10 != 0, flags&0x04 != 0
		if syn && !ack {
			f := s.flow(a, b, at)
			f.SYNs++
			return
		}
		f, fromClient := s.lookup(a, b)
		if f == nil {
			return
		}
		if syn && ack && !fromClient {
			f.SYNACK = true
			f.MSS = tcpMSS(l4[:min(len(l4), doff)])
		}
		if rst {
			f.RSTFrom = a.Addr().String()
		}
		if fromClient && payload > 0 {
			end := seq + uint32(payload)
			// Data wholly below what was already sent is sent again
			// (sequence arithmetic wraps, hence the signed difference).
			if f.sentAny && int32(end-f.sentEnd) <= 0 {
				f.Retransmits++
				if f.MSS > 0 && payload >= f.MSS-40 {
					f.FullSizeRetx++
				}
			}
			if !f.sentAny || int32(end-f.sentEnd) > 0 {
				f.sentEnd, f.sentAny = end, true
			}
		}
	case 17:
		if len(l4) < 10 {
			return
		}
		sp, dp := binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
		id := binary.BigEndian.Uint16(l4[8:])
		switch {
		case dp == 53:
			k := fmt.Sprintf("%s|%d|%s|%d", src, sp, dst, id)
			if q := s.dnsQ[k]; q != nil {
				q.Tries++
			} else if len(s.dnsQ) < maxSummaryEntries {
				s.dnsQ[k] = &DNSNote{Server: dst.String(), ID: id, Tries: 1, At: at}
			}
		case sp == 53:
			if len(s.dnsA) < maxSummaryEntries {
				s.dnsA[fmt.Sprintf("%s|%d|%s|%d", dst, dp, src, id)] = true
			}
		}
	case 1, 58:
		s.icmpError(at, pkt)
	}
}

// maxSummaryEntries bounds each table of the summary: a capture of a busy
// node must not grow the summary without end.
const maxSummaryEntries = 10000

// icmpError notes an ICMP or ICMPv6 error and the flow it quotes.
func (s *pcapSummarizer) icmpError(at time.Time, pkt ipPacket) {
	l4 := pkt.l4
	if len(l4) < 8 {
		return
	}
	typ, code := l4[0], l4[1]
	v6 := pkt.proto == 58
	if v6 && (typ < 1 || typ > 3) || !v6 && typ != 3 && typ != 11 {
		return
	}
	n := ICMPNote{From: pkt.src.String(), Type: int(typ), Code: int(code), At: at, Count: 1}
	switch {
	case !v6 && typ == 3 && code == 4:
		n.MTU = int(binary.BigEndian.Uint16(l4[6:]))
	case v6 && typ == 2:
		n.MTU = int(binary.BigEndian.Uint32(l4[4:]))
	}
	if v6 {
		n.Family = "ipv6"
	}
	et := uint16(0x0800)
	if v6 {
		et = 0x86dd
	}
	if q, ok := parseIP(et, l4[8:]); ok {
		proto := map[byte]string{1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6"}[q.proto]
		n.About = fmt.Sprintf("%s %s -> %s", proto, q.src, q.dst)
		if (q.proto == 6 || q.proto == 17) && len(q.l4) >= 4 {
			n.About = fmt.Sprintf("%s %s -> %s", proto, netip.AddrPortFrom(q.src, binary.BigEndian.Uint16(q.l4)), netip.AddrPortFrom(q.dst, binary.BigEndian.Uint16(q.l4[2:])))
		}
	}
	k := fmt.Sprintf("%s|%d|%d|%d|%s", n.From, n.Type, n.Code, n.MTU, n.About)
	if e := s.icmp[k]; e != nil {
		e.Count++
	} else if len(s.icmp) < maxSummaryEntries {
		s.icmp[k] = &n
	}
}

func (s *pcapSummarizer) flow(client, server netip.AddrPort, at time.Time) *flowAcc {
	k := client.String() + ">" + server.String()
	f := s.flows[k]
	if f == nil && len(s.flows) >= maxSummaryEntries {
		return &flowAcc{} // counted nowhere: the table is full
	}
	if f == nil {
		f = &flowAcc{}
		f.Flow = fmt.Sprintf("tcp %s -> %s", client, server)
		f.Client, f.Server = client, server
		f.First = at
		s.flows[k] = f
	}
	return f
}

func (s *pcapSummarizer) lookup(a, b netip.AddrPort) (*flowAcc, bool) {
	if f := s.flows[a.String()+">"+b.String()]; f != nil {
		return f, true
	}
	if f := s.flows[b.String()+">"+a.String()]; f != nil {
		return f, false
	}
	return nil, false
}

func (s *pcapSummarizer) result() *PcapSummary {
	out := &PcapSummary{Packets: s.n}
	for _, f := range s.flows {
		out.Flows = append(out.Flows, f.FlowNote)
	}
	sort.Slice(out.Flows, func(i, j int) bool { return out.Flows[i].First.Before(out.Flows[j].First) })
	for _, n := range s.icmp {
		out.ICMP = append(out.ICMP, *n)
	}
	sort.Slice(out.ICMP, func(i, j int) bool { return out.ICMP[i].At.Before(out.ICMP[j].At) })
	for k, q := range s.dnsQ {
		if !s.dnsA[k] {
			out.DNS = append(out.DNS, *q)
		}
	}
	sort.Slice(out.DNS, func(i, j int) bool { return out.DNS[i].At.Before(out.DNS[j].At) })
	return out
}

// Unanswered returns the TCP flows whose SYNs got no SYN-ACK.
func (p *PcapSummary) Unanswered() []FlowNote {
	var out []FlowNote
	for _, f := range p.Flows {
		if f.SYNs > 0 && !f.SYNACK && f.RSTFrom == "" {
			out = append(out, f)
		}
	}
	return out
}

// tcpMSS reads the MSS option of a SYN's TCP header, 0 if absent.
func tcpMSS(hdr []byte) int {
	for i := 20; i+1 < len(hdr); {
		switch kind := hdr[i]; kind {
		case 0:
			return 0
		case 1:
			i++
		default:
			l := int(hdr[i+1])
			if l < 2 {
				return 0
			}
			if kind == 2 && l == 4 && i+4 <= len(hdr) {
				return int(binary.BigEndian.Uint16(hdr[i+2:]))
			}
			i += l
		}
	}
	return 0
}
