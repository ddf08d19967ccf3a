package collectors

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Sysctls are the kernel settings and counters that decide whether a pod's
// packets pass: forwarding, reverse-path filtering, conntrack fill, the
// ephemeral port range, and TCP's listen-queue and retransmit counters.
type Sysctls struct {
	IPForward bool `json:"ip_forward"`
	// RPFilter maps "all", "default" and each interface to its value
	// (0 off, 1 strict, 2 loose); the kernel uses max(all, interface).
	RPFilter         map[string]int `json:"rp_filter"`
	ConntrackCount   int            `json:"conntrack_count"`
	ConntrackMax     int            `json:"conntrack_max"`
	PortRangeLow     int            `json:"port_range_low"`
	PortRangeHigh    int            `json:"port_range_high"`
	ListenOverflows  uint64         `json:"listen_overflows"`
	ListenDrops      uint64         `json:"listen_drops"`
	TCPRetransSegs   uint64         `json:"tcp_retrans_segs"`
	BridgeNFIptables *bool          `json:"bridge_nf_call_iptables,omitempty"`
	Missing          []string       `json:"missing,omitempty"`
}

// EffectiveRPFilter is the rp_filter mode the kernel applies on an interface.
func (s *Sysctls) EffectiveRPFilter(dev string) int {
	return max(s.RPFilter["all"], s.RPFilter[dev])
}

// PortRange is the number of ephemeral ports.
func (s *Sysctls) PortRange() int { return s.PortRangeHigh - s.PortRangeLow + 1 }

func init() {
	register(spec{name: "sysctls", help: "ip_forward, rp_filter per interface, conntrack count/max, ip_local_port_range, listen-queue overflows, retransmissions",
		scopes: Scopes, timeout: 2 * time.Second}, collectSysctls)
}

const (
	scIPForward  = "/proc/sys/net/ipv4/ip_forward"
	scCTCount    = "/proc/sys/net/netfilter/nf_conntrack_count"
	scCTMax      = "/proc/sys/net/netfilter/nf_conntrack_max"
	scPortRange  = "/proc/sys/net/ipv4/ip_local_port_range"
	scBridgeNF   = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	procNetstat  = "/proc/thread-self/net/netstat"
	procSNMP     = "/proc/thread-self/net/snmp"
	rpFilterGlob = "/proc/sys/net/ipv4/conf/*/rp_filter"
)

func collectSysctls(ctx context.Context, in Input) (*Sysctls, error) {
	// The interface list under conf/ is per namespace too, so glob inside.
	var rpPaths []string
	if err := in.NS.Do(func() error {
		var err error
		rpPaths, err = filepath.Glob(rpFilterGlob)
		return err
	}); err != nil {
		return nil, err
	}
	paths := append([]string{scIPForward, scCTCount, scCTMax, scPortRange, scBridgeNF, procNetstat, procSNMP}, rpPaths...)
	files, errs, err := in.NS.ReadFiles(paths)
	if err != nil {
		return nil, err
	}
	out := &Sysctls{RPFilter: map[string]int{}}
	num := func(p string) int {
		n, _ := strconv.Atoi(strings.TrimSpace(string(files[p])))
		return n
	}
	out.IPForward = num(scIPForward) == 1
	out.ConntrackCount, out.ConntrackMax = num(scCTCount), num(scCTMax)
	if f := strings.Fields(string(files[scPortRange])); len(f) == 2 {
		out.PortRangeLow, _ = strconv.Atoi(f[0])
		out.PortRangeHigh, _ = strconv.Atoi(f[1])
	}
	if b, ok := files[scBridgeNF]; ok {
		v := strings.TrimSpace(string(b)) == "1"
		out.BridgeNFIptables = &v
	}
	for _, p := range rpPaths {
		if _, ok := files[p]; ok {
			out.RPFilter[filepath.Base(filepath.Dir(p))] = num(p)
		}
	}
	ext := parseNetstat(string(files[procNetstat]))
	out.ListenOverflows, out.ListenDrops = ext["TcpExt"]["ListenOverflows"], ext["TcpExt"]["ListenDrops"]
	out.TCPRetransSegs = parseNetstat(string(files[procSNMP]))["Tcp"]["RetransSegs"]
	for _, p := range []string{scIPForward, scPortRange, procNetstat} {
		if e, bad := errs[p]; bad {
			out.Missing = append(out.Missing, p)
			if !os.IsNotExist(e) {
				return out, fmt.Errorf("read %s: %w", p, e)
			}
		}
	}
	// conntrack files exist only once nf_conntrack is loaded in the namespace.
	for _, p := range []string{scCTCount, scCTMax} {
		if _, bad := errs[p]; bad {
			out.Missing = append(out.Missing, p)
		}
	}
	return out, ctx.Err()
}

// parseNetstat reads the header/value line pairs of /proc/net/netstat and
// /proc/net/snmp into section -> counter -> value.
func parseNetstat(s string) map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	lines := strings.Split(s, "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		h, v := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(h) == 0 || len(h) != len(v) || h[0] != v[0] {
			continue
		}
		sec := strings.TrimSuffix(h[0], ":")
		out[sec] = map[string]uint64{}
		for j := 1; j < len(h); j++ {
			n, _ := strconv.ParseInt(v[j], 10, 64)
			out[sec][h[j]] = uint64(n)
		}
	}
	return out
}
