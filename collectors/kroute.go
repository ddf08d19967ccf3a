package collectors

import (
	"fmt"
	"net/netip"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// kernelRoutes asks a namespace's kernel which route it takes towards an
// address (`ip route get`), once per address: the route collector, the path
// MTU probe, the tracers' interfaces and the probes' source addresses all
// ask it.
type kernelRoutes struct {
	h     *netlink.Handle
	names map[int]string
	cache map[netip.Addr]kernelRoute
	close func()
}

// kernelRoute is the kernel's answer for one destination.
type kernelRoute struct {
	dev   string
	index int
	gw    netip.Addr
	src   netip.Addr
	local bool // the destination is the namespace's own address
	mtu   int  // a path MTU the kernel has learned (0: none)
	err   error
}

// openKernelRoutes opens a netlink handle in the namespace; Close releases it.
func openKernelRoutes(ns *netns.NS) (*kernelRoutes, error) {
	h, err := ns.Handle()
	if err != nil {
		return nil, err
	}
	_, names, err := linkNames(h)
	if err != nil {
		h.Close()
		return nil, err
	}
	k := newKernelRoutes(h, names)
	k.close = h.Close
	return k, nil
}

// newKernelRoutes asks through a handle the caller already holds.
func newKernelRoutes(h *netlink.Handle, names map[int]string) *kernelRoutes {
	return &kernelRoutes{h: h, names: names, cache: map[netip.Addr]kernelRoute{}, close: func() {}}
}

// Close releases the handle openKernelRoutes opened.
func (k *kernelRoutes) Close() { k.close() }

func (k *kernelRoutes) get(dst netip.Addr) kernelRoute {
	if r, ok := k.cache[dst]; ok {
		return r
	}
	var r kernelRoute
	rts, err := k.h.RouteGet(addrOf(dst))
	switch {
	case err != nil:
		r.err = err
	case len(rts) == 0:
		r.err = fmt.Errorf("no route to %s", dst)
	default:
		rt := rts[0]
		r.dev, r.index, r.local, r.mtu = k.names[rt.LinkIndex], rt.LinkIndex, rt.Type == unix.RTN_LOCAL, rt.MTU
		if a, ok := netip.AddrFromSlice(rt.Gw); ok {
			r.gw = a.Unmap()
		}
		if a, ok := netip.AddrFromSlice(rt.Src); ok {
			r.src = a.Unmap()
		}
	}
	k.cache[dst] = r
	return r
}

// Route implements Router: the interface the kernel sends to dst by.
func (k *kernelRoutes) Route(dst netip.Addr) (string, bool, bool) {
	if !dst.IsValid() {
		return "", false, false
	}
	r := k.get(dst)
	return r.dev, r.local, r.err == nil && r.dev != ""
}
