package collectors

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/tools"
	"golang.org/x/sys/unix"
)

// CaptureOptions bound a capture. Every capture stops at the first of its
// duration, packet count and byte count.
type CaptureOptions struct {
	Duration   time.Duration `json:"duration,omitempty"`
	MaxPackets int           `json:"max_packets,omitempty"`
	MaxBytes   int64         `json:"max_bytes,omitempty"` // of the pcap file
	// SnapLen is how much of each packet is kept. The default keeps headers
	// only; Payload keeps whole packets.
	SnapLen int    `json:"snaplen,omitempty"`
	Payload bool   `json:"payload,omitempty"`
	Filter  string `json:"filter,omitempty"` // tcpdump syntax
	Iface   string `json:"iface,omitempty"`  // default: the route's device to --to, else eth0
	File    string `json:"file,omitempty"`   // pcap path; default a new file in the temp dir
}

// Capture defaults and limits.
const (
	DefaultCaptureDuration = 3 * time.Second
	MaxCaptureDuration     = 5 * time.Minute
	DefaultCapturePackets  = 100000
	DefaultCaptureBytes    = 64 << 20
	HeadersSnapLen         = 128
	PayloadSnapLen         = 65535
)

func (o *CaptureOptions) withDefaults() CaptureOptions {
	c := *o
	if c.Duration <= 0 {
		c.Duration = DefaultCaptureDuration
	}
	c.Duration = min(c.Duration, MaxCaptureDuration)
	if c.MaxPackets <= 0 {
		c.MaxPackets = DefaultCapturePackets
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultCaptureBytes
	}
	if c.SnapLen <= 0 {
		c.SnapLen = HeadersSnapLen
		if c.Payload {
			c.SnapLen = PayloadSnapLen
		}
	}
	return c
}

// CaptureResult is the evidence of one capture.
type CaptureResult struct {
	File    string  `json:"file"`
	Iface   string  `json:"iface"`
	Filter  string  `json:"filter,omitempty"`
	SnapLen int     `json:"snaplen"`
	Packets int     `json:"packets"`
	Bytes   int64   `json:"bytes"` // of the pcap file
	Seconds float64 `json:"seconds"`
	// KernelSeen and KernelDrops are the socket's counters: packets the
	// filter accepted, and those lost because the ring was full.
	KernelSeen  uint64 `json:"kernel_seen"`
	KernelDrops uint64 `json:"kernel_drops"`
	// StoppedBy is duration, packets, bytes or cancelled.
	StoppedBy string       `json:"stopped_by"`
	Summary   *PcapSummary `json:"summary,omitempty"`
}

func init() {
	registerWatch(spec{name: "capture", help: "packet capture (AF_PACKET ring, tcpdump-syntax filter compiled by libpcap) bounded by time, packets and bytes, written as pcap, with a per-flow summary",
		scopes: []Scope{ScopeSource, ScopePeer}, timeout: DefaultCaptureDuration + 5*time.Second, needs: func(p *Params) error {
			if p.Capture.Duration <= 0 {
				return fmt.Errorf("--capture DURATION")
			}
			return nil
		}}, collectCapture,
		func(ctx context.Context, in Input, _ *Target) (func() (*CaptureResult, error), error) {
			c, err := startCaptureFor(ctx, in)
			if err != nil {
				return nil, err
			}
			return c.Wait, nil
		})
}

func collectCapture(ctx context.Context, in Input) (*CaptureResult, error) {
	c, err := startCaptureFor(ctx, in)
	if err != nil {
		return nil, err
	}
	return c.Wait()
}

// CheckCapture validates a capture request before anything runs: the
// interface exists in the source namespace and libpcap accepts the filter.
func CheckCapture(ctx context.Context, t *Target, p *Params) error {
	in := Input{NS: t.Source, Scope: ScopeSource, Params: p}
	opts := captureOpts(in)
	o := opts.withDefaults()
	if o.File != "" {
		if err := CheckWritable(o.File); err != nil {
			return err
		}
	}
	h, err := t.Source.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	if _, err := h.LinkByName(o.Iface); err != nil {
		return fmt.Errorf("capture: no interface %q in %s", o.Iface, t.Source.Path())
	}
	_, err = CompileFilter(ctx, o.Filter, o.SnapLen)
	return err
}

// CheckWritable checks, before anything runs, that a file the user asked for
// can be written: its folder exists and a file can be created in it. A file
// it had to create to find out is removed again.
func CheckWritable(path string) error {
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if err != nil {
		return badInput(fmt.Errorf("cannot write %s: folder %s does not exist", path, dir))
	}
	if !st.IsDir() {
		return badInput(fmt.Errorf("cannot write %s: %s is not a folder", path, dir))
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return badInput(fmt.Errorf("cannot write %s: it is a folder; give a file name, e.g. %s", path, filepath.Join(path, "capture.pcap")))
	}
	_, statErr := os.Stat(path)
	created := statErr != nil
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return badInput(fmt.Errorf("cannot write %s: %w", path, err))
	}
	f.Close()
	if created {
		os.Remove(path)
	}
	return nil
}

// PcapFile is where the pcap of a scope goes when the question names one
// file: the source's in it, another scope's beside it (web.pcap,
// web-peer.pcap).
func PcapFile(file string, s Scope) string {
	if s == ScopeSource || file == "" {
		return file
	}
	return strings.TrimSuffix(file, ".pcap") + "-" + string(s) + ".pcap"
}

// captureOpts are the capture options for one namespace: on the source, the
// interface towards the destination; on the peer, its eth0 and a pcap file
// of its own.
func captureOpts(in Input) CaptureOptions {
	opts := in.Capture
	opts.File = PcapFile(opts.File, in.Scope)
	if opts.Iface == "" && in.Scope == ScopeSource && in.To != nil && in.To.Addr.IsValid() {
		if dev, _, _, err := egressMTU(in); err == nil {
			opts.Iface = dev
		}
	}
	if opts.Iface == "" {
		opts.Iface = "eth0"
	}
	return opts
}

// startCaptureFor starts the capture a collector run asks for.
func startCaptureFor(ctx context.Context, in Input) (*Capture, error) {
	return StartCapture(ctx, in.NS, captureOpts(in))
}

// Capture is a running capture.
type Capture struct {
	opts   CaptureOptions
	fd     int
	sock   *os.File // fd, registered with Go's netpoller
	rc     syscall.RawConn
	ring   []byte
	file   *os.File
	w      *bufio.Writer
	res    CaptureResult
	stop   chan struct{}
	done   chan struct{}
	err    error
	ctx    context.Context
	start  time.Time
	closed atomic.Bool
}

// CompileFilter compiles a tcpdump filter expression to classic BPF for an
// Ethernet interface with libpcap, through `tcpdump -ddd -r FILE` on an empty
// pcap file of that link type: no cgo, no capture device opened just to
// compile, and the expression never meets a shell (it is one argument).
func CompileFilter(ctx context.Context, expr string, snaplen int) ([]unix.SockFilter, error) {
	if strings.TrimSpace(expr) == "" {
		return []unix.SockFilter{{Code: 0x06, K: uint32(snaplen)}}, nil // ret #snaplen
	}
	if strings.HasPrefix(strings.TrimSpace(expr), "-") {
		return nil, fmt.Errorf("bad capture filter %q: a filter expression cannot start with '-'", expr)
	}
	bin, err := tools.Find("tcpdump")
	if err != nil {
		return nil, err
	}
	empty, err := os.CreateTemp("", "netdiag-linktype-*.pcap")
	if err != nil {
		return nil, err
	}
	defer os.Remove(empty.Name())
	empty.Write(pcapHeader(snaplen))
	empty.Close()
	cmd := exec.CommandContext(ctx, bin, "-ddd", "-s", strconv.Itoa(snaplen), "-r", empty.Name(), "--", expr)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndex(msg, "tcpdump: "); i >= 0 {
			msg = strings.TrimSpace(msg[i+len("tcpdump: "):])
		}
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("bad capture filter %q: %s", expr, msg)
	}
	rows := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(rows) < 2 {
		return nil, fmt.Errorf("compile filter %q: tcpdump printed no program", expr)
	}
	n, err := strconv.Atoi(strings.TrimSpace(rows[0]))
	if err != nil || n != len(rows)-1 {
		return nil, fmt.Errorf("compile filter %q: unexpected tcpdump -ddd output", expr)
	}
	prog := make([]unix.SockFilter, 0, n)
	for _, r := range rows[1:] {
		f := strings.Fields(r)
		if len(f) != 4 {
			return nil, fmt.Errorf("compile filter %q: bad instruction %q", expr, r)
		}
		code, _ := strconv.ParseUint(f[0], 10, 16)
		jt, _ := strconv.ParseUint(f[1], 10, 8)
		jf, _ := strconv.ParseUint(f[2], 10, 8)
		k, _ := strconv.ParseUint(f[3], 10, 32)
		prog = append(prog, unix.SockFilter{Code: uint16(code), Jt: uint8(jt), Jf: uint8(jf), K: uint32(k)})
	}
	return prog, nil
}

// pcapHeader is the pcap global header: nanosecond timestamps, Ethernet.
func pcapHeader(snaplen int) []byte {
	hdr := make([]byte, 24)
	binary.LittleEndian.PutUint32(hdr[0:], 0xa1b23c4d)
	binary.LittleEndian.PutUint16(hdr[4:], 2)
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	binary.LittleEndian.PutUint32(hdr[16:], uint32(snaplen))
	binary.LittleEndian.PutUint32(hdr[20:], linkEthernet)
	return hdr
}

const (
	// 4 MiB of ring: at 60k packets/s of headers it holds half a second, and
	// the kernel zeroes every page of it when the socket is set up, which is
	// CPU a short capture should not spend.
	ringBlockSize = 512 << 10
	ringBlocks    = 8
	// A block is handed over when full or after this long: fewer wake-ups
	// under load, and a capture's last packets arrive at most this late.
	ringRetire    = 100 * time.Millisecond
	ringFrameSize = 1 << 11
	linkEthernet  = 1
)

// StartCapture opens an AF_PACKET socket in the namespace on one interface,
// attaches the filter before binding (so nothing unfiltered is ever queued),
// maps a TPACKET_V3 ring and starts writing pcap. It returns once the socket
// sees packets, so probes started afterwards are caught.
func StartCapture(ctx context.Context, ns *netns.NS, o CaptureOptions) (*Capture, error) {
	opts := o.withDefaults()
	if opts.Iface == "" {
		opts.Iface = "eth0"
	}
	h, err := ns.Handle()
	if err != nil {
		return nil, err
	}
	link, err := h.LinkByName(opts.Iface)
	h.Close()
	if err != nil {
		return nil, fmt.Errorf("capture: no interface %q in %s", opts.Iface, ns.Path())
	}
	if link.Attrs().EncapType != "ether" && link.Attrs().EncapType != "loopback" {
		return nil, fmt.Errorf("capture: interface %s has link type %s; only Ethernet-framed interfaces are supported", opts.Iface, link.Attrs().EncapType)
	}
	prog, err := CompileFilter(ctx, opts.Filter, opts.SnapLen)
	if err != nil {
		return nil, err
	}
	fd, err := ns.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	c := &Capture{opts: opts, fd: fd, stop: make(chan struct{}), done: make(chan struct{}), ctx: ctx}
	fail := func(err error) (*Capture, error) {
		if c.ring != nil {
			unix.Munmap(c.ring)
		}
		unix.Close(fd)
		return nil, fmt.Errorf("capture on %s: %w", opts.Iface, err)
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		return fail(fmt.Errorf("attach filter: %w", err))
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return fail(fmt.Errorf("TPACKET_V3: %w", err))
	}
	req := unix.TpacketReq3{Block_size: ringBlockSize, Block_nr: ringBlocks, Frame_size: ringFrameSize,
		Frame_nr: ringBlockSize / ringFrameSize * ringBlocks, Retire_blk_tov: uint32(ringRetire.Milliseconds())}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fail(fmt.Errorf("rx ring: %w", err))
	}
	c.ring, err = unix.Mmap(fd, 0, ringBlockSize*ringBlocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(fmt.Errorf("mmap ring: %w", err))
	}
	proto := htons(unix.ETH_P_ALL)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: link.Attrs().Index}); err != nil {
		return fail(fmt.Errorf("bind: %w", err))
	}
	path := opts.File
	var f *os.File
	if path == "" {
		f, err = os.CreateTemp("", "netdiag-*.pcap")
	} else {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	}
	if err != nil {
		return fail(fmt.Errorf("pcap file: %w", err))
	}
	// Waiting goes through Go's netpoller (epoll), not a blocking poll(2):
	// a thread blocked in a syscall makes the runtime hand its work to
	// another thread many times a second, which costs more CPU than the
	// capture itself.
	if err := unix.SetNonblock(fd, true); err != nil {
		f.Close()
		return fail(err)
	}
	c.sock = os.NewFile(uintptr(fd), "packet:"+opts.Iface)
	if c.rc, err = c.sock.SyscallConn(); err != nil {
		f.Close()
		c.sock.Close()
		unix.Munmap(c.ring)
		return nil, err
	}
	c.file, c.w = f, bufio.NewWriterSize(f, 256<<10)
	c.res = CaptureResult{File: f.Name(), Iface: opts.Iface, Filter: opts.Filter, SnapLen: opts.SnapLen, StoppedBy: "duration"}
	c.writeHeader()
	c.start = time.Now()
	go c.loop()
	return c, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *Capture) writeHeader() {
	c.w.Write(pcapHeader(c.opts.SnapLen))
	c.res.Bytes = 24
}

// Stop ends the capture early (the probes are done).
func (c *Capture) Stop() {
	if c.closed.CompareAndSwap(false, true) {
		close(c.stop)
		c.sock.SetReadDeadline(time.Now())
	}
}

// Wait waits for the capture to end and returns its evidence.
func (c *Capture) Wait() (*CaptureResult, error) {
	<-c.done
	return &c.res, c.err
}

func (c *Capture) ready(block int) bool {
	return atomic.LoadUint32(c.blockStatus(block))&unix.TP_STATUS_USER != 0
}

// wait blocks until the block is ready or the deadline passes; it reports
// whether the block is ready.
func (c *Capture) wait(block int, until time.Time) bool {
	if c.ready(block) {
		return true
	}
	c.sock.SetReadDeadline(until)
	c.rc.Read(func(uintptr) bool { return c.ready(block) })
	return c.ready(block)
}

// loop walks the ring's blocks as the kernel hands them over.
func (c *Capture) loop() {
	defer close(c.done)
	summ := newPcapSummarizer()
	stopWatch := make(chan struct{})
	go func() {
		select {
		case <-c.ctx.Done():
			c.sock.SetReadDeadline(time.Now())
		case <-stopWatch:
		}
	}()
	stoppedBy := c.read(summ)
	close(stopWatch)
	c.res.StoppedBy = stoppedBy
	c.finish(summ)
}

// read walks the ring until the capture ends and says why it ended.
func (c *Capture) read(summ *pcapSummarizer) (stoppedBy string) {
	// recover() works only in the deferred function itself: Recover is
	// deferred directly, and the function before it reads what it found.
	var perr error
	defer func() {
		if perr != nil {
			c.err, stoppedBy = perr, "failed"
		}
	}()
	defer Recover("capture on "+c.opts.Iface, &perr)
	deadline := c.start.Add(c.opts.Duration)
	block := 0
	for stoppedBy == "" {
		switch {
		case c.closed.Load():
			stoppedBy = "stopped"
		case c.ctx.Err() != nil:
			stoppedBy = "cancelled"
		case !time.Now().Before(deadline):
			stoppedBy = "duration"
		}
		if stoppedBy != "" {
			// What the kernel already holds belongs to the window: the
			// current partly filled block retires within its timer.
			stoppedBy = c.drain(&block, summ, stoppedBy)
			break
		}
		if !c.wait(block, deadline) {
			continue
		}
		if by := c.readBlock(block, summ); by != "" {
			stoppedBy = by
		}
		block = (block + 1) % ringBlocks
	}
	return stoppedBy
}

// finish closes the socket, the ring and the pcap, whatever stopped the
// capture (a panic in the reading included).
func (c *Capture) finish(summ *pcapSummarizer) {
	if st, err := unix.GetsockoptTpacketStatsV3(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
		c.res.KernelSeen, c.res.KernelDrops = uint64(st.Packets), uint64(st.Drops)
	}
	unix.Munmap(c.ring)
	c.sock.Close()
	c.res.Seconds = round3(time.Since(c.start).Seconds())
	if err := c.w.Flush(); err != nil && c.err == nil {
		c.err = err
	}
	if err := c.file.Close(); err != nil && c.err == nil {
		c.err = err
	}
	c.res.Summary = summ.result()
}

// drain reads the blocks the kernel has filled by the end of the window,
// waiting once for the retire timer of the current block.
func (c *Capture) drain(block *int, summ *pcapSummarizer, by string) string {
	for range ringBlocks {
		if !c.ready(*block) {
			c.sock.SetReadDeadline(time.Now().Add(ringRetire + 50*time.Millisecond))
			c.rc.Read(func(uintptr) bool { return c.ready(*block) || c.ctx.Err() != nil })
			if !c.ready(*block) {
				return by
			}
		}
		if r := c.readBlock(*block, summ); r != "" {
			return r
		}
		*block = (*block + 1) % ringBlocks
	}
	return by
}

// blockStatus points at block_status in the block's tpacket_hdr_v1.
func (c *Capture) blockStatus(block int) *uint32 {
	return (*uint32)(unsafe.Pointer(&c.ring[block*ringBlockSize+8]))
}

// readBlock writes the packets of one block to the pcap and gives the block
// back to the kernel. It returns why the capture must stop, or "".
func (c *Capture) readBlock(block int, summ *pcapSummarizer) string {
	b := c.ring[block*ringBlockSize : (block+1)*ringBlockSize]
	defer atomic.StoreUint32(c.blockStatus(block), unix.TP_STATUS_KERNEL)
	num := binary.NativeEndian.Uint32(b[12:])
	off := binary.NativeEndian.Uint32(b[16:])
	var rec [16]byte
	for i := uint32(0); i < num; i++ {
		p := b[off:]
		next := binary.NativeEndian.Uint32(p[0:])
		sec := binary.NativeEndian.Uint32(p[4:])
		nsec := binary.NativeEndian.Uint32(p[8:])
		snap := binary.NativeEndian.Uint32(p[12:])
		wire := binary.NativeEndian.Uint32(p[16:])
		mac := binary.NativeEndian.Uint16(p[24:])
		data := p[mac : uint32(mac)+snap]
		if c.res.Bytes+16+int64(len(data)) > c.opts.MaxBytes {
			return "bytes"
		}
		binary.LittleEndian.PutUint32(rec[0:], sec)
		binary.LittleEndian.PutUint32(rec[4:], nsec)
		binary.LittleEndian.PutUint32(rec[8:], snap)
		binary.LittleEndian.PutUint32(rec[12:], wire)
		if c.w.Available() >= len(rec)+len(data) {
			buf := append(append(c.w.AvailableBuffer(), rec[:]...), data...)
			c.w.Write(buf)
		} else {
			c.w.Write(rec[:])
			c.w.Write(data)
		}
		c.res.Bytes += 16 + int64(len(data))
		c.res.Packets++
		summ.add(time.Unix(int64(sec), int64(nsec)), data, int(wire))
		if c.res.Packets >= c.opts.MaxPackets {
			return "packets"
		}
		if next == 0 {
			break
		}
		off += next
	}
	return ""
}
