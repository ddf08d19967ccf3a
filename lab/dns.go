package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// writeDNSConfig writes the Corefiles and zone files both CoreDNS servers read:
// the cluster DNS (authoritative for the cluster zone, forwarding the rest to
// the outside host) and the outside upstream (authoritative for the outside
// name). Neither ever talks to anything beyond the lab.
func writeDNSConfig(l *Lab) error {
	for path, content := range dnsFiles(l) {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

// dnsFiles maps each file of writeDNSConfig to its content.
func dnsFiles(l *Lab) map[string]string {
	ext, _ := l.Host("ext")
	clusterZone := filepath.Join(l.StateDir, "zone.cluster")
	upstreamZone := filepath.Join(l.StateDir, "zone.upstream")
	return map[string]string{
		filepath.Join(l.StateDir, "Corefile.cluster"): fmt.Sprintf(`%s:53 {
    errors
    file %s
}
.:53 {
    errors
    forward . %s:53 {
        max_fails 0
    }
}
`, l.ClusterDomain, clusterZone, ext.IP),
		filepath.Join(l.StateDir, "Corefile.upstream"): fmt.Sprintf(`%s:53 {
    errors
    file %s
}
`, l.OutsideName, upstreamZone),
		clusterZone:  clusterZoneFile(l),
		upstreamZone: upstreamZoneFile(l, ext.IP, ext.IP6),
	}
}

func soa(origin string) string {
	return fmt.Sprintf("$ORIGIN %s.\n$TTL 5\n@ IN SOA ns.%s. hostmaster.%s. 1 7200 1800 86400 5\n@ IN NS ns.%s.\n",
		origin, origin, origin, origin)
}

func clusterZoneFile(l *Lab) string {
	var b strings.Builder
	b.WriteString(soa(l.ClusterDomain))
	fmt.Fprintf(&b, "ns IN A %s\n", dnsClusterIP)
	for _, s := range l.Services {
		fmt.Fprintf(&b, "%s.%s.svc IN A %s\n", s.Name, s.Namespace, s.ClusterIP)
	}
	// Pod records are named after the address with dashes, as the
	// Kubernetes DNS spec has it: 198-19-1-10.default.pod for IPv4 and
	// 2001-2-1-1--10.default.pod for IPv6.
	for _, p := range l.Pods {
		fmt.Fprintf(&b, "%s.%s.pod IN A %s\n", strings.ReplaceAll(p.IP, ".", "-"), p.Namespace, p.IP)
		fmt.Fprintf(&b, "%s.%s.pod IN AAAA %s\n", strings.ReplaceAll(p.IP6, ":", "-"), p.Namespace, p.IP6)
	}
	return b.String()
}

// upstreamZoneFile is the outside zone. Its apex and www have both an A and
// an AAAA record, so a lookup of either family finds the outside host.
func upstreamZoneFile(l *Lab, ip, ip6 string) string {
	var b strings.Builder
	b.WriteString(soa(l.OutsideName) + fmt.Sprintf("ns IN A %s\n@ IN A %s\n@ IN AAAA %s\nwww IN A %s\nwww IN AAAA %s\n", ip, ip, ip6, ip, ip6))
	// A name with more A records than fit a 512-byte UDP answer: resolvers
	// get it truncated and ask again over TCP.
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&b, "many IN A 198.18.11.%d\n", i)
	}
	return b.String()
}
