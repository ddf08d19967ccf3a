package gen

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/netdiag/netdiag/lab"
)

// Address plan of the synthetic cluster. Everything is inside 198.18.0.0/15
// and outside what the lab routes, so the extra rules never touch the lab's
// own traffic by address: only the lab's Services and the lab node's PodCIDR
// are shared, as they would be on a real node.
const (
	synthClusterIPFirst = "198.18.97.0"    // synthetic ClusterIPs: the lab's ServiceCIDR after 198.18.96.0/24
	synthClusterIPLast  = "198.18.111.254" // end of the ServiceCIDR 198.18.96.0/20
	lbIPBase            = "198.18.112.0"   // LoadBalancer ingress IPs
	externalIPBase      = "198.18.113.0"   // spec.externalIPs
	lbSourceRange       = "198.18.114.0/24"
	// Pods of other nodes: 198.19.N.0/24 for N in [3, 250], inside the
	// lab's ClusterCIDR like any other node's PodCIDR.
	firstRemotePodNet = 3
	lastRemotePodNet  = 250
	// Node-local pods that back Services live in the upper half of the
	// node's PodCIDR; the lab's own pods use the lower half.
	localPodFirst = 128
	localPodLast  = 254
)

type svcPort struct {
	name, proto  string
	port, target int
	nodePort     int
}

type endpoint struct {
	ip    string
	local bool
}

// service is one Service as kube-proxy sees it on the node.
type service struct {
	ns, name   string
	clusterIP  string
	ports      []svcPort
	eps        []endpoint
	etpLocal   bool
	lbIP       string
	lbSources  []string
	externalIP string
	hcNodePort int
	lab        bool
}

// portName is kube-proxy's ServicePortName string: "ns/name:port", or
// "ns/name" for an unnamed port.
func (s *service) portName(p svcPort) string {
	n := s.ns + "/" + s.name
	if p.name != "" {
		n += ":" + p.name
	}
	return n
}

func (s *service) localEps() []endpoint {
	var out []endpoint
	for _, e := range s.eps {
		if e.local {
			out = append(out, e)
		}
	}
	return out
}

// kubeHash is kube-proxy's chain suffix: the first 16 characters of the
// base32 SHA-256 of its input.
func kubeHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(h[:])[:16]
}

// svcChainHash is portProtoHash(servicePortName, protocol): the suffix of
// KUBE-SVC-, KUBE-SVL-, KUBE-EXT- and KUBE-FW- chains.
func svcChainHash(spn, proto string) string { return kubeHash(spn + proto) }

// sepChain is servicePortEndpointChainName: the port name, protocol and
// endpoint "ip:port", in that order.
func sepChain(spn, proto, ep string) string { return "KUBE-SEP-" + kubeHash(spn+proto+ep) }

// clusterSpec says how big a synthetic cluster to add to the lab's Services.
type clusterSpec struct {
	services  int // in all, the lab's included; 0 for the lab's alone
	endpoints int // endpoint addresses in all, summed over Services
	seed      uint64
}

var (
	namespaces = []string{"billing", "catalog", "search", "identity", "ingest", "reports", "media", "ledger",
		"notify", "geo", "checkout", "support", "analytics", "edge", "platform", "monitoring", "logging",
		"storage", "batch", "mail"}
	words = []string{"api", "web", "worker", "gateway", "cache", "db", "queue", "indexer", "scheduler",
		"frontend", "backend", "store", "sync", "proxy", "auth", "events", "metrics", "export", "import",
		"render", "thumb", "pricing", "orders", "users", "sessions", "audit", "feeds", "ranker", "crawler",
		"mailer", "router", "collector", "agent", "controller", "webhook", "admin", "console", "portal"}
	targetPorts = []int{8080, 8080, 8080, 8443, 9090, 3000, 5000, 50051, 6379, 5432, 9000, 8000, 80, 443}
)

// buildCluster returns the Services of the node: the lab's, from its exported
// description, mixed among synthetic ones.
func buildCluster(l *lab.Lab, node *lab.Node, spec clusterSpec) ([]*service, error) {
	r := newRNG(spec.seed)
	var out []*service
	labEps := 0
	for _, ls := range l.Services {
		s := &service{ns: ls.Namespace, name: ls.Name, clusterIP: ls.ClusterIP, lab: true}
		for _, p := range ls.Ports {
			s.ports = append(s.ports, svcPort{name: p.Name, proto: strings.ToLower(p.Protocol), port: p.Port, target: p.TargetPort})
		}
		for _, e := range ls.Endpoints {
			// The dumps are IPv4 rule sets: an IPv6 endpoint belongs to
			// the ip6tables proxier.
			if a, err := netip.ParseAddr(e.IP); err != nil || !a.Is4() {
				continue
			}
			if e.Ready {
				s.eps = append(s.eps, endpoint{ip: e.IP, local: e.Node == node.Name})
			}
		}
		labEps += len(s.eps)
		out = append(out, s)
	}
	if spec.services == 0 {
		// The lab's Services alone, for profiles whose point is another owner.
		return out, nil
	}
	nSynth := spec.services - len(out)
	budget := spec.endpoints - labEps
	if nSynth < 0 || budget < 0 {
		return nil, fmt.Errorf("cluster of %d Services and %d endpoints is smaller than the lab's own", spec.services, spec.endpoints)
	}

	usedIP := map[string]bool{}
	for _, s := range out {
		usedIP[s.clusterIP] = true
	}
	first, last := netip.MustParseAddr(synthClusterIPFirst), netip.MustParseAddr(synthClusterIPLast)
	span := int(ip4(last) - ip4(first) + 1)
	if nSynth > span {
		return nil, fmt.Errorf("%d synthetic Services do not fit the ClusterIP range", nSynth)
	}
	usedName := map[string]bool{}
	usedNodePort := map[int]bool{}
	nodePort := func() int {
		for {
			p := 30000 + r.intn(2768)
			if !usedNodePort[p] {
				usedNodePort[p] = true
				return p
			}
		}
	}
	lbN, extN := 10, 10
	synth := make([]*service, 0, nSynth)
	for i := 0; i < nSynth; i++ {
		s := &service{}
		for {
			s.ns = pick(r, namespaces)
			s.name = pick(r, words) + "-" + pick(r, words)
			if r.chance(0.3) {
				s.name += fmt.Sprintf("-%d", r.intn(9)+1)
			}
			if !usedName[s.ns+"/"+s.name] {
				usedName[s.ns+"/"+s.name] = true
				break
			}
		}
		for {
			a := addr4(ip4(first) + uint32(r.intn(span)))
			if !usedIP[a] {
				usedIP[a] = true
				s.clusterIP = a
				break
			}
		}
		nPorts := 1
		switch x := r.intn(100); {
		case x < 3:
			nPorts = 3
		case x < 15:
			nPorts = 2
		}
		names := []string{"http", "grpc", "metrics"}
		for j := 0; j < nPorts; j++ {
			p := svcPort{proto: "tcp", port: pick(r, []int{80, 443, 8080, 9090, 5432, 6379, 50051, 3000}), target: pick(r, targetPorts)}
			if nPorts > 1 {
				p.name = names[j]
				p.port = []int{80, 9000, 9100}[j]
			} else if r.chance(0.6) {
				p.name = pick(r, []string{"http", "https", "grpc", "tcp", "web", "api"})
			}
			if r.chance(0.04) {
				p.proto, p.name, p.port, p.target = "udp", "dns", 53, 5353
				if nPorts > 1 {
					p.name = names[j]
				}
			}
			s.ports = append(s.ports, p)
		}
		switch x := r.intn(1000); {
		case x < 80: // NodePort
			for j := range s.ports {
				s.ports[j].nodePort = nodePort()
			}
		case x < 105: // LoadBalancer, externalTrafficPolicy Cluster
			s.lbIP = addr4(ip4(netip.MustParseAddr(lbIPBase)) + uint32(lbN))
			lbN++
			for j := range s.ports {
				s.ports[j].nodePort = nodePort()
			}
			if x < 85 {
				s.lbSources = []string{lbSourceRange}
			}
		case x < 125: // LoadBalancer, externalTrafficPolicy Local
			s.lbIP = addr4(ip4(netip.MustParseAddr(lbIPBase)) + uint32(lbN))
			lbN++
			s.etpLocal = true
			s.hcNodePort = nodePort()
			for j := range s.ports {
				s.ports[j].nodePort = nodePort()
			}
		case x < 135: // externalIPs
			s.externalIP = addr4(ip4(netip.MustParseAddr(externalIPBase)) + uint32(extN))
			extN++
		}
		synth = append(synth, s)
	}

	// Endpoints: about 3% of Services have none; the rest get one each, then
	// the budget is spread with a heavy tail, as real Deployments are sized.
	withEps := []*service{}
	for _, s := range synth {
		if s.etpLocal || !r.chance(0.03) {
			withEps = append(withEps, s)
		}
	}
	if budget < len(withEps) {
		return nil, fmt.Errorf("endpoint budget %d is below one per Service (%d)", budget, len(withEps))
	}
	counts := make([]int, len(withEps))
	weights := make([]int, len(withEps))
	total := 0
	for i := range withEps {
		counts[i] = 1
		w := 1 + r.intn(4)
		if r.chance(0.1) {
			w += 10 + r.intn(40)
		}
		weights[i] = w
		total += w
	}
	for left := budget - len(withEps); left > 0; left-- {
		x := r.intn(total)
		for i, w := range weights {
			if x < w {
				counts[i]++
				break
			}
			x -= w
		}
	}
	usedPod := map[string]bool{}
	for _, s := range out {
		for _, e := range s.eps {
			usedPod[e.ip] = true
		}
	}
	pc, err := netip.ParsePrefix(node.PodCIDR)
	if err != nil {
		return nil, fmt.Errorf("node %s PodCIDR: %w", node.Name, err)
	}
	localBase := ip4(pc.Addr())
	cc, err := netip.ParsePrefix(l.ClusterCIDR)
	if err != nil {
		return nil, fmt.Errorf("ClusterCIDR: %w", err)
	}
	clusterBase := ip4(cc.Addr())
	for i, s := range withEps {
		local := 0
		if s.etpLocal && r.chance(0.6) {
			local = 1 + r.intn(2)
		} else if !s.etpLocal {
			for j := 0; j < counts[i]; j++ {
				if r.chance(0.02) {
					local++
				}
			}
		}
		seen := map[string]bool{}
		for j := 0; j < counts[i]; j++ {
			var ip string
			isLocal := j < local
			for {
				if isLocal {
					ip = addr4(localBase + uint32(localPodFirst+r.intn(localPodLast-localPodFirst+1)))
				} else {
					net := firstRemotePodNet + r.intn(lastRemotePodNet-firstRemotePodNet+1)
					ip = addr4(clusterBase + uint32(net)<<8 + uint32(2+r.intn(253)))
				}
				// A pod may back several Services (local pods often do), but
				// appears once per Service.
				if !seen[ip] && (isLocal || !usedPod[ip]) {
					break
				}
			}
			seen[ip] = true
			usedPod[ip] = true
			s.eps = append(s.eps, endpoint{ip: ip, local: isLocal})
		}
	}
	out = append(out, synth...)
	// kube-proxy walks its Service map in no particular order; so do the
	// dumps, which puts the lab's Services somewhere among the others.
	shuffle(r, out)
	for _, s := range out {
		// kube-proxy lists endpoints in a stable order (by address).
		sort.Slice(s.eps, func(i, j int) bool { return s.eps[i].ip < s.eps[j].ip })
	}
	return out, nil
}

func ip4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr4(v uint32) string {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String()
}

// endpointCount is the number of endpoint addresses over all Services.
func endpointCount(svcs []*service) int {
	n := 0
	for _, s := range svcs {
		n += len(s.eps)
	}
	return n
}
