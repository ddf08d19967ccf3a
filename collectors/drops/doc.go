// Package drops asks the kernel why it dropped the probes' packets: an eBPF
// program on the skb:kfree_skb tracepoint reports each drop of a probe's flow
// (IPv4 or IPv6) in a watched namespace with its reason (NETFILTER_DROP,
// NO_SOCKET, IP_RPFILTER, PKT_TOO_BIG...), the kernel function that dropped
// it, the device and the namespace. Where eBPF cannot load, it falls back to
// the tracepoint through tracefs, where attribution is by time and protocol
// only and says so.
package drops
