# syntax=docker/dockerfile:1
#
# netdiag's image: the bot (`netdiag serve`, the default command, run as the
# non-root user netdiag, 65532) and the node agent (`netdiag-agent`, which the
# DaemonSet runs as root with the capabilities listed below).
#
#   docker build -t netdiag/netdiag:dev .          # BuildKit (Docker 23+)
#   buildah build --layers -t netdiag/netdiag:dev .
#   scripts/build-image [--oci-archive PATH]         # where no registry is reachable
#
# Two stages:
#   build    the Go toolchain image; a static build (CGO_ENABLED=0, -trimpath)
#            of ./cmd/netdiag and ./cmd/netdiag-agent, with the module and build
#            caches in cache mounts that outlive the build.
#   runtime  debian:bookworm-slim with the programs the collectors run, and
#            nothing else; the two binaries in /usr/local/bin.
#
# Where Docker Hub cannot be reached, scripts/base-images makes the two base
# images under the same names from Debian's mirror and the Go toolchain, so
# this file builds unchanged there and here.

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM docker.io/library/golang:${GO_VERSION}-bookworm AS build
# On every layer of both stages: scripts/build-image finds its intermediate
# images by it.
LABEL org.opencontainers.image.title=netdiag
# The module proxy and go flags of the machine that builds (scripts/build-image
# passes `go env`'s); empty leaves the image's defaults.
ARG GOPROXY
ARG GOFLAGS
# Set by BuildKit and buildah to the platform asked for (--platform); go
# cross-compiles, so the build stage runs on the builder's own platform.
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
# Modules first: this layer is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,id=netdiag-gomod,target=/go/pkg/mod \
    go mod download
COPY . .
# Static: no C library in the way of running on any node, and the agent's
# short-lived helpers start without a dynamic loader.
RUN --mount=type=cache,id=netdiag-gomod,target=/go/pkg/mod \
    --mount=type=cache,id=netdiag-gobuild,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/netdiag ./cmd/netdiag-agent

FROM docker.io/library/debian:bookworm-slim AS runtime
LABEL org.opencontainers.image.title=netdiag \
      org.opencontainers.image.description="netdiag: the Slack bot (netdiag serve, the default) and the node agent (netdiag-agent)"
# The programs the collectors run (grep collectors/ for tools.Find), each
# from its Debian package:
#   iptables-save, ip6tables-save   iptables: iptables-nft-save is the default
#                                   alternative, iptables-legacy-save beside it
#   nft                             nftables
#   ipvsadm                         ipvsadm
#   tcpdump                         tcpdump (compiles capture filters only; the
#                                   capture itself is an AF_PACKET socket)
# and ca-certificates, for the bot's HTTPS calls to Slack. netdiag itself
# runs neither `ip` nor `conntrack` (routes, links and neighbours are read
# over netlink, the conntrack counters from /proc/sys), but iproute2 and
# conntrack are there for the engineer who `kubectl exec`s into an agent to
# check a finding by hand with the tools the runbooks name.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates iptables nftables ipvsadm tcpdump iproute2 conntrack \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
# The bot's user, and its store's directory (/var/lib/netdiag/netdiag.db, the
# default; a volume mounted there replaces it).
RUN groupadd --system --gid 65532 netdiag \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin netdiag \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/netdiag
COPY --from=build /out/netdiag /out/netdiag-agent /usr/local/bin/

# The agent: its DaemonSet runs `netdiag-agent` in this image as root
# (runAsUser: 0; the agent refuses to start otherwise), not privileged, with
# every capability dropped (drop: [ALL]) and these added back:
#   NET_ADMIN     iptables-save/ip6tables-save (nf_tables netlink) and nft
#                 dump the rules; ipvsadm reads IPVS
#   NET_RAW       raw and packet sockets: ping, path MTU and hops (ICMP), the
#                 capture (AF_PACKET); ipvsadm's socket
#   SYS_ADMIN     setns(2) into a pod's network namespace (without it no pod
#                 is found); bpf(2) on kernels before 5.8, which have no
#                 CAP_BPF
#   SYS_PTRACE    open another process's /proc/PID/ns/net: a pod that the
#                 container runtime (or its cgroup) names by its PID
#   BPF, PERFMON  load and attach the drops program (collectors/drops: a BTF
#                 tracepoint on skb:kfree_skb, a ring buffer); the kernel
#                 also accepts SYS_ADMIN in their stead
#   SYS_RESOURCE  lift RLIMIT_MEMLOCK for the BPF maps on kernels before 5.11
#                 (later kernels charge the cgroup and the agent never asks)
# and the node's namespaces and files:
#   hostNetwork: true   the node's network namespace is the agent's own: the
#                       node's rules, routes and devices; it listens on the
#                       node's address
#   hostPID: true       /proc shows the node's processes, so a pod's
#                       namespace opens as /proc/PID/ns/net (and /proc/PID/root
#                       shows its resolv.conf)
#   /run/netns          hostPath, read-only, mountPropagation: HostToContainer:
#                       the named namespaces (ip netns, CNI plugins), also
#                       those made after the agent started
#   the CRI socket      its directory as a hostPath, read-only, at the same
#                       path (so a restarted runtime's new socket appears),
#                       passed as --cri-socket: the agent asks the runtime
#                       for a pod's sandbox
#   /sys/fs/cgroup      hostPath, read-only: a pod's processes by its UID when
#                       the runtime does not know it
# deploy/IMAGE.md says the same, with what the image's test
# (deploy/image_test.go) showed when a capability was left out.

# The bot runs as netdiag, not root.
USER 65532:65532
WORKDIR /var/lib/netdiag
ENTRYPOINT ["/usr/local/bin/netdiag"]
CMD ["serve", "--config", "/etc/netdiag/config.yaml"]
