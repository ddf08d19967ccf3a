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
#define ETH_P_IPV6 0x86DD
#define AF_INET 2
#define AF_INET6 10

#define IPPROTO_HOPOPTS 0
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_ICMPV6 58
#define IPPROTO_DSTOPTS 60

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

struct in6_addr {
	union {
		__u8 u6_addr8[16];
	} in6_u;
} __attribute__((preserve_access_index));

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	unsigned short skc_family;
	possible_net_t skc_net;
	/* Absent from kernels built without IPv6: checked before use. */
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

/* inet_sport stays set through the socket's close (skc_num may not); IPv6
 * sockets are inet_socks too. */
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

/* Wire formats: read from the packet, not relocated. */
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

struct ipv6hdr {
	__u8 version_tc; /* version in the high nibble */
	__u8 tc_flow[3];
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units << 3, then flags */
	__be32 identification;
};

/* Addresses, in every key and in the event, are 16 bytes in network order:
 * an IPv6 address as it is, an IPv4 address v4-mapped (::ffff:a.b.c.d), the
 * form Go's netip.Addr.As16 gives. The two families cannot collide, since
 * no IPv6 packet or socket with v4-mapped addresses is taken as IPv6 (a
 * socket's are read as the IPv4 ones they stand for, a packet's are not a
 * probe's). The protocol tells ICMP (1, IPv4) from ICMPv6 (58, IPv6). */

// A probe flow, one direction. port is the destination port for the
// direction a probe goes (dir 0), the source port for its answers (dir 1);
// 0 for ICMP and ICMPv6.
struct flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
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
	__u16 sport;
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
	char dev[16];
	__u8 proto;
	__u8 dir;
	__u8 family;    /* 4 or 6 */
	__u8 tcp_flags; /* TCP: the flags byte; ICMP, ICMPv6: the type */
	__u8 icmp_code;
	__u8 ttl;         /* IPv6: the hop limit */
	__u8 unconfirmed; /* TCP outside the given namespaces: check conns */
	__u8 pad;
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

/* The probes' own TCP connections, full 5-tuple (addresses as in flow_key):
 * in a namespace the diagnosis was not given, a TCP drop counts only when
 * it is one of these (another namespace may carry the same addresses). */
struct conn_key {
	__u8 saddr[16];
	__u8 daddr[16];
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

/* Extension headers skipped before giving up on an IPv6 packet: a probe's
 * packets carry few if any, and a fixed bound is what the verifier needs to
 * see the loop end. */
#define MAX_EXT_HDRS 6

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

static __always_inline void map_v4(__u8 out[16], __be32 a)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &a, 4);
}

static __always_inline int is_v4_mapped(const __u8 a[16])
{
	__u64 lo;
	__u32 mid;
	__builtin_memcpy(&lo, a, 8);
	__builtin_memcpy(&mid, a + 8, 4);
	return lo == 0 && mid == __builtin_bswap32(0x0000ffff);
}

/* What the program needs of a packet's network and transport headers. */
struct pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 l4;   /* offset of the transport header from head */
	__u8 proto; /* TCP, UDP, ICMP or ICMPv6; anything else is not a probe's */
	__u8 ttl;
	__u8 family;
};

/* An IPv4 packet; not a probe's when it is a later fragment (no transport
 * header to match). */
static __always_inline int parse_ipv4(unsigned char *head, __u16 nh, struct pkt *p)
{
	struct iphdr ip;
	if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
		return -1;
	__u32 ihl = (ip.ihl_version & 0x0f) * 4;
	if ((ip.ihl_version >> 4) != 4 || ihl < sizeof(ip))
		return -1;
	if (__builtin_bswap16(ip.frag_off) & 0x1fff)
		return -1;
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP && ip.protocol != IPPROTO_ICMP)
		return -1;
	map_v4(p->saddr, ip.saddr);
	map_v4(p->daddr, ip.daddr);
	p->l4 = nh + ihl;
	p->proto = ip.protocol;
	p->ttl = ip.ttl;
	p->family = 4;
	return 0;
}

/* An IPv6 packet, through at most MAX_EXT_HDRS extension headers to TCP,
 * UDP or ICMPv6; not a probe's when it is a later fragment, or carries
 * v4-mapped addresses (they stand for IPv4 in the keys). */
static __always_inline int parse_ipv6(unsigned char *head, __u16 nh, struct pkt *p)
{
	struct ipv6hdr ip6;
	if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
		return -1;
	if ((ip6.version_tc >> 4) != 6)
		return -1;
	if (is_v4_mapped(ip6.saddr) || is_v4_mapped(ip6.daddr))
		return -1;
	__u8 next = ip6.nexthdr;
	__u32 off = nh + sizeof(ip6);
	for (int i = 0; i < MAX_EXT_HDRS; i++) {
		if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS) {
			__u8 h[2]; /* next header, length in 8 bytes not counting the first 8 */
			if (bpf_probe_read_kernel(h, sizeof(h), head + off))
				return -1;
			next = h[0];
			off += ((__u32)h[1] + 1) * 8;
		} else if (next == IPPROTO_FRAGMENT) {
			struct frag_hdr f;
			if (bpf_probe_read_kernel(&f, sizeof(f), head + off))
				return -1;
			if (__builtin_bswap16(f.frag_off) & 0xfff8)
				return -1;
			next = f.nexthdr;
			off += sizeof(f);
		} else {
			break;
		}
	}
	if (next != IPPROTO_TCP && next != IPPROTO_UDP && next != IPPROTO_ICMPV6)
		return -1;
	__builtin_memcpy(p->saddr, ip6.saddr, 16);
	__builtin_memcpy(p->daddr, ip6.daddr, 16);
	p->l4 = off;
	p->proto = next;
	p->ttl = ip6.hop_limit;
	p->family = 6;
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(on_kfree_skb, struct sk_buff *skb, void *location, unsigned int reason)
{
	if (reason <= last_not_drop)
		return 0;
	__be16 l3 = BPF_CORE_READ(skb, protocol);
	if (l3 != __builtin_bswap16(ETH_P_IP) && l3 != __builtin_bswap16(ETH_P_IPV6))
		return 0;

	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	if (nh == (__u16)~0U)
		return 0;
	struct pkt p;
	if (l3 == __builtin_bswap16(ETH_P_IP)) {
		if (parse_ipv4(head, nh, &p))
			return 0;
	} else if (parse_ipv6(head, nh, &p)) {
		return 0;
	}

	__u16 ports[2] = {0, 0};
	__u8 l4[2] = {0, 0};
	int icmp = p.proto == IPPROTO_ICMP || p.proto == IPPROTO_ICMPV6;
	if (icmp) {
		/* type, code */
		if (bpf_probe_read_kernel(l4, sizeof(l4), head + p.l4))
			return 0;
		/* Neighbour discovery, router and multicast listener messages
		 * (informational types from 130) are ICMPv6's ARP, not probes
		 * or their answers: echo is 128/129, errors are below 128. */
		if (p.proto == IPPROTO_ICMPV6 && l4[0] >= 130)
			return 0;
	} else {
		if (bpf_probe_read_kernel(ports, sizeof(ports), head + p.l4))
			return 0;
		/* flags are byte 13 of the TCP header */
		if (p.proto == IPPROTO_TCP)
			bpf_probe_read_kernel(&l4[0], 1, head + p.l4 + 13);
	}
	__u16 sport = __builtin_bswap16(ports[0]);
	__u16 dport = __builtin_bswap16(ports[1]);

	struct flow_key k = {.port = icmp ? 0 : dport, .proto = p.proto, .dir = 0};
	__builtin_memcpy(k.saddr, p.saddr, 16);
	__builtin_memcpy(k.daddr, p.daddr, 16);
	if (!bpf_map_lookup_elem(&flows, &k)) {
		k.port = icmp ? 0 : sport;
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
			if (p.proto != IPPROTO_TCP)
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
	__builtin_memcpy(e->saddr, p.saddr, 16);
	__builtin_memcpy(e->daddr, p.daddr, 16);
	e->sport = sport;
	e->dport = dport;
	e->proto = p.proto;
	e->dir = k.dir;
	e->family = p.family;
	e->tcp_flags = l4[0];
	e->icmp_code = l4[1];
	e->ttl = p.ttl;
	e->unconfirmed = unconfirmed;
	e->pad = 0;
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
		.port = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport)),
		.proto = IPPROTO_TCP,
		.dir = 0,
	};
	unsigned short family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family == AF_INET6) {
		if (!bpf_core_field_exists(sk->__sk_common.skc_v6_daddr))
			return 0;
		BPF_CORE_READ_INTO(&k.daddr, sk, __sk_common.skc_v6_daddr);
		BPF_CORE_READ_INTO(&k.saddr, sk, __sk_common.skc_v6_rcv_saddr);
		/* An IPv6 socket talking to an IPv4 peer (v4-mapped): its
		 * packets are IPv4, keyed by the IPv4 addresses it keeps too. */
		if (is_v4_mapped(k.daddr))
			family = AF_INET;
	}
	if (family == AF_INET) {
		map_v4(k.daddr, BPF_CORE_READ(sk, __sk_common.skc_daddr));
		map_v4(k.saddr, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
	} else if (family != AF_INET6) {
		return 0;
	}
	if (!bpf_map_lookup_elem(&flows, &k))
		return 0;
	__u32 ns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (!bpf_map_lookup_elem(&netns, &ns))
		return 0;
	struct conn_key c = {
		.sport = __builtin_bswap16(BPF_CORE_READ((struct inet_sock *)sk, inet_sport)),
		.dport = k.port,
	};
	__builtin_memcpy(c.saddr, k.saddr, 16);
	__builtin_memcpy(c.daddr, k.daddr, 16);
	__u8 one = 1;
	bpf_map_update_elem(&conns, &c, &one, 0);
	return 0;
}

// Referenced so that bpf2go emits the Go type of the event.
const struct drop_event *unused_drop_event __attribute__((unused));

char LICENSE[] SEC("license") = "GPL";
