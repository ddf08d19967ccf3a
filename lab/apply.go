package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/tools"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nsHandles holds an open namespace and a netlink handle inside it.
type nsHandles struct {
	ns *netns.NS
	nl *netlink.Handle
}

type openSet map[string]*nsHandles

func (o openSet) close() {
	for _, h := range o {
		h.nl.Close()
		h.ns.Close()
	}
}

func openAll(names []string) (openSet, error) {
	o := openSet{}
	for _, name := range names {
		ns, err := netns.Open(filepath.Join(netns.RunDir, name))
		if err != nil {
			o.close()
			return nil, err
		}
		nl, err := ns.Handle()
		if err != nil {
			ns.Close()
			o.close()
			return nil, err
		}
		o[name] = &nsHandles{ns: ns, nl: nl}
	}
	return o, nil
}

// apply makes the namespaces match d. Each step is idempotent, so applying the
// same Desired twice changes nothing, and applying the baseline heals any
// fault, injected by the lab or by hand.
func apply(ctx context.Context, d *Desired, st *state, log *slog.Logger) error {
	o, err := openAll(d.order())
	if err != nil {
		return err
	}
	defer o.close()
	steps := []struct {
		name string
		fn   func(*Desired, openSet) error
	}{
		// Namespace-wide sysctls come before the links: a new device takes
		// its IPv6 settings (DAD, router solicitations) from "default" when
		// it is created, and would otherwise announce itself with the
		// kernel's defaults.
		{"namespace sysctls", func(d *Desired, o openSet) error { return applySysctls(d, o, false) }},
		{"links", ensureLinks},
		{"link settings", configureLinks},
		{"interface sysctls", func(d *Desired, o openSet) error { return applySysctls(d, o, true) }},
		{"routes", applyRoutes},
		{"neighbours and FDB", applyNeighbours},
		{"qdiscs", applyQdiscs},
	}
	for _, s := range steps {
		if err := s.fn(d, o); err != nil {
			return fmt.Errorf("apply %s: %w", s.name, err)
		}
	}
	if err := applyNetfilter(ctx, d, o); err != nil {
		return fmt.Errorf("apply firewall rules: %w", err)
	}
	// Connections tracked under the previous rules and routes keep their NAT
	// bindings and would carry a healed fault over into the next checks, as
	// stale conntrack entries do on real nodes after a rule change.
	for _, name := range d.order() {
		if err := o[name].nl.ConntrackTableFlush(netlink.ConntrackTable); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("flush conntrack in %s: %w", name, err)
		}
	}
	for path, content := range d.Resolv {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := writeDNSConfig(d.Lab); err != nil {
		return err
	}
	return reconcileProcs(ctx, d, st, o, log)
}

func ensureLinks(d *Desired, o openSet) error {
	for _, name := range d.order() {
		h := o[name]
		for _, lc := range d.NS[name].Links {
			if err := ensureLink(h, o, lc); err != nil {
				return fmt.Errorf("%s in %s: %w", lc.Name, name, err)
			}
		}
	}
	return nil
}

func ensureLink(h *nsHandles, o openSet, lc *LinkConfig) error {
	link, err := h.nl.LinkByName(lc.Name)
	if err == nil {
		vx, isVX := link.(*netlink.Vxlan)
		if lc.Kind != "vxlan" || !isVX {
			return nil
		}
		dev, err := h.nl.LinkByName(lc.VXLAN.Dev)
		if err != nil {
			return err
		}
		if vx.VxlanId == lc.VXLAN.VNI && vx.SrcAddr.Equal(net.ParseIP(lc.VXLAN.Local)) &&
			vx.VtepDevIndex == dev.Attrs().Index && vx.Port == lc.VXLAN.Port {
			return nil
		}
		// flannel recreates its device when the public IP or interface
		// changes; so does the lab.
		if err := h.nl.LinkDel(link); err != nil {
			return err
		}
	}
	attrs := netlink.LinkAttrs{Name: lc.Name, MTU: lc.MTU}
	if lc.MAC != "" {
		mac, err := net.ParseMAC(lc.MAC)
		if err != nil {
			return err
		}
		attrs.HardwareAddr = mac
	}
	switch lc.Kind {
	case "bridge":
		return h.nl.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
	case "veth":
		peer := o[lc.PeerNS]
		if peer == nil {
			return fmt.Errorf("peer namespace %s not open", lc.PeerNS)
		}
		// A lone peer (a half-deleted pair) would block the name.
		if stale, err := peer.nl.LinkByName(lc.PeerName); err == nil {
			if err := peer.nl.LinkDel(stale); err != nil {
				return err
			}
		}
		return h.nl.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: lc.PeerName, PeerNamespace: netlink.NsFd(peer.ns.Fd())})
	case "vxlan":
		dev, err := h.nl.LinkByName(lc.VXLAN.Dev)
		if err != nil {
			return fmt.Errorf("VXLAN parent %s: %w", lc.VXLAN.Dev, err)
		}
		return h.nl.LinkAdd(&netlink.Vxlan{LinkAttrs: attrs, VxlanId: lc.VXLAN.VNI, VtepDevIndex: dev.Attrs().Index,
			SrcAddr: net.ParseIP(lc.VXLAN.Local), Port: lc.VXLAN.Port, Learning: false})
	}
	return fmt.Errorf("unknown link kind %q", lc.Kind)
}

func configureLinks(d *Desired, o openSet) error {
	for _, name := range d.order() {
		h := o[name]
		if lo, err := h.nl.LinkByName("lo"); err == nil {
			if err := h.nl.LinkSetUp(lo); err != nil {
				return err
			}
		}
		for _, lc := range d.NS[name].Links {
			if err := configureLink(h, lc); err != nil {
				return fmt.Errorf("%s in %s: %w", lc.Name, name, err)
			}
		}
	}
	return nil
}

func configureLink(h *nsHandles, lc *LinkConfig) error {
	link, err := h.nl.LinkByName(lc.Name)
	if err != nil {
		return err
	}
	a := link.Attrs()
	if a.MTU != lc.MTU {
		if err := h.nl.LinkSetMTU(link, lc.MTU); err != nil {
			return fmt.Errorf("set MTU %d: %w", lc.MTU, err)
		}
	}
	if lc.Master != "" {
		m, err := h.nl.LinkByName(lc.Master)
		if err != nil {
			return fmt.Errorf("master %s: %w", lc.Master, err)
		}
		if a.MasterIndex != m.Attrs().Index {
			if err := h.nl.LinkSetMaster(link, m); err != nil {
				return err
			}
		}
	} else if a.MasterIndex != 0 {
		if err := h.nl.LinkSetNoMaster(link); err != nil {
			return err
		}
	}
	if lc.MAC != "" && a.HardwareAddr.String() != lc.MAC {
		mac, _ := net.ParseMAC(lc.MAC)
		if err := h.nl.LinkSetHardwareAddr(link, mac); err != nil {
			return err
		}
	}
	if err := setAddrs(h.nl, link, lc.Addrs); err != nil {
		return err
	}
	if lc.Down {
		return h.nl.LinkSetDown(link)
	}
	return h.nl.LinkSetUp(link)
}

func setAddrs(nl *netlink.Handle, link netlink.Link, want []string) error {
	have, err := nl.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	// Compare in the kernel's spelling, so "2001:2:0:101:0::10/64" and
	// "2001:2:0:101::10/64" are one address.
	addrs := make([]*netlink.Addr, len(want))
	wanted := map[string]bool{}
	for i, w := range want {
		addr, err := netlink.ParseAddr(w)
		if err != nil {
			return err
		}
		addrs[i] = addr
		wanted[addr.IPNet.String()] = true
	}
	for _, a := range have {
		// IPv6 link-local addresses are the kernel's, made when the link
		// comes up; neighbour discovery needs them.
		if a.IP.To4() == nil && a.IP.IsLinkLocalUnicast() {
			continue
		}
		if !wanted[a.IPNet.String()] {
			if err := nl.AddrDel(link, &a); err != nil {
				return fmt.Errorf("remove address %s: %w", a.IPNet, err)
			}
		}
		delete(wanted, a.IPNet.String())
	}
	// Keep the order of want: the first address of a subnet is the primary.
	for _, addr := range addrs {
		if !wanted[addr.IPNet.String()] {
			continue
		}
		if err := nl.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("add address %s: %w", addr.IPNet, err)
		}
	}
	return nil
}

// applySysctls writes either the namespace-wide keys (interfaces false) or
// the keys of one interface (interfaces true), which can only be written once
// the interface exists.
func applySysctls(d *Desired, o openSet, interfaces bool) error {
	for _, name := range d.order() {
		c := d.NS[name]
		// "all" and "default" first, so per-interface keys win where set.
		keys := slices.Sorted(maps.Keys(c.Sysctls))
		slices.SortStableFunc(keys, func(a, b string) int {
			pa, pb := strings.Contains(a, ".all.") || strings.Contains(a, ".default."), strings.Contains(b, ".all.") || strings.Contains(b, ".default.")
			switch {
			case pa && !pb:
				return -1
			case pb && !pa:
				return 1
			}
			return 0
		})
		for _, k := range keys {
			if perInterface := sysctlInterface(k) != ""; perInterface != interfaces {
				continue
			}
			if err := o[name].ns.WriteSysctl(k, c.Sysctls[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

// sysctlInterface returns the interface a sysctl key belongs to
// ("ipv6.conf.eth0.accept_dad" -> "eth0"), or "" for a namespace-wide key,
// "all" and "default" included. Keys naming an interface with a dot in it
// (flannel.1) are written with slashes: "ipv4/conf/flannel.1/rp_filter".
func sysctlInterface(key string) string {
	sep := "."
	if strings.Contains(key, "/") {
		sep = "/"
	}
	parts := strings.Split(strings.TrimPrefix(strings.TrimPrefix(key, "net"+sep), "/"), sep)
	if len(parts) < 4 || (parts[0] != "ipv4" && parts[0] != "ipv6") || (parts[1] != "conf" && parts[1] != "neigh") {
		return ""
	}
	if parts[2] == "all" || parts[2] == "default" {
		return ""
	}
	return parts[2]
}

func routeDst(r netlink.Route) string {
	if r.Dst == nil {
		return "default"
	}
	if ones, _ := r.Dst.Mask.Size(); ones == 0 && r.Dst.IP.IsUnspecified() {
		return "default"
	}
	return r.Dst.String()
}

func applyRoutes(d *Desired, o openSet) error {
	for _, name := range d.order() {
		h, c := o[name], d.NS[name]
		for _, fam := range []struct {
			family int
			routes []RouteConfig
		}{{netlink.FAMILY_V4, c.Routes}, {netlink.FAMILY_V6, c.Routes6}} {
			if err := applyFamilyRoutes(h.nl, fam.family, fam.routes); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return nil
}

// applyFamilyRoutes makes the main table of one family hold exactly routes,
// besides the kernel's own.
func applyFamilyRoutes(nl *netlink.Handle, family int, routes []RouteConfig) error {
	have, err := nl.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, r := range routes {
		want[canonicalDst(r.Dst)] = true
	}
	for _, r := range have {
		// Connected routes follow the addresses (for IPv6 also fe80::/64
		// and the multicast route); everything else in the main table is
		// the lab's to decide.
		if r.Protocol == unix.RTPROT_KERNEL || want[routeDst(r)] {
			continue
		}
		if err := nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("remove route %s: %w", routeDst(r), err)
		}
	}
	for _, rc := range routes {
		r, err := buildRoute(nl, family, rc)
		if err != nil {
			return fmt.Errorf("route %s: %w", rc.Dst, err)
		}
		if err := nl.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s: %w", rc.Dst, err)
		}
	}
	return nil
}

// canonicalDst spells a route destination as routeDst does for the kernel's.
func canonicalDst(dst string) string {
	if _, n, err := net.ParseCIDR(dst); err == nil {
		return n.String()
	}
	return dst
}

func buildRoute(nl *netlink.Handle, family int, rc RouteConfig) (*netlink.Route, error) {
	r := &netlink.Route{Table: unix.RT_TABLE_MAIN, Family: family}
	if rc.Dst == "default" {
		all := "0.0.0.0/0"
		if family == netlink.FAMILY_V6 {
			all = "::/0"
		}
		_, r.Dst, _ = net.ParseCIDR(all)
	} else {
		_, dst, err := net.ParseCIDR(rc.Dst)
		if err != nil {
			return nil, err
		}
		// A route in the wrong list would be refused by the kernel with a
		// less helpful message.
		if (dst.IP.To4() == nil) != (family == netlink.FAMILY_V6) {
			return nil, fmt.Errorf("destination %s is in the other family's route list", rc.Dst)
		}
		r.Dst = dst
	}
	if rc.Blackhole {
		r.Type = unix.RTN_BLACKHOLE
		return r, nil
	}
	if len(rc.Nexthops) > 0 {
		for _, nh := range rc.Nexthops {
			link, err := nl.LinkByName(nh.Dev)
			if err != nil {
				return nil, err
			}
			r.MultiPath = append(r.MultiPath, &netlink.NexthopInfo{LinkIndex: link.Attrs().Index, Gw: net.ParseIP(nh.Via)})
		}
		return r, nil
	}
	link, err := nl.LinkByName(rc.Dev)
	if err != nil {
		return nil, err
	}
	r.LinkIndex = link.Attrs().Index
	if rc.Via != "" {
		r.Gw = net.ParseIP(rc.Via)
	} else {
		r.Scope = netlink.SCOPE_LINK
	}
	if rc.Onlink {
		r.Flags = int(netlink.FLAG_ONLINK)
	}
	return r, nil
}

func applyNeighbours(d *Desired, o openSet) error {
	for _, name := range d.order() {
		h, c := o[name], d.NS[name]
		// Only devices the lab programs entries on are reconciled.
		devs := map[string]bool{}
		for _, n := range c.Neighs {
			devs[n.Dev] = true
		}
		for _, f := range c.FDB {
			devs[f.Dev] = true
		}
		for _, lc := range c.Links {
			if lc.Kind == "vxlan" {
				devs[lc.Name] = true
			}
		}
		for dev := range devs {
			link, err := h.nl.LinkByName(dev)
			if err != nil {
				return err
			}
			idx := link.Attrs().Index
			wantN, wantF := map[string]string{}, map[string]string{}
			for _, n := range c.Neighs {
				if n.Dev == dev {
					// The kernel's spelling, to compare with what it lists.
					wantN[net.ParseIP(n.IP).String()] = n.MAC
				}
			}
			for _, f := range c.FDB {
				if f.Dev == dev {
					wantF[f.MAC] = f.Dst
				}
			}
			haveN, err := h.nl.NeighList(idx, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			haveN6, err := h.nl.NeighList(idx, netlink.FAMILY_V6)
			if err != nil {
				return err
			}
			for _, n := range append(haveN, haveN6...) {
				if n.State&netlink.NUD_PERMANENT != 0 && wantN[n.IP.String()] != n.HardwareAddr.String() {
					if err := h.nl.NeighDel(&n); err != nil {
						return err
					}
				}
			}
			haveF, err := h.nl.NeighList(idx, unix.AF_BRIDGE)
			if err != nil {
				return err
			}
			for _, f := range haveF {
				if f.IP != nil && wantF[f.HardwareAddr.String()] != f.IP.String() {
					if err := h.nl.NeighDel(&f); err != nil {
						return err
					}
				}
			}
			for ip, mac := range wantN {
				hw, _ := net.ParseMAC(mac)
				addr := net.ParseIP(ip)
				family := netlink.FAMILY_V4
				if addr.To4() == nil {
					family = netlink.FAMILY_V6
				}
				if err := h.nl.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: family, State: netlink.NUD_PERMANENT,
					IP: addr, HardwareAddr: hw}); err != nil {
					return fmt.Errorf("neighbour %s on %s: %w", ip, dev, err)
				}
			}
			for mac, dst := range wantF {
				hw, _ := net.ParseMAC(mac)
				if err := h.nl.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
					Flags: netlink.NTF_SELF, IP: net.ParseIP(dst), HardwareAddr: hw}); err != nil {
					return fmt.Errorf("fdb %s dst %s on %s: %w", mac, dst, dev, err)
				}
			}
		}
	}
	return nil
}

func applyQdiscs(d *Desired, o openSet) error {
	for _, name := range d.order() {
		h, c := o[name], d.NS[name]
		for _, lc := range c.Links {
			link, err := h.nl.LinkByName(lc.Name)
			if err != nil {
				return err
			}
			qs, err := h.nl.QdiscList(link)
			if err != nil {
				return err
			}
			want, ok := c.Qdiscs[lc.Name]
			for _, q := range qs {
				if q.Attrs().Parent == netlink.HANDLE_ROOT && q.Type() == "tbf" && !ok {
					if err := h.nl.QdiscDel(q); err != nil {
						return err
					}
				}
			}
			if ok {
				tbf := &netlink.Tbf{
					QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
					Rate:       want.RateBytesPerSec,
					Limit:      want.LimitBytes,
					Buffer:     netlink.Xmittime(want.RateBytesPerSec, want.BufferBytes),
				}
				if err := h.nl.QdiscReplace(tbf); err != nil {
					return fmt.Errorf("tbf on %s: %w", lc.Name, err)
				}
			}
		}
	}
	return nil
}

// applyNetfilter replaces every namespace's firewall: nft flush ruleset (which
// also removes iptables-nft tables of both families), then the rendered
// iptables and ip6tables rules, then the extra nftables ruleset. Namespaces are
// independent, so they run in parallel.
func applyNetfilter(ctx context.Context, d *Desired, o openSet) error {
	restore, err := tools.Find("iptables-restore")
	if err != nil {
		return err
	}
	restore6, err := tools.Find("ip6tables-restore")
	if err != nil {
		return err
	}
	nft, err := tools.Find("nft")
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(d.order()))
	for i, name := range d.order() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, c := o[name], d.NS[name]
			if _, err := h.ns.Output(ctx, nft, "flush", "ruleset"); err != nil {
				errs[i] = err
				return
			}
			if c.Filter.Node != "" || len(c.Filter.Extra) > 0 {
				if _, err := h.ns.Run(ctx, []byte(d.renderIptables(c)), restore, "-w", "5"); err != nil {
					errs[i] = err
					return
				}
			}
			if c.Filter.Node != "" || len(c.Filter.Extra6) > 0 {
				if _, err := h.ns.Run(ctx, []byte(d.renderIp6tables(c)), restore6, "-w", "5"); err != nil {
					errs[i] = err
					return
				}
			}
			if c.Filter.Nft != "" {
				if _, err := h.ns.Run(ctx, []byte(c.Filter.Nft), nft, "-f", "-"); err != nil {
					errs[i] = err
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
