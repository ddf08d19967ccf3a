package drops

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Flow is a probe's flow as the tracer matches it: protocol, the probe's
// source and destination, and the destination port (0 for ICMP). Answers
// (the reverse direction) match too. Both addresses are IPv4 or both IPv6
// (v4-mapped ones count as IPv4); Proto is "tcp", "udp", "icmp" or "icmp6",
// and "icmp" between IPv6 addresses means ICMPv6, the only ICMP there is.
type Flow struct {
	Proto string     `json:"proto"`
	Src   netip.Addr `json:"src"`
	Dst   netip.Addr `json:"dst"`
	DPort uint16     `json:"dport,omitempty"`
}

// Drop is one packet of a probe's flow that the kernel dropped.
type Drop struct {
	At       time.Time `json:"at"`
	Reason   string    `json:"reason"`   // NETFILTER_DROP, NO_SOCKET, IP_RPFILTER...
	Location string    `json:"location"` // kernel function+offset that dropped it
	Dev      string    `json:"dev,omitempty"`
	Netns    uint64    `json:"netns"`
	// Where is the namespace in the diagnosis' words (source, peer, node,
	// peer-node), when it is one of them.
	Where string `json:"where,omitempty"`
	// NetnsName names a namespace that is none of them: its /run/netns
	// name, else a process in it.
	NetnsName string `json:"netns_name,omitempty"`
	// Packet says what was dropped: SYN, SYN-ACK, RST, ACK, "echo request",
	// "packet too big"...
	Packet string `json:"packet,omitempty"`
	// Proto is "tcp", "udp", "icmp" (IPv4) or "icmp6" (ICMPv6).
	Proto string `json:"proto"`
	// Family is 4 or 6.
	Family uint8  `json:"family,omitempty"`
	Src    string `json:"src"`
	Dst    string `json:"dst"`
	SPort  uint16 `json:"sport,omitempty"`
	DPort  uint16 `json:"dport,omitempty"`
	// Answer is true for a packet of the reverse direction (a reply).
	Answer bool `json:"answer,omitempty"`
	// TTL is the packet's TTL (IPv6: hop limit) when it was dropped; a
	// TTL-limited probe (hops) that expires is dropped on purpose.
	TTL uint8 `json:"ttl"`
}

// Result is the drops evidence.
type Result struct {
	// Method is "ebpf", "tracefs" or "unavailable".
	Method string `json:"method"`
	// Approximate: the drops could not be tied to the probes' flows, only
	// to the time window and the protocol (tracefs).
	Approximate bool    `json:"approximate"`
	Note        string  `json:"note,omitempty"`
	LoadMS      float64 `json:"load_ms"`
	// AnyNamespace: the destination's namespace was not given, so drops
	// of the probes' own TCP connections (full 5-tuple) were also looked
	// for in every other namespace of the node.
	AnyNamespace bool           `json:"any_namespace,omitempty"`
	Drops        []Drop         `json:"drops"`
	ByReason     map[string]int `json:"by_reason"`
	Lost         int            `json:"lost,omitempty"`
}

// Options choose the way in.
type Options struct {
	// Method forces "ebpf" or "tracefs"; empty tries eBPF first.
	Method string
	// TracefsRoot is where tracefs is (or gets) mounted.
	TracefsRoot string
	// AnyNamespace also reports drops in the node's other namespaces: for
	// when the destination's namespace is not known (its drops are the
	// ones that tell causes apart). There only the probes' own TCP
	// connections count, by their full 5-tuple, since another namespace
	// may carry the same addresses.
	AnyNamespace bool
}

// Tracer is a running drop watch.
type Tracer struct {
	res  Result
	stop func()
	done chan struct{}
	mu   sync.Mutex
}

// IP protocol numbers the program matches.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// ICMPv6 is named apart from ICMP: the two are different protocols with
// different type numbers, and a reader of Drop.Proto should not have to look
// at the addresses to tell which types Packet was decoded from.
var protoNames = map[uint8]string{protoICMP: "icmp", protoTCP: "tcp", protoUDP: "udp", protoICMPv6: "icmp6"}

// flowProto is the IP protocol number a Flow stands for between its
// addresses' family, false for a protocol the program does not match.
func flowProto(name string, v6 bool) (uint8, bool) {
	switch strings.ToLower(name) {
	case "tcp":
		return protoTCP, true
	case "udp":
		return protoUDP, true
	case "icmp":
		// Callers name ping "icmp" whatever the family.
		if v6 {
			return protoICMPv6, true
		}
		return protoICMP, true
	case "icmp6", "icmpv6", "ipv6-icmp":
		return protoICMPv6, v6
	}
	return 0, false
}

// flowKeys are the program's keys for a flow, the probe's direction then its
// answers'; false for a flow it cannot match (mixed or invalid families, an
// unknown protocol).
func flowKeys(f Flow) (fwd, rev bpfFlowKey, ok bool) {
	src, dst := f.Src.Unmap(), f.Dst.Unmap()
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return fwd, rev, false
	}
	p, ok := flowProto(f.Proto, src.Is6())
	if !ok {
		return fwd, rev, false
	}
	port := f.DPort
	if p == protoICMP || p == protoICMPv6 {
		port = 0
	}
	fwd = bpfFlowKey{Saddr: src.As16(), Daddr: dst.As16(), Port: port, Proto: p, Dir: 0}
	rev = bpfFlowKey{Saddr: dst.As16(), Daddr: src.As16(), Port: port, Proto: p, Dir: 1}
	return fwd, rev, true
}

// Start watches drops of the flows in the namespaces (inode -> name). It
// never fails: when neither eBPF nor tracefs works, the result says so and
// the diagnosis goes on.
func Start(flows []Flow, namespaces map[uint64]string, opts Options) *Tracer {
	t := &Tracer{done: make(chan struct{})}
	t.res.ByReason = map[string]int{}
	t.res.Drops = []Drop{}
	var ebpfErr error
	if opts.Method != "tracefs" {
		start := time.Now()
		ebpfErr = t.startEBPF(flows, namespaces, opts.AnyNamespace)
		t.res.LoadMS = float64(time.Since(start).Microseconds()) / 1000
		if ebpfErr == nil {
			t.res.Method, t.res.AnyNamespace = "ebpf", opts.AnyNamespace
			return t
		}
	}
	if opts.Method != "ebpf" {
		start := time.Now()
		err := t.startTracefs(opts.TracefsRoot)
		t.res.LoadMS = float64(time.Since(start).Microseconds()) / 1000
		if err == nil {
			t.res.Method, t.res.Approximate = "tracefs", true
			note := "approximate: drops seen through tracefs, matched to the probes by time and protocol (IPv4 and IPv6) only, not by 5-tuple or namespace"
			if t.res.Note != "" {
				note += "; " + t.res.Note
			}
			t.res.Note = note
			if ebpfErr != nil {
				t.res.Note += "; eBPF was not available: " + ebpfErr.Error()
			}
			return t
		}
		if ebpfErr != nil {
			err = fmt.Errorf("eBPF: %v; tracefs: %w", ebpfErr, err)
		}
		ebpfErr = err
	}
	t.res.Method = "unavailable"
	t.res.Note = "the kernel's drop reasons could not be read: " + ebpfErr.Error()
	close(t.done)
	t.stop = func() {}
	return t
}

// Stop ends the watch and returns what it saw.
func (t *Tracer) Stop() *Result {
	t.stop()
	<-t.done
	t.mu.Lock()
	defer t.mu.Unlock()
	sort.Slice(t.res.Drops, func(i, j int) bool { return t.res.Drops[i].At.Before(t.res.Drops[j].At) })
	nameNamespaces(t.res.Drops)
	return &t.res
}

func (t *Tracer) add(d Drop) {
	t.mu.Lock()
	defer t.mu.Unlock()
	// A flood of drops of one flow tells nothing more after a few hundred.
	if len(t.res.Drops) < 500 {
		t.res.Drops = append(t.res.Drops, d)
	} else {
		t.res.Lost++
	}
	t.res.ByReason[d.Reason]++
}

// dropReasons maps enum skb_drop_reason values to their names, from the
// running kernel's BTF (the numbering changes between kernels).
func dropReasons() (map[uint32]string, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, err
	}
	var e *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &e); err != nil {
		return nil, fmt.Errorf("kernel has no enum skb_drop_reason (needs Linux 5.17+): %w", err)
	}
	out := map[uint32]string{}
	for _, v := range e.Values {
		out[uint32(v.Value)] = strings.TrimPrefix(strings.TrimPrefix(v.Name, "SKB_DROP_REASON_"), "SKB_")
	}
	return out, nil
}

// memlock lifts RLIMIT_MEMLOCK once on kernels before 5.11, which charge
// BPF maps to it (later ones charge the cgroup and it is left alone).
var memlock = sync.OnceValue(rlimit.RemoveMemlock)

func (t *Tracer) startEBPF(flows []Flow, namespaces map[uint64]string, anyNS bool) error {
	memlock() // a load that still fails says why below
	reasons, err := dropReasons()
	if err != nil {
		return err
	}
	var consumed uint32 = 1
	for v, n := range reasons {
		if n == "CONSUMED" {
			consumed = v
		}
	}
	spec, err := loadBpf()
	if err != nil {
		return err
	}
	if v, ok := spec.Variables["last_not_drop"]; ok {
		if err := v.Set(consumed); err != nil {
			return err
		}
	}
	// The connection hook is what makes TCP matching exact outside the
	// given namespaces; a kernel that cannot load it still gets the drops,
	// matched by addresses and port.
	var objs bpfObjects
	var connErr error
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		connErr = err
		var lesser struct {
			bpfMaps
			OnKfreeSkb *ebpf.Program `ebpf:"on_kfree_skb"`
		}
		delete(spec.Programs, "on_set_state")
		if err := spec.LoadAndAssign(&lesser, nil); err != nil {
			var ve *ebpf.VerifierError
			if errors.As(err, &ve) {
				return fmt.Errorf("load: verifier: %v", ve)
			}
			return fmt.Errorf("load: %w", err)
		}
		objs = bpfObjects{bpfMaps: lesser.bpfMaps, bpfPrograms: bpfPrograms{OnKfreeSkb: lesser.OnKfreeSkb}}
	}
	var closers []io.Closer
	closeAll := func() {
		for _, c := range slices.Backward(closers) {
			c.Close()
		}
	}
	closers = append(closers, &objs)
	fail := func(err error) error {
		closeAll()
		return err
	}
	for _, f := range flows {
		fwd, rev, ok := flowKeys(f)
		if !ok {
			continue
		}
		one := uint8(1)
		if err := objs.Flows.Put(fwd, one); err != nil {
			return fail(fmt.Errorf("watch flow %s %s -> %s: %w", f.Proto, f.Src, f.Dst, err))
		}
		if err := objs.Flows.Put(rev, one); err != nil {
			return fail(fmt.Errorf("watch flow %s %s -> %s: %w", f.Proto, f.Dst, f.Src, err))
		}
	}
	if objs.OnSetState != nil {
		l, err := link.AttachTracing(link.TracingOptions{Program: objs.OnSetState})
		if err != nil {
			connErr = err
		} else {
			closers = append(closers, l)
		}
	}
	watch := slices.Collect(maps.Keys(namespaces))
	if anyNS {
		const strict, loose = 0, 1 // the program's ANY_NS_STRICT, ANY_NS_LOOSE
		if connErr != nil {
			watch = append(watch, loose)
			t.res.Note = "TCP drops outside the given namespaces are matched by addresses and port only (the connection hook did not load: " + connErr.Error() + ")"
		} else {
			watch = append(watch, strict)
		}
	}
	for _, ino := range watch {
		if err := objs.Netns.Put(uint32(ino), uint8(1)); err != nil {
			return fail(err)
		}
	}
	tp, err := link.AttachTracing(link.TracingOptions{Program: objs.OnKfreeSkb})
	if err != nil {
		return fail(fmt.Errorf("attach to skb:kfree_skb: %w", err))
	}
	closers = append(closers, tp)
	rd, err := ringbuf.NewReader(objs.Events)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, rd)
	// Read sets its own short deadlines (a deadline cannot be set while a
	// Read blocks), so Stop only has to say when, and the loop drains what
	// is in flight for a moment after it.
	var stopAt atomic.Int64
	t.stop = func() { stopAt.CompareAndSwap(0, time.Now().UnixNano()) }
	go func() {
		defer close(t.done)
		defer closeAll()
		var pending []unconfirmed
		defer func() { t.confirm(objs.Conns, pending) }()
		syms := &kallsyms{}
		for {
			rd.SetDeadline(time.Now().Add(25 * time.Millisecond))
			rec, err := rd.Read()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if at := stopAt.Load(); at != 0 && time.Since(time.Unix(0, at)) > 50*time.Millisecond {
					return
				}
				continue
			}
			if err != nil {
				return
			}
			var ev bpfDropEvent
			if len(rec.RawSample) < binary.Size(ev) {
				continue
			}
			if _, err := binary.Decode(rec.RawSample, binary.NativeEndian, &ev); err != nil {
				continue
			}
			d := eventDrop(&ev)
			d.Reason, d.Location = reasons[ev.Reason], syms.lookup(ev.Location)
			d.Where = namespaces[uint64(ev.Netns)]
			if d.Reason == "" {
				d.Reason = strconv.Itoa(int(ev.Reason))
			}
			if ev.Unconfirmed == 1 {
				// A look-alike flood elsewhere must not grow this
				// without bound.
				if len(pending) < maxPending {
					// The event's addresses are already in the keys' form.
					c := bpfConnKey{Saddr: ev.Saddr, Daddr: ev.Daddr, Sport: ev.Sport, Dport: ev.Dport}
					if d.Answer {
						c = bpfConnKey{Saddr: ev.Daddr, Daddr: ev.Saddr, Sport: ev.Dport, Dport: ev.Sport}
					}
					pending = append(pending, unconfirmed{d, c})
				}
				continue
			}
			t.add(d)
		}
	}()
	return nil
}

// unconfirmed is a TCP drop outside the given namespaces and the probe
// connection it would be.
type unconfirmed struct {
	d    Drop
	conn bpfConnKey
}

// maxPending bounds the TCP drops outside the given namespaces held until
// the probes' connections are known.
const maxPending = 4096

// confirm keeps the TCP drops seen outside the given namespaces that belong
// to one of the probes' own connections (the full 5-tuple, which the kernel
// learnt when each left SYN_SENT).
func (t *Tracer) confirm(conns *ebpf.Map, pending []unconfirmed) {
	var one uint8
	for _, u := range pending {
		if conns.Lookup(u.conn, &one) == nil {
			t.add(u.d)
		}
	}
}

// eventDrop is what an event says by itself (reason, location and place
// are the reader's to add).
func eventDrop(ev *bpfDropEvent) Drop {
	src, dst := netip.AddrFrom16(ev.Saddr), netip.AddrFrom16(ev.Daddr)
	if ev.Family == 4 {
		src, dst = src.Unmap(), dst.Unmap()
	}
	d := Drop{At: monoToWall(ev.Ts), Dev: cString(ev.Dev[:]), Netns: uint64(ev.Netns),
		Proto: protoNames[ev.Proto], Family: ev.Family, Src: src.String(), Dst: dst.String(),
		SPort: ev.Sport, DPort: ev.Dport, Answer: ev.Dir == 1, Packet: packetKind(ev.Proto, ev.TcpFlags, ev.IcmpCode), TTL: ev.Ttl}
	switch ev.Proto {
	case protoICMP, protoICMPv6:
		// Only echo requests are the probes' own; replies and errors
		// come back to them. The direction cannot tell: ICMP flows
		// match between the same two addresses either way.
		echoRequest := uint8(8)
		if ev.Proto == protoICMPv6 {
			echoRequest = 128
		}
		d.Answer = ev.TcpFlags != echoRequest
	}
	return d
}

func cString(b []int8) string {
	var out []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

// monoToWall turns a bpf_ktime_get_ns timestamp into wall-clock time.
func monoToWall(ns uint64) time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Now()
	}
	return time.Now().Add(-time.Duration(uint64(ts.Nano()) - ns))
}

// kallsyms resolves kernel addresses to function+offset, reading
// /proc/kallsyms once, on the first drop.
type kallsyms struct {
	once  sync.Once
	addrs []uint64
	names []string
}

func (k *kallsyms) load() {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	type sym struct {
		a uint64
		n string
	}
	var syms []sym
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || (fields[1] != "t" && fields[1] != "T") {
			continue
		}
		a, err := strconv.ParseUint(fields[0], 16, 64)
		if err != nil || a == 0 {
			continue
		}
		syms = append(syms, sym{a, fields[2]})
	}
	sort.Slice(syms, func(i, j int) bool { return syms[i].a < syms[j].a })
	for _, s := range syms {
		k.addrs = append(k.addrs, s.a)
		k.names = append(k.names, s.n)
	}
}

func (k *kallsyms) lookup(addr uint64) string {
	k.once.Do(k.load)
	i := sort.Search(len(k.addrs), func(i int) bool { return k.addrs[i] > addr }) - 1
	if i < 0 {
		return fmt.Sprintf("0x%x", addr)
	}
	return fmt.Sprintf("%s+0x%x", k.names[i], addr-k.addrs[i])
}

// Func is the kernel function that dropped the packet, without the offset.
func (d *Drop) Func() string {
	f, _, _ := strings.Cut(d.Location, "+")
	return f
}

// Expected reports a drop that the probes cause on purpose or that is part
// of a normal exchange: a TTL-limited hop probe expiring at a router (IPv6
// drops an expired hop limit as IP_INHDR too), a socket's queue freed when
// a probe closes it, and a late answer reaching the source after the
// probe's socket is gone.
func (d *Drop) Expected() bool {
	switch {
	case d.TTL <= 1 && (d.Reason == "IP_INHDR" || strings.Contains(d.Reason, "TTL")):
		return true
	case d.Reason == "QUEUE_PURGE" || d.Reason == "SOCKET_CLOSE" || d.Reason == "TCP_CLOSE":
		return true
	case d.Answer && d.Where == "source" && d.Reason == "NO_SOCKET":
		return true
	case d.Proto == "tcp" && (d.Packet == "FIN" || d.Packet == "ACK" || d.Packet == "RST") && (d.Reason == "NOT_SPECIFIED" || d.Reason == "NO_SOCKET"):
		// The teardown of a probe's own connection: a probe closes as soon
		// as it has connected, and the last FIN or ACK of either side may
		// meet a socket already gone (or in TIME_WAIT, which frees it
		// without a reason). Only a SYN's fate says anything.
		return true
	}
	return false
}

// packetKind names a dropped packet the way tcpdump readers do.
func packetKind(proto, b1, b2 uint8) string {
	switch proto {
	case protoTCP:
		const fin, syn, rst, psh, ack = 0x01, 0x02, 0x04, 0x08, 0x10
		switch {
		case b1&syn != 0 && b1&ack != 0:
			return "SYN-ACK"
		case b1&syn != 0:
			return "SYN"
		case b1&rst != 0:
			return "RST"
		case b1&fin != 0:
			return "FIN"
		case b1&psh != 0:
			return "data"
		case b1&ack != 0:
			return "ACK"
		}
		return "TCP segment"
	case protoUDP:
		return "UDP datagram"
	case protoICMP:
		switch b1 {
		case 8:
			return "echo request"
		case 0:
			return "echo reply"
		case 3:
			return fmt.Sprintf("ICMP unreachable (code %d)", b2)
		case 11:
			return "ICMP time exceeded"
		}
		return fmt.Sprintf("ICMP type %d", b1)
	case protoICMPv6:
		switch b1 {
		case 128:
			return "echo request"
		case 129:
			return "echo reply"
		case 1:
			return fmt.Sprintf("ICMPv6 unreachable (code %d)", b2)
		case 2:
			return "packet too big"
		case 3:
			return "ICMPv6 time exceeded"
		case 4:
			return fmt.Sprintf("ICMPv6 parameter problem (code %d)", b2)
		}
		return fmt.Sprintf("ICMPv6 type %d", b1)
	}
	return ""
}

// nameNamespaces names the namespaces of drops outside the watched ones:
// by their /run/netns name (as `ip netns` shows them), else by a process
// that lives in them.
func nameNamespaces(ds []Drop) {
	want := map[uint64]string{}
	for _, d := range ds {
		if d.Where == "" && d.Netns != 0 {
			want[d.Netns] = ""
		}
	}
	if len(want) == 0 {
		return
	}
	inode := func(p string) uint64 {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil {
			return 0
		}
		return st.Ino
	}
	missing := len(want)
	paths, _ := filepath.Glob("/run/netns/*")
	for _, p := range paths {
		if name, ok := want[inode(p)]; ok && name == "" {
			want[inode(p)] = filepath.Base(p)
			missing--
		}
	}
	if missing > 0 {
		procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
		for _, p := range procs {
			ino := inode(p)
			if name, ok := want[ino]; ok && name == "" {
				pid := strings.Split(p, "/")[2]
				comm, _ := os.ReadFile("/proc/" + pid + "/comm")
				want[ino] = fmt.Sprintf("pid %s (%s)", pid, strings.TrimSpace(string(comm)))
				if missing--; missing == 0 {
					break
				}
			}
		}
	}
	for i := range ds {
		if ds[i].Where == "" {
			ds[i].NetnsName = want[ds[i].Netns]
		}
	}
}

// Merge joins the drops watches of several nodes into one result. Nodes
// that share a kernel (the lab, or two parts of a plan on one node) each
// see every drop, so one drop is counted once: per kind of drop (namespace,
// reason, place in the kernel, packet), the result keeps the count of the
// watch that saw it most often, preferring the entries that name the
// namespace in the diagnosis' words.
func Merge(results ...*Result) *Result {
	var live []*Result
	for _, r := range results {
		if r != nil {
			live = append(live, r)
		}
	}
	switch len(live) {
	case 0:
		return nil
	case 1:
		return live[0]
	}
	type key struct {
		netns                    uint64
		reason, location, packet string
		proto, src, dst          string
		sport, dport             uint16
		answer                   bool
	}
	keyOf := func(d Drop) key {
		return key{d.Netns, d.Reason, d.Location, d.Packet, d.Proto, d.Src, d.Dst, d.SPort, d.DPort, d.Answer}
	}
	best := map[key][]Drop{}
	var order []key
	out := &Result{Method: live[0].Method, ByReason: map[string]int{}}
	var methods, notes []string
	for _, r := range live {
		if !slices.Contains(methods, r.Method) {
			methods = append(methods, r.Method)
		}
		if r.Note != "" && !slices.Contains(notes, r.Note) {
			notes = append(notes, r.Note)
		}
		out.Approximate = out.Approximate || r.Approximate
		out.AnyNamespace = out.AnyNamespace || r.AnyNamespace
		out.LoadMS = max(out.LoadMS, r.LoadMS)
		out.Lost += r.Lost
		mine := map[key][]Drop{}
		for _, d := range r.Drops {
			k := keyOf(d)
			mine[k] = append(mine[k], d)
		}
		for k, ds := range mine {
			cur, seen := best[k]
			if !seen {
				order = append(order, k)
			}
			named := func(ds []Drop) bool { return ds[0].Where != "" }
			if len(ds) > len(cur) || (len(ds) == len(cur) && named(ds) && !named(cur)) {
				best[k] = ds
			}
		}
	}
	// A watch that could not run says so; one that ran is the method.
	if len(methods) > 1 {
		methods = slices.DeleteFunc(methods, func(m string) bool { return m == "unavailable" })
		out.Method = strings.Join(methods, "+")
	}
	out.Note = strings.Join(notes, "; ")
	for _, k := range order {
		for _, d := range best[k] {
			out.Drops = append(out.Drops, d)
			out.ByReason[d.Reason]++
		}
	}
	sort.SliceStable(out.Drops, func(i, j int) bool { return out.Drops[i].At.Before(out.Drops[j].At) })
	return out
}
