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
	Flow    string `json:"flow"` // "tcp SRC:PORT -> DST:PORT"
	SYNs    int    `json:"syns"`
	SYNACK  bool   `json:"synack"`
	RSTFrom string `json:"rst_from,omitempty"`
	// FullSizeRetx counts data the client sent again in segments of at
	// least the server's MSS less options: the signature of a PMTU black
	// hole. MSS is what the server's SYN-ACK advertised.
	FullSizeRetx int       `json:"full_size_retransmits,omitempty"`
	Retransmits  int       `json:"retransmits,omitempty"`
	MSS          int       `json:"mss,omitempty"`
	First        time.Time `json:"first"`
}

// ICMPNote is an ICMP error and the flow it is about.
type ICMPNote struct {
	From  string    `json:"from"`
	Type  int       `json:"type"`
	Code  int       `json:"code"`
	MTU   int       `json:"mtu,omitempty"`
	About string    `json:"about,omitempty"`
	At    time.Time `json:"at"`
	Count int       `json:"count"`
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
	client, server netip.AddrPort
	sentEnd        uint32 // highest sequence number the client has sent
	sentAny        bool
}

func newPcapSummarizer() *pcapSummarizer {
	return &pcapSummarizer{flows: map[string]*flowAcc{}, icmp: map[string]*ICMPNote{}, dnsQ: map[string]*DNSNote{}, dnsA: map[string]bool{}}
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
	if et != 0x0800 || len(ip) < 20 || ip[0]>>4 != 4 {
		return
	}
	ihl := int(ip[0]&0x0f) * 4
	if len(ip) < ihl {
		return
	}
	totalLen := int(binary.BigEndian.Uint16(ip[2:]))
	src, _ := netip.AddrFromSlice(ip[12:16])
	dst, _ := netip.AddrFromSlice(ip[16:20])
	l4 := ip[ihl:]
	switch ip[9] {
	case 6:
		if len(l4) < 14 {
			return
		}
		sp, dp := binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
		seq := binary.BigEndian.Uint32(l4[4:])
		flags := l4[13]
		doff := int(l4[12]>>4) * 4
		payload := totalLen - ihl - doff
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
			} else {
				s.dnsQ[k] = &DNSNote{Server: dst.String(), ID: id, Tries: 1, At: at}
			}
		case sp == 53:
			s.dnsA[fmt.Sprintf("%s|%d|%s|%d", dst, dp, src, id)] = true
		}
	case 1:
		if len(l4) < 8 || (l4[0] != 3 && l4[0] != 11) {
			return
		}
		n := ICMPNote{From: src.String(), Type: int(l4[0]), Code: int(l4[1]), At: at, Count: 1}
		if l4[0] == 3 && l4[1] == 4 {
			n.MTU = int(binary.BigEndian.Uint16(l4[6:]))
		}
		if q := l4[8:]; len(q) >= 20 {
			qihl := int(q[0]&0x0f) * 4
			qs, _ := netip.AddrFromSlice(q[12:16])
			qd, _ := netip.AddrFromSlice(q[16:20])
			proto := map[byte]string{1: "icmp", 6: "tcp", 17: "udp"}[q[9]]
			n.About = fmt.Sprintf("%s %s -> %s", proto, qs, qd)
			if (q[9] == 6 || q[9] == 17) && len(q) >= qihl+4 {
				n.About = fmt.Sprintf("%s %s:%d -> %s:%d", proto, qs, binary.BigEndian.Uint16(q[qihl:]), qd, binary.BigEndian.Uint16(q[qihl+2:]))
			}
		}
		k := fmt.Sprintf("%s|%d|%d|%d|%s", n.From, n.Type, n.Code, n.MTU, n.About)
		if e := s.icmp[k]; e != nil {
			e.Count++
		} else {
			s.icmp[k] = &n
		}
	}
}

func (s *pcapSummarizer) flow(client, server netip.AddrPort, at time.Time) *flowAcc {
	k := client.String() + ">" + server.String()
	f := s.flows[k]
	if f == nil {
		f = &flowAcc{client: client, server: server}
		f.Flow = fmt.Sprintf("tcp %s -> %s", client, server)
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
