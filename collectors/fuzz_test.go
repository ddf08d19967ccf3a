package collectors

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Fuzz targets for every parser that reads text or bytes from a node or the
// network. `make test` runs each for a short time (scripts/fuzz); the seeds
// here and under testdata/fuzz run with every `go test`.

// traceAll traces a few flows of both families through a parsed rule set,
// with and without a router: the tracer must survive any rule set a parser
// accepts.
func traceFlows() []Flow {
	return []Flow{
		{Proto: "tcp", Src: netip.MustParseAddr("198.19.2.10"), Dst: netip.MustParseAddr("198.18.96.20"), DPort: 80},
		{Proto: "udp", Src: netip.MustParseAddr("198.19.2.10"), Dst: netip.MustParseAddr("198.18.96.10"), DPort: 53},
		{Proto: "icmp", Src: netip.MustParseAddr("198.19.2.10"), Dst: netip.MustParseAddr("198.19.1.10")},
		{Proto: "tcp", Src: netip.MustParseAddr("2001:2:0:102::10"), Dst: netip.MustParseAddr("2001:2:0:101::10"), DPort: 8080},
		{Proto: "icmp6", Src: netip.MustParseAddr("2001:2:0:102::10"), Dst: netip.MustParseAddr("2001:2:0:101::10")},
	}
}

var fuzzRouter = StaticRouter{Routes: map[netip.Prefix]string{
	netip.MustParsePrefix("198.19.2.0/24"):     "cni0",
	netip.MustParsePrefix("0.0.0.0/0"):         "eth0",
	netip.MustParsePrefix("2001:2:0:102::/64"): "cni0",
	netip.MustParsePrefix("::/0"):              "eth0",
}, Local: []netip.Addr{netip.MustParseAddr("198.18.96.20")}}

func FuzzParseIptablesSave(f *testing.F) {
	f.Add(`*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-X - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
[4:240] -A KUBE-SERVICES -d 198.18.96.20/32 -p tcp -m comment --comment "default/web cluster IP" -m tcp --dport 80 -j KUBE-SVC-X
-A KUBE-SVC-X -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 198.19.1.10:8080
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -m set --match-set cali40all src -g cali-fw
-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j DROP
-A INPUT -m rpfilter --invert -j DROP
-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack ! --ctstate NEW -j REJECT --reject-with tcp-reset
COMMIT
`)
	f.Add("*filter\n-A X -j X\nCOMMIT\n")
	f.Add("[1:2] -A\n")
	f.Fuzz(func(t *testing.T, text string) {
		ipt, err := ParseIptablesSave(text)
		if err != nil {
			return
		}
		ipt.Tables6 = ipt.Tables
		for _, fl := range traceFlows() {
			for _, path := range []string{"output", "forward", "input"} {
				ipt.Trace(fl, path, nil)
				ipt.Trace(fl, path, fuzzRouter)
			}
		}
	})
}

func FuzzParseNftJSON(f *testing.F) {
	f.Add([]byte(`{"nftables": [{"table": {"family": "inet", "name": "fw", "handle": 1}},
{"chain": {"family": "inet", "table": "fw", "name": "in", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
{"chain": {"family": "inet", "table": "fw", "name": "svc", "handle": 2}},
{"map": {"family": "inet", "table": "fw", "name": "vm", "type": ["ipv4_addr", "inet_proto", "inet_service"], "map": "verdict", "elem": [[{"concat": ["198.18.96.20", "tcp", 80]}, {"goto": {"target": "svc"}}]]}},
{"rule": {"family": "inet", "table": "fw", "chain": "in", "handle": 3, "expr": [{"vmap": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@vm"}}]}},
{"rule": {"family": "inet", "table": "fw", "chain": "svc", "handle": 4, "expr": [{"vmap": {"key": {"numgen": {"mode": "random", "mod": 2}}, "data": {"set": [[0, {"accept": null}], [1, {"drop": null}]]}}}]}},
{"rule": {"family": "inet", "table": "fw", "chain": "in", "handle": 5, "expr": [{"match": {"op": "==", "left": {"fib": {"result": "oif", "flags": ["saddr", "iif"]}}, "right": false}}, {"drop": null}]}},
{"rule": {"family": "inet", "table": "fw", "chain": "in", "handle": 6, "expr": [{"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 16384]}, "right": 16384}}, {"dnat": {"addr": "198.19.1.10", "port": 8080}}]}}
]}`))
	f.Add([]byte(`{"nftables": [{"rule": {"expr": [{"jump": {"target": "x"}}]}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseNftJSON(b)
		if err != nil {
			return
		}
		for _, fl := range traceFlows() {
			for _, path := range []string{"output", "forward", "input"} {
				n.Trace(fl, path, nil)
				n.Trace(fl, path, fuzzRouter)
			}
		}
	})
}

func FuzzParseIPVSADM(f *testing.F) {
	f.Add(`IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.1:443 rr
  -> 172.18.0.2:6443              Masq    1      3          0
`)
	f.Add("  -> 1.2.3.4:5 Masq 1 2 3\n")
	f.Fuzz(func(t *testing.T, text string) {
		v := ParseIPVSADM(text)
		v.Find("TCP", "10.96.0.1:443")
	})
}

func FuzzParseResolvConf(f *testing.F) {
	f.Add("search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5 timeout:2\n")
	f.Add("nameserver fe80::1%eth0\nnameserver 2001:2::53\ndomain example\noptions ndots:-3 attempts:99\n")
	f.Add("# none\n")
	f.Fuzz(func(t *testing.T, text string) {
		rc := ParseResolvConf(text)
		if len(rc.Nameservers) > 3 || rc.Ndots < 0 || rc.Ndots > 15 {
			t.Fatalf("out of glibc's limits: %+v", rc)
		}
		if len(rc.Servers()) == 0 {
			t.Fatal("no server to ask")
		}
		rc.Candidates("web")
		rc.Candidates("web.default.svc.")
	})
}

func FuzzParseNetstat(f *testing.F) {
	f.Add("TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 12 13\nIpExt: InNoRoutes\nIpExt: 1\n")
	f.Add("Tcp: RetransSegs\nTcp: -1\n")
	f.Fuzz(func(t *testing.T, text string) {
		parseNetstat(text)
	})
}

// FuzzPcapSummary feeds frames as a capture reads them off the wire.
func FuzzPcapSummary(f *testing.F) {
	eth := func(et uint16, ip []byte) []byte {
		return append([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, byte(et >> 8), byte(et)}, ip...)
	}
	syn4 := []byte{0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 19, 2, 10, 198, 19, 1, 10,
		0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0, 2, 4, 5, 0xb4}
	syn6 := append([]byte{0x60, 0, 0, 0, 0, 24, 6, 64}, make([]byte, 32)...)
	syn6 = append(syn6, 0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0, 2, 4, 5, 0xa0)
	ptb := append([]byte{0x60, 0, 0, 0, 0, 56, 58, 64}, make([]byte, 32)...)
	ptb = append(ptb, 2, 0, 0, 0, 0, 0, 5, 0x78)
	ptb = append(ptb, syn6[:48]...)
	f.Add(eth(0x0800, syn4))
	f.Add(eth(0x86dd, syn6))
	f.Add(eth(0x86dd, ptb))
	f.Add(eth(0x86dd, append([]byte{0x60, 0, 0, 0, 0, 8, 0, 64}, make([]byte, 40)...)))
	f.Fuzz(func(t *testing.T, frame []byte) {
		s := newPcapSummarizer()
		at := time.Unix(0, 0)
		s.add(at, frame, len(frame))
		s.add(at, frame, len(frame)) // a retransmission of the same
		s.result().Unanswered()
	})
}

// FuzzICMPAnswer feeds what a raw ICMP socket may receive from anyone on
// the path.
func FuzzICMPAnswer(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 0, 0, 0x12, 0x34, 0, 1}, false)
	f.Add([]byte{129, 0, 0, 0, 0x12, 0x34, 0, 1}, true)
	f.Add(append([]byte{2, 0, 0, 0, 0, 0, 5, 0x78, 0x60, 0, 0, 0, 0, 8, 58, 64}, make([]byte, 40)...), true)
	f.Fuzz(func(t *testing.T, pkt []byte, v6 bool) {
		if v6 {
			parseICMPv6(pkt, &unix.SockaddrInet6{})
		} else {
			parseICMPv4(pkt)
		}
	})
}

// FuzzNftTableDump reads what the kernel answers a table dump with.
func FuzzNftTableDump(f *testing.F) {
	msg := func(typ uint16, payload []byte) []byte {
		b := make([]byte, 16, 16+len(payload))
		b = append(b, payload...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		b[0], b[1], b[2], b[3] = byte(16+len(payload)), byte((16+len(payload))>>8), 0, 0
		b[4], b[5] = byte(typ), byte(typ>>8)
		return b
	}
	table := append([]byte{1, 0, 0, 0, 9, 0, 1, 0}, []byte("fw\x00\x00\x00\x00\x00\x00")[:5]...)
	f.Add(append(msg(10<<8, table), msg(unix.NLMSG_DONE, []byte{0, 0, 0, 0})...))
	f.Add(msg(unix.NLMSG_ERROR, []byte{0xff, 0xff, 0xff, 0xff}))
	f.Fuzz(func(t *testing.T, b []byte) {
		tables, _, _ := parseNftTableDump(b)
		for _, x := range tables {
			if x.family == "" || x.name == "" {
				t.Fatalf("a table without a name: %+v", x)
			}
		}
	})
}

// FuzzPcapPackets: any bytes, classic pcap or pcapng, are counted or
// refused, never a crash or a hang.
func FuzzPcapPackets(f *testing.F) {
	f.Add(classicPcap(binary.LittleEndian, true, []testRecord{{1, 2, "x"}}, nil))
	f.Add([]byte{0x0A, 0x0D, 0x0D, 0x0A, 28, 0, 0, 0, 0x4D, 0x3C, 0x2B, 0x1A})
	f.Fuzz(func(t *testing.T, b []byte) {
		PcapPackets(b)
	})
}
