package containerd

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// bridgeInfo is what a runtime takes from the node's bridge.
type bridgeInfo struct {
	mtu   int
	addrs []netip.Prefix
}

func readBridge(node *netns.NS, name string) (*bridgeInfo, error) {
	h, err := node.Handle()
	if err != nil {
		return nil, fmt.Errorf("containerd: %w", err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("containerd: bridge %s in %s: %w (the node's pod bridge must exist: is the lab up?)", name, node.Path(), err)
	}
	if l.Type() != "bridge" {
		return nil, fmt.Errorf("containerd: %s in %s is a %s, not a bridge", name, node.Path(), l.Type())
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("containerd: addresses of %s in %s: %w", name, node.Path(), err)
	}
	b := &bridgeInfo{mtu: l.Attrs().MTU}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || !ip.Unmap().IsGlobalUnicast() {
			continue
		}
		ones, _ := a.Mask.Size()
		b.addrs = append(b.addrs, netip.PrefixFrom(ip.Unmap(), ones))
	}
	return b, nil
}

// nodeAddrs are the node's own addresses, as the kubelet picks a node's:
// the global ones on the interface the node's IPv4 default route leaves by,
// IPv4 first. A host-network pod has them.
func (r *Runtime) nodeAddrs() ([]netip.Addr, error) {
	h, err := r.node.Handle()
	if err != nil {
		return nil, fmt.Errorf("containerd: %w", err)
	}
	defer h.Close()
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("containerd: routes of %s: %w", r.node.Path(), err)
	}
	index := 0
	for _, rt := range routes {
		if ones, _ := maskOf(rt); rt.Table == unix.RT_TABLE_MAIN && ones == 0 && rt.LinkIndex > 0 {
			index = rt.LinkIndex
			break
		}
	}
	if index == 0 {
		return nil, fmt.Errorf("containerd: %s has no IPv4 default route to take the node's address from", r.node.Path())
	}
	l, err := h.LinkByIndex(index)
	if err != nil {
		return nil, fmt.Errorf("containerd: the default route's interface in %s: %w", r.node.Path(), err)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("containerd: addresses of %s in %s: %w", l.Attrs().Name, r.node.Path(), err)
	}
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || !ip.Unmap().IsGlobalUnicast() {
			continue
		}
		if ip = ip.Unmap(); ip.Is4() {
			v4 = append(v4, ip)
		} else {
			v6 = append(v6, ip)
		}
	}
	if len(v4) == 0 {
		return nil, fmt.Errorf("containerd: %s in %s has no global IPv4 address", l.Attrs().Name, r.node.Path())
	}
	return append(v4, v6...), nil
}

// maskOf is a route's destination prefix length; a default route has none
// or 0.0.0.0/0.
func maskOf(rt netlink.Route) (int, int) {
	if rt.Dst == nil {
		return 0, 32
	}
	return rt.Dst.Mask.Size()
}

// pinBridgeMAC sets the bridge's MAC address to the one it has. A bridge
// whose address was never set takes the lowest of its ports' and changes it
// when ports come and go; pods that learnt the gateway's MAC before a pod was
// added or removed then send to an address nobody has until their ARP entry
// expires. The bridge plugin pins it the same way, but only when it adds the
// gateway address itself, and on a lab node the address is already there.
// The address does not change, so the lab's pods are not disturbed.
func pinBridgeMAC(node *netns.NS, name string) error {
	h, err := node.Handle()
	if err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err == nil {
		err = h.LinkSetHardwareAddr(l, l.Attrs().HardwareAddr)
	}
	if err != nil {
		return fmt.Errorf("containerd: pin the MAC address of %s in %s: %w", name, node.Path(), err)
	}
	return nil
}

// DefaultRanges derives pod ranges from a node bridge's addresses: for the
// first IPv4 address, the upper half of its subnet without the broadcast
// address (198.19.1.0/24 gives .128 to .254; the lab's own pods take low
// addresses), and for the first IPv6 address the same host numbers written
// in hex the way the lab writes an IPv6 twin (2001:2:0:101::128 to ::254),
// so that as long as every pod gets both families, a pod's IPv6 address
// shows its IPv4 one. The bridge's address is the gateway.
func DefaultRanges(bridge []netip.Prefix) ([]Range, error) {
	var out []Range
	var v4, v6 *netip.Prefix
	for i := range bridge {
		switch {
		case bridge[i].Addr().Is4() && v4 == nil:
			v4 = &bridge[i]
		case bridge[i].Addr().Is6() && v6 == nil:
			v6 = &bridge[i]
		}
	}
	if v4 == nil {
		return nil, errors.New("no IPv4 address to derive the pod range from: give Options.Ranges")
	}
	bits := v4.Bits()
	if bits > 29 || bits < 8 {
		return nil, fmt.Errorf("IPv4 subnet %s: need a /8 to /29 to take its upper half: give Options.Ranges", v4.Masked())
	}
	size := uint32(1) << (32 - bits)
	base := v4.Masked().Addr().As4()
	baseN := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	startHost, endHost := size/2, size-2
	out = append(out, Range{Subnet: v4.Masked(), Gateway: v4.Addr(), Start: addr4(baseN + startHost), End: addr4(baseN + endHost)})
	if v6 != nil {
		if v6.Bits() > 112 {
			return nil, fmt.Errorf("IPv6 subnet %s is too small for the pod range: give Options.Ranges", v6.Masked())
		}
		start, err1 := twin6(v6.Masked().Addr(), startHost)
		end, err2 := twin6(v6.Masked().Addr(), endHost)
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		out = append(out, Range{Subnet: v6.Masked(), Gateway: v6.Addr(), Start: start, End: end})
	}
	return out, nil
}

func addr4(n uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// twin6 adds host number n, its decimal digits read as hex (128 -> 0x128),
// to an IPv6 network address.
func twin6(base netip.Addr, n uint32) (netip.Addr, error) {
	h, err := strconv.ParseUint(strconv.FormatUint(uint64(n), 10), 16, 32)
	if err != nil || h > 0xffff {
		return netip.Addr{}, fmt.Errorf("host number %d has no IPv6 twin in the last group", n)
	}
	b := base.As16()
	b[14], b[15] = byte(h>>8), byte(h)
	return netip.AddrFrom16(b), nil
}

func checkRanges(ranges []Range) error {
	seen := map[bool]bool{}
	for _, r := range ranges {
		if !r.Subnet.IsValid() || !r.Subnet.Contains(r.Start) || !r.Subnet.Contains(r.End) || !r.Subnet.Contains(r.Gateway) || r.End.Less(r.Start) {
			return fmt.Errorf("containerd: pod range %s %s-%s gateway %s: start, end and gateway must lie in the subnet, start before end", r.Subnet, r.Start, r.End, r.Gateway)
		}
		if seen[r.Subnet.Addr().Is4()] {
			return fmt.Errorf("containerd: two pod ranges of one family (%s): accepted is one IPv4 and one IPv6 range", r.Subnet)
		}
		seen[r.Subnet.Addr().Is4()] = true
	}
	return nil
}

// cniConfig is the network a flannel node gives its pods: the bridge plugin
// on the node's existing bridge, which already holds the gateway address
// (isGateway finds it there and adds nothing), a default route through it
// (isDefaultGateway), no masquerade (pod traffic keeps its source across the
// overlay), hairpin so a pod reaches itself through a Service, and the
// overlay's MTU. host-local keeps its leases under the runtime's directory
// instead of /var/lib/cni/networks. containerd adds its own loopback network
// (the loopback plugin) to every sandbox, so it is not repeated here.
func cniConfig(name, bridge string, mtu int, ipamDir string, ranges []Range) ([]byte, error) {
	type rng struct {
		Subnet     string `json:"subnet"`
		RangeStart string `json:"rangeStart"`
		RangeEnd   string `json:"rangeEnd"`
		Gateway    string `json:"gateway"`
	}
	var rs [][]rng
	for _, r := range ranges {
		rs = append(rs, []rng{{Subnet: r.Subnet.String(), RangeStart: r.Start.String(), RangeEnd: r.End.String(), Gateway: r.Gateway.String()}})
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       name,
		"plugins": []any{map[string]any{
			"type":             "bridge",
			"bridge":           bridge,
			"isGateway":        true,
			"isDefaultGateway": true,
			"ipMasq":           false,
			"hairpinMode":      true,
			"mtu":              mtu,
			"ipam": map[string]any{
				"type":    "host-local",
				"dataDir": ipamDir,
				"ranges":  rs,
			},
		}},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("containerd: CNI configuration: %w", err)
	}
	return b, nil
}

// flannelConfig is kube-flannel's CNI configuration (its cni-conf.json:
// the flannel plugin, hairpin and default gateway on the bridge it
// delegates to, then portmap), with every path the plugins would otherwise
// share between nodes moved under the runtime's directory: the subnet file
// is the node's, the plugin's scratch copies of the delegated
// configuration go to dataDir, and host-local's leases to ipamDir. The
// plugin (containernetworking/plugins v0.9.1 meta/flannel, the one
// buildable here) speaks CNI up to 0.4.0, hence the version.
func flannelConfig(name string, fl FlannelNetwork, dataDir, ipamDir string) ([]byte, error) {
	delegate := map[string]any{"hairpinMode": true, "isDefaultGateway": true}
	conf := map[string]any{
		"cniVersion": "0.4.0",
		"name":       name,
		"plugins": []any{
			map[string]any{
				"type":       "flannel",
				"subnetFile": fl.SubnetFile,
				"dataDir":    dataDir,
				"ipam":       map[string]any{"type": "host-local", "dataDir": ipamDir},
				"delegate":   delegate,
			},
			map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}},
		},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("containerd: CNI configuration: %w", err)
	}
	return b, nil
}

// probeSnapshotter mounts a small overlay (two lower layers, as image
// layers need) inside the runtime's directory: overlayfs cannot stack on
// an overlay root or on filesystems without d_type, and containerd would
// only say so when the first image is unpacked.
func probeSnapshotter(dir string, log *slog.Logger) string {
	p := filepath.Join(dir, "tmp", "overlay-probe")
	var dirs []string
	for _, d := range []string{"l1", "l2", "upper", "work", "merged"} {
		dirs = append(dirs, filepath.Join(p, d))
		if err := os.MkdirAll(filepath.Join(p, d), 0o700); err != nil {
			log.Warn("overlay probe failed; using the native snapshotter", "err", err)
			return "native"
		}
	}
	defer os.RemoveAll(p)
	opts := fmt.Sprintf("lowerdir=%s:%s,upperdir=%s,workdir=%s", dirs[0], dirs[1], dirs[2], dirs[3])
	if err := unix.Mount("overlay", dirs[4], "overlay", 0, opts); err != nil {
		log.Info("overlayfs does not work here; using the native snapshotter", "dir", dir, "err", err)
		return "native"
	}
	if err := unix.Unmount(dirs[4], 0); err != nil {
		unix.Unmount(dirs[4], unix.MNT_DETACH)
	}
	return "overlayfs"
}

// renderConfig writes containerd 1.6's configuration (schema version 2).
// Everything not set here is containerd's default; each setting here says
// why it is not.
func renderConfig(dir, snapshotter, cniBinDir string) string {
	q := tomlString
	disabled := []string{
		// Snapshotters that cannot work here (no aufs module, no
		// devmapper pool, neither btrfs nor zfs): containerd would try
		// each at every start and log why it skips it, and the aufs one
		// runs `modprobe aufs` on the machine to find out.
		`"io.containerd.snapshotter.v1.aufs"`, `"io.containerd.snapshotter.v1.btrfs"`,
		`"io.containerd.snapshotter.v1.devmapper"`, `"io.containerd.snapshotter.v1.zfs"`,
		// The opt plugin creates /opt/containerd on the machine.
		`"io.containerd.internal.v1.opt"`,
	}
	if snapshotter != "overlayfs" {
		disabled = append(disabled, `"io.containerd.snapshotter.v1.overlayfs"`)
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Written by netdiag's lab (lab/containerd) for one runtime; removed with it.")
	w("version = 2")
	w("root = %s", q(filepath.Join(dir, "root")))
	w("state = %s", q(filepath.Join(dir, "state")))
	w("temp = %s", q(filepath.Join(dir, "tmp")))
	w("disabled_plugins = [%s]", strings.Join(disabled, ", "))
	w("")
	w("[grpc]")
	w("  address = %s", q(filepath.Join(dir, socketFile)))
	w("")
	w(`[plugins."io.containerd.grpc.v1.cri"]`)
	w("  sandbox_image = %s", q(PauseRef))
	w("  restrict_oom_score_adj = true")
	w("  netns_mounts_under_state_dir = true")
	w(`  [plugins."io.containerd.grpc.v1.cri".containerd]`)
	w("    snapshotter = %s", q(snapshotter))
	w("    default_runtime_name = %s", q("runc"))
	w(`    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]`)
	w("      runtime_type = %s", q("io.containerd.runc.v2"))
	w(`      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]`)
	w("        SystemdCgroup = false")
	w("        Root = %s", q(filepath.Join(dir, "state", "runc")))
	w(`  [plugins."io.containerd.grpc.v1.cri".cni]`)
	w("    bin_dir = %s", q(cniBinDir))
	w("    conf_dir = %s", q(filepath.Join(dir, "cni", "net.d")))
	w("    max_conf_num = 1")
	return b.String()
}

// tomlString quotes a string for TOML. Paths here are ours and plain; a
// control character would need TOML's own escapes, which Go's %q does not
// produce, so it is refused by replacing it.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			b.WriteRune('?')
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
