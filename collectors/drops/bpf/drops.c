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
	possible_net_t skc_net;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
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
	__u8 pad[6];
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
	if (ip.protocol == 6 || ip.protocol == 17) {
		__u32 ihl = (ip.ihl_version & 0x0f) * 4;
		if (bpf_probe_read_kernel(ports, sizeof(ports), head + nh + ihl))
			return 0;
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

	__u32 ns = netns_of(skb);
	if (!bpf_map_lookup_elem(&netns, &ns))
		return 0;

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
const struct drop_event *unused_drop_event __attribute__((unused));

char LICENSE[] SEC("license") = "GPL";
