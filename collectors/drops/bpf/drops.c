// SPDX-License-Identifier: GPL-2.0
//
// netdiag's drops program: on every skb:kfree_skb (a packet the kernel frees
// with a drop reason), report the drop if it belongs to one of the flows the
// diagnosis is probing, in one of the namespaces it is looking at. The
// filtering is in the kernel so that a busy node's other drops never reach
// user space and are never attributed to the probes.
//
// Built with CO-RE against the running kernel's BTF; the few kernel types it
// reads are declared here with preserve_access_index, so no vmlinux.h is
// needed. Regenerate with `go generate ./collectors/drops` (needs clang,
// libbpf-dev).

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_RINGBUF 27
#define ETH_P_IP 0x0800

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	int ifindex;
	char name[16];
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	possible_net_t skc_net;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

/* inet_sport stays set through the socket's close (skc_num may not). */
struct inet_sock {
	__be16 inet_sport;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned char *head;
	__u16 network_header;
	__be16 protocol;
} __attribute__((preserve_access_index));

struct iphdr {
	__u8 ihl_version;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

// A probe flow, one direction. port is the destination port for the
// direction a probe goes (dir 0), the source port for its answers (dir 1);
// 0 for ICMP.
struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 port;
	__u8 proto;
	__u8 dir;
};

struct drop_event {
	__u64 ts;
	__u64 location;
	__u32 reason;
	__u32 netns;
	__u32 ifindex;
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 dir;
	char dev[16];
	__u8 tcp_flags; /* TCP: the flags byte; ICMP: the type */
	__u8 icmp_code;
	__u8 ttl;
	__u8 unconfirmed; /* TCP outside the given namespaces: check conns */
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct flow_key);
	__type(value, __u8);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u8);
} netns SEC(".maps");

/* The probes' own TCP connections, full 5-tuple: in a namespace the
 * diagnosis was not given, a TCP drop counts only when it is one of these
 * (another namespace may carry the same addresses). */
struct conn_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct conn_key);
	__type(value, __u8);
} conns SEC(".maps");

/* Keys of the namespace map below real namespace inodes. */
#define ANY_NS_STRICT 0 /* any namespace; only TCP, one of conns */
#define ANY_NS_LOOSE 1  /* any namespace; the flow is enough */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
} events SEC(".maps");

// Reasons at or below this value are not drops (not dropped yet, consumed);
// user space sets it from the kernel's enum skb_drop_reason.
volatile const __u32 last_not_drop = 1;

static __always_inline __u32 netns_of(struct sk_buff *skb)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	if (dev)
		return BPF_CORE_READ(dev, nd_net.net, ns.inum);
	struct sock *sk = BPF_CORE_READ(skb, sk);
	if (sk)
		return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(on_kfree_skb, struct sk_buff *skb, void *location, unsigned int reason)
{
	if (reason <= last_not_drop)
		return 0;
	if (BPF_CORE_READ(skb, protocol) != __builtin_bswap16(ETH_P_IP))
		return 0;

	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	if (nh == (__u16)~0U)
		return 0;
	struct iphdr ip;
	if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
		return 0;
	if ((ip.ihl_version >> 4) != 4)
		return 0;

	__u16 ports[2] = {0, 0};
	__u8 l4[2] = {0, 0};
	__u32 ihl = (ip.ihl_version & 0x0f) * 4;
	if (ip.protocol == 6 || ip.protocol == 17) {
		if (bpf_probe_read_kernel(ports, sizeof(ports), head + nh + ihl))
			return 0;
	}
	if (ip.protocol == 6) {
		/* flags are byte 13 of the TCP header */
		bpf_probe_read_kernel(&l4[0], 1, head + nh + ihl + 13);
	} else if (ip.protocol == 1) {
		bpf_probe_read_kernel(l4, 2, head + nh + ihl);
	}
	__u16 sport = __builtin_bswap16(ports[0]);
	__u16 dport = __builtin_bswap16(ports[1]);

	struct flow_key k = {.saddr = ip.saddr, .daddr = ip.daddr, .port = dport, .proto = ip.protocol, .dir = 0};
	if (ip.protocol == 1)
		k.port = 0;
	if (!bpf_map_lookup_elem(&flows, &k)) {
		k.port = ip.protocol == 1 ? 0 : sport;
		k.dir = 1;
		if (!bpf_map_lookup_elem(&flows, &k))
			return 0;
	}

	/* Outside the given namespaces (the destination's may not be known),
	 * a TCP packet must belong to one of the probes' own connections. */
	__u32 ns = netns_of(skb);
	__u8 unconfirmed = 0;
	if (!bpf_map_lookup_elem(&netns, &ns)) {
		__u32 loose = ANY_NS_LOOSE, strict = ANY_NS_STRICT;
		if (!bpf_map_lookup_elem(&netns, &loose)) {
			if (!bpf_map_lookup_elem(&netns, &strict))
				return 0;
			/* Only the probes' TCP connections can be told from
			 * look-alikes there; each is learnt when it leaves
			 * SYN_SENT, after its first packets: user space confirms. */
			if (ip.protocol != 6)
				return 0;
			unconfirmed = 1;
		}
	}

	struct drop_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->ts = bpf_ktime_get_ns();
	e->location = (__u64)location;
	e->reason = reason;
	e->netns = ns;
	e->saddr = ip.saddr;
	e->daddr = ip.daddr;
	e->sport = sport;
	e->dport = dport;
	e->proto = ip.protocol;
	e->dir = k.dir;
	e->tcp_flags = l4[0];
	e->icmp_code = l4[1];
	e->ttl = ip.ttl;
	e->unconfirmed = unconfirmed;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	e->ifindex = 0;
	__builtin_memset(e->dev, 0, sizeof(e->dev));
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	if (dev) {
		e->ifindex = BPF_CORE_READ(dev, ifindex);
		BPF_CORE_READ_STR_INTO(&e->dev, dev, name);
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

// Referenced so that bpf2go emits the Go type of the event.
/* A probe's TCP connection leaving SYN_SENT (connected, refused, timed out
 * and closed) in a given namespace: its source port is known by now (not
 * yet when it enters SYN_SENT), so remember the whole 5-tuple. Drops of it
 * elsewhere, seen earlier, are confirmed against these by user space. */
#define TCP_SYN_SENT 2

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_set_state, const struct sock *sk, int oldstate, int newstate)
{
	if (oldstate != TCP_SYN_SENT)
		return 0;
	struct flow_key k = {
		.saddr = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr),
		.daddr = BPF_CORE_READ(sk, __sk_common.skc_daddr),
		.port = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport)),
		.proto = 6,
		.dir = 0,
	};
	if (!bpf_map_lookup_elem(&flows, &k))
		return 0;
	__u32 ns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (!bpf_map_lookup_elem(&netns, &ns))
		return 0;
	struct conn_key c = {.saddr = k.saddr, .daddr = k.daddr, .sport = __builtin_bswap16(BPF_CORE_READ((struct inet_sock *)sk, inet_sport)), .dport = k.port};
	__u8 one = 1;
	bpf_map_update_elem(&conns, &c, &one, 0);
	return 0;
}

const struct drop_event *unused_drop_event __attribute__((unused));

char LICENSE[] SEC("license") = "GPL";
