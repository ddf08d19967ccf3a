package drops

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultTracefs is where tracefs is normally mounted.
const DefaultTracefs = "/sys/kernel/tracing"

var instanceSeq atomic.Int64

// startTracefs enables skb:kfree_skb in a tracing instance of its own (so it
// neither disturbs nor is disturbed by other tracers) and reads its pipe.
func (t *Tracer) startTracefs(root string) error {
	if root == "" {
		root = DefaultTracefs
	}
	if err := ensureTracefs(root); err != nil {
		return err
	}
	removeStaleInstances(root)
	inst := filepath.Join(root, "instances", fmt.Sprintf("netdiag-%d-%d", os.Getpid(), instanceSeq.Add(1)))
	if err := os.Mkdir(inst, 0o755); err != nil {
		return fmt.Errorf("tracefs instance: %w", err)
	}
	cleanup := func() { os.Remove(inst) }
	ev := filepath.Join(inst, "events", "skb", "kfree_skb")
	if _, err := os.Stat(ev); err != nil {
		cleanup()
		return fmt.Errorf("no skb:kfree_skb tracepoint: %w", err)
	}
	// Filter in the kernel what tracefs can: IPv4 and IPv6 packets that
	// were dropped (reason above "consumed").
	filter := fmt.Sprintf("(protocol == %d || protocol == %d) && reason > 1", ethIPv4, ethIPv6)
	if err := os.WriteFile(filepath.Join(ev, "filter"), []byte(filter), 0o644); err != nil {
		// Unfiltered, the pipe carries every drop of the node, ARP and
		// all: parseTraceLine keeps only IP ones.
		t.res.Note = "the tracepoint's filter was refused (" + err.Error() + "): drops are filtered by netdiag instead"
	}
	if err := os.WriteFile(filepath.Join(ev, "enable"), []byte("1"), 0o644); err != nil {
		cleanup()
		return fmt.Errorf("enable skb:kfree_skb: %w", err)
	}
	pipe, err := os.OpenFile(filepath.Join(inst, "trace_pipe"), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		os.WriteFile(filepath.Join(ev, "enable"), []byte("0"), 0o644)
		cleanup()
		return err
	}
	var stopAt atomic.Int64
	t.stop = func() { stopAt.CompareAndSwap(0, time.Now().UnixNano()) }
	go func() {
		defer close(t.done)
		defer func() {
			os.WriteFile(filepath.Join(ev, "enable"), []byte("0"), 0o644)
			pipe.Close()
			cleanup()
		}()
		// trace_pipe is pollable on current kernels: short read deadlines
		// let the loop see Stop. Where it is not, the descriptor is
		// non-blocking and an empty pipe reads as EAGAIN.
		deadlines := pipe.SetReadDeadline(time.Now().Add(25*time.Millisecond)) == nil
		r := bufio.NewReader(pipe)
		var partial strings.Builder
		for {
			if at := stopAt.Load(); at != 0 && time.Since(time.Unix(0, at)) > 100*time.Millisecond {
				return
			}
			if deadlines {
				pipe.SetReadDeadline(time.Now().Add(25 * time.Millisecond))
			}
			line, err := r.ReadString('\n')
			partial.WriteString(line)
			switch {
			case err == nil:
				if d, ok := parseTraceLine(partial.String()); ok {
					t.add(d)
				}
				partial.Reset()
			case errors.Is(err, os.ErrDeadlineExceeded):
			case errors.Is(err, unix.EAGAIN), errors.Is(err, io.EOF):
				time.Sleep(10 * time.Millisecond)
			default:
				return
			}
		}
	}()
	return nil
}

// removeStaleInstances removes the tracing instances of netdiag processes
// that are gone (killed before they could clean up).
func removeStaleInstances(root string) {
	dirs, _ := filepath.Glob(filepath.Join(root, "instances", "netdiag-*-*"))
	for _, d := range dirs {
		var pid, seq int
		if _, err := fmt.Sscanf(filepath.Base(d), "netdiag-%d-%d", &pid, &seq); err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			os.Remove(d)
		}
	}
}

// ensureTracefs mounts tracefs where it is expected when it is not there.
func ensureTracefs(root string) error {
	if _, err := os.Stat(filepath.Join(root, "instances")); err == nil {
		return nil
	}
	if err := unix.Mount("nodev", root, "tracefs", 0, ""); err != nil {
		return fmt.Errorf("tracefs is not mounted at %s and mounting it failed: %w", root, err)
	}
	return nil
}

// EtherTypes of the packets the fallback reports.
const (
	ethIPv4 = 0x0800
	ethIPv6 = 0x86dd
)

// Lines look like:
//
//	ping-123 [001] ..s1. 12.345678: kfree_skb: skbaddr=000000009c0b1e2a rx_sk=0000000000000000 protocol=2048 location=nft_do_chain+0x3f1/0x5a0 reason: NETFILTER_DROP
var traceLine = regexp.MustCompile(`kfree_skb: .*protocol=(\d+) location=(\S+) reason: (\S+)`)

func parseTraceLine(s string) (Drop, bool) {
	m := traceLine.FindStringSubmatch(s)
	if m == nil {
		return Drop{}, false
	}
	d := Drop{At: time.Now(), Reason: m[3], Location: m[2]}
	if i := strings.IndexByte(d.Location, '/'); i > 0 {
		d.Location = d.Location[:i]
	}
	// Only the network protocol is known: Proto says which IP it was.
	switch m[1] {
	case strconv.Itoa(ethIPv4):
		d.Proto, d.Family = "ipv4", 4
	case strconv.Itoa(ethIPv6):
		d.Proto, d.Family = "ipv6", 6
	default:
		return Drop{}, false
	}
	return d, true
}
