package diagnose

import (
	"testing"

	"github.com/netdiag/netdiag/collectors"
)

// TestDNSDownDespiteICMPRateLimit: the kernel rate-limits the port
// unreachables of a DNS server that is down, so a lookup's first queries
// are refused and its later ones time out; the server is still down. One
// that answered anything is not.
func TestDNSDownDespiteICMPRateLimit(t *testing.T) {
	refused := collectors.DNSQuery{FQDN: "kubernetes.default.svc.cluster.local.", Type: "A", Error: "refused"}
	timeout := collectors.DNSQuery{FQDN: "kubernetes.default.svc.cluster.local.svc.cluster.local.", Type: "A", Error: "timeout"}
	nx := collectors.DNSQuery{FQDN: "kubernetes.default.svc.cluster.local.default.svc.cluster.local.", Type: "A", Rcode: "NXDOMAIN"}
	for _, tc := range []struct {
		name    string
		queries []collectors.DNSQuery
		want    Verdict
	}{
		{"refused, then timeouts", []collectors.DNSQuery{refused, refused, timeout, timeout}, DNSServiceDown},
		{"all refused", []collectors.DNSQuery{refused, refused}, DNSServiceDown},
		{"an answer, then timeouts", []collectors.DNSQuery{nx, refused, timeout}, Insufficient},
		{"only timeouts", []collectors.DNSQuery{timeout, timeout}, Insufficient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Request{Source: NetnsPlace("/run/netns/a"), DNS: []string{"kubernetes.default.svc.cluster.local"},
				Cluster: &Cluster{ClusterDomain: "cluster.local", APIName: "kubernetes.default.svc.cluster.local",
					DNS: &Service{Name: "kube-system/kube-dns", ClusterIP: "10.96.0.10", Port: 53, Protocol: "UDP", TargetPort: 53}}}
			dns := &collectors.DNS{Nameservers: []string{"10.96.0.10"}, Search: []string{"svc.cluster.local"}, Ndots: 5,
				Lookups: []collectors.DNSLookup{{Name: "kubernetes.default.svc.cluster.local", Server: "10.96.0.10", Role: collectors.RoleResolvConf, Queries: tc.queries}}}
			f := Classify(r, []collectors.Evidence{{Collector: "dns", Scope: collectors.ScopeSource, Data: dns, Status: collectors.StatusOK}})
			if f.Verdict() != tc.want {
				t.Errorf("verdict %s (%s), want %s", f.Verdict(), f.Summary, tc.want)
			}
		})
	}
}
