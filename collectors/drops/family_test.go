package drops

import (
	"net/netip"
	"testing"
)

func TestFlowKeys(t *testing.T) {
	v4a, v4b := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	v6a, v6b := netip.MustParseAddr("2001:2:ff:1::1"), netip.MustParseAddr("2001:2:ff:2::2")
	cases := []struct {
		name  string
		flow  Flow
		ok    bool
		proto uint8
		port  uint16
	}{
		{"tcp over IPv6", Flow{Proto: "tcp", Src: v6a, Dst: v6b, DPort: 443}, true, protoTCP, 443},
		{"udp over IPv4", Flow{Proto: "udp", Src: v4a, Dst: v4b, DPort: 53}, true, protoUDP, 53},
		{"icmp over IPv4", Flow{Proto: "icmp", Src: v4a, Dst: v4b, DPort: 9}, true, protoICMP, 0},
		{"icmp over IPv6 is ICMPv6", Flow{Proto: "icmp", Src: v6a, Dst: v6b}, true, protoICMPv6, 0},
		{"icmp6", Flow{Proto: "icmp6", Src: v6a, Dst: v6b, DPort: 9}, true, protoICMPv6, 0},
		{"icmp6 over IPv4", Flow{Proto: "icmp6", Src: v4a, Dst: v4b}, false, 0, 0},
		{"mixed families", Flow{Proto: "tcp", Src: v4a, Dst: v6b, DPort: 80}, false, 0, 0},
		{"unknown protocol", Flow{Proto: "sctp", Src: v6a, Dst: v6b, DPort: 80}, false, 0, 0},
		{"no source", Flow{Proto: "tcp", Dst: v6b, DPort: 80}, false, 0, 0},
		{"v4-mapped is IPv4", Flow{Proto: "icmp", Src: netip.AddrFrom16(v4a.As16()), Dst: v4b}, true, protoICMP, 0},
	}
	for _, c := range cases {
		fwd, rev, ok := flowKeys(c.flow)
		if ok != c.ok {
			t.Errorf("%s: ok %v, want %v", c.name, ok, c.ok)
			continue
		}
		if !ok {
			continue
		}
		src, dst := c.flow.Src.Unmap().As16(), c.flow.Dst.Unmap().As16()
		if fwd.Saddr != src || fwd.Daddr != dst || fwd.Dir != 0 || rev.Saddr != dst || rev.Daddr != src || rev.Dir != 1 {
			t.Errorf("%s: addresses or directions: %+v %+v", c.name, fwd, rev)
		}
		if fwd.Proto != c.proto || rev.Proto != c.proto || fwd.Port != c.port || rev.Port != c.port {
			t.Errorf("%s: protocol %d/%d port %d/%d, want %d port %d", c.name, fwd.Proto, rev.Proto, fwd.Port, rev.Port, c.proto, c.port)
		}
	}
	// The program keys IPv4 as v4-mapped: ::ffff:198.18.0.1.
	fwd, _, _ := flowKeys(Flow{Proto: "tcp", Src: v4a, Dst: v4b, DPort: 1})
	want := [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 18, 14: 0, 15: 1}
	if fwd.Saddr != want {
		t.Errorf("IPv4 key address %v, want %v", fwd.Saddr, want)
	}
}

func TestEventDrop(t *testing.T) {
	ev := bpfDropEvent{Proto: protoICMPv6, Family: 6, TcpFlags: 2, Ttl: 61, Dir: 1,
		Saddr: netip.MustParseAddr("2001:2:ff:2::2").As16(), Daddr: netip.MustParseAddr("2001:2:ff:1::1").As16()}
	d := eventDrop(&ev)
	if d.Proto != "icmp6" || d.Family != 6 || d.Src != "2001:2:ff:2::2" || d.Dst != "2001:2:ff:1::1" || d.Packet != "packet too big" || !d.Answer || d.TTL != 61 {
		t.Errorf("ICMPv6 packet too big: %+v", d)
	}
	ev.TcpFlags, ev.Dir = 128, 1 // an echo request is the probe's whichever way it matched
	if d := eventDrop(&ev); d.Packet != "echo request" || d.Answer {
		t.Errorf("ICMPv6 echo request: %+v", d)
	}
	ev.TcpFlags = 8 // IPv4's echo request type is an ICMPv6 answer's
	if d := eventDrop(&ev); !d.Answer {
		t.Errorf("ICMPv6 type 8 taken for an echo request: %+v", d)
	}
	v4 := bpfDropEvent{Proto: protoTCP, Family: 4, TcpFlags: 0x12, Sport: 8080, Dport: 40000, Dir: 1,
		Saddr: netip.MustParseAddr("198.18.0.2").As16(), Daddr: netip.MustParseAddr("198.18.0.1").As16()}
	if d := eventDrop(&v4); d.Proto != "tcp" || d.Family != 4 || d.Src != "198.18.0.2" || d.Dst != "198.18.0.1" || d.Packet != "SYN-ACK" || !d.Answer {
		t.Errorf("IPv4 SYN-ACK: %+v", d)
	}
	v4.Proto, v4.TcpFlags, v4.Dir = protoICMP, 8, 1
	if d := eventDrop(&v4); d.Proto != "icmp" || d.Packet != "echo request" || d.Answer {
		t.Errorf("IPv4 echo request: %+v", d)
	}
}

func TestPacketKindICMPv6(t *testing.T) {
	for _, c := range []struct {
		typ, code uint8
		want      string
	}{
		{128, 0, "echo request"},
		{129, 0, "echo reply"},
		{1, 4, "ICMPv6 unreachable (code 4)"},
		{2, 0, "packet too big"},
		{3, 0, "ICMPv6 time exceeded"},
		{4, 1, "ICMPv6 parameter problem (code 1)"},
		{200, 0, "ICMPv6 type 200"},
	} {
		if got := packetKind(protoICMPv6, c.typ, c.code); got != c.want {
			t.Errorf("ICMPv6 type %d code %d: %q, want %q", c.typ, c.code, got, c.want)
		}
	}
	if got := packetKind(protoICMP, 3, 4); got != "ICMP unreachable (code 4)" {
		t.Errorf("ICMP unreachable: %q", got)
	}
}

func TestExpectedIPv6(t *testing.T) {
	cases := []struct {
		name string
		d    Drop
		want bool
	}{
		{"hop probe expired at a router", Drop{Proto: "icmp6", Family: 6, Packet: "echo request", Reason: "IP_INHDR", TTL: 1, Where: "node"}, true},
		{"late echo reply at the source", Drop{Proto: "icmp6", Family: 6, Packet: "echo reply", Answer: true, Reason: "NO_SOCKET", Where: "source"}, true},
		{"firewall", Drop{Proto: "icmp6", Family: 6, Packet: "echo request", Reason: "NETFILTER_DROP", TTL: 63, Where: "peer"}, false},
		{"path MTU", Drop{Proto: "icmp6", Family: 6, Packet: "echo request", Reason: "PKT_TOO_BIG", TTL: 64, Where: "node"}, false},
		{"bad header, not a hop probe", Drop{Proto: "tcp", Family: 6, Packet: "SYN", Reason: "IP_INHDR", TTL: 64, Where: "node"}, false},
	}
	for _, c := range cases {
		if got := c.d.Expected(); got != c.want {
			t.Errorf("%s: Expected() = %v", c.name, got)
		}
	}
}

func TestParseTraceLineFamilies(t *testing.T) {
	const pre = "ping-123 [001] ..s1. 12.345678: kfree_skb: skbaddr=000000009c0b1e2a rx_sk=0000000000000000 "
	d, ok := parseTraceLine(pre + "protocol=34525 location=nft_do_chain+0x3f1/0x5a0 reason: NETFILTER_DROP\n")
	if !ok || d.Proto != "ipv6" || d.Family != 6 || d.Location != "nft_do_chain+0x3f1" || d.Reason != "NETFILTER_DROP" {
		t.Errorf("IPv6 line: %v %+v", ok, d)
	}
	d, ok = parseTraceLine(pre + "protocol=2048 location=tcp_v4_rcv+0x10/0x20 reason: NO_SOCKET\n")
	if !ok || d.Proto != "ipv4" || d.Family != 4 || d.Reason != "NO_SOCKET" {
		t.Errorf("IPv4 line: %v %+v", ok, d)
	}
	if _, ok := parseTraceLine(pre + "protocol=2054 location=arp_rcv+0x1/0x2 reason: NOT_SPECIFIED\n"); ok {
		t.Error("an ARP drop was taken for an IP one")
	}
}
