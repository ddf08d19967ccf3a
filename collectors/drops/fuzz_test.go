package drops

import "testing"

// FuzzParseTraceLine reads trace_pipe lines as the kernel prints them (the
// tracefs fallback); `make test` fuzzes it for a short time.
func FuzzParseTraceLine(f *testing.F) {
	f.Add("ping-123 [001] ..s1. 12.345678: kfree_skb: skbaddr=000000009c0b1e2a rx_sk=0000000000000000 protocol=2048 location=nft_do_chain+0x3f1/0x5a0 reason: NETFILTER_DROP")
	f.Add("<idle>-0 [000] ..s2. 1.0: kfree_skb: skbaddr=0 protocol=34525 location=ip6_forward+0x1/0x2 reason: PKT_TOO_BIG")
	f.Add("kfree_skb: protocol=2048 location=/ reason: ")
	f.Fuzz(func(t *testing.T, line string) {
		d, ok := parseTraceLine(line)
		if ok && d.Proto != "ipv4" && d.Proto != "ipv6" {
			t.Fatalf("accepted a line of protocol %q", d.Proto)
		}
		d.Func()
		d.Expected()
	})
}
