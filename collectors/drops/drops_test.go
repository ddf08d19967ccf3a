package drops_test

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors/drops"
	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
)

func TestMain(m *testing.M) { labtest.Main(m) }

func dial(ns *netns.NS, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", addr)
	if err == nil {
		c.Close()
	}
	return err
}

func TestDropsOnLab(t *testing.T) {
	l := labtest.Up(t, "tdrop")
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	clientPod, _ := l.Pod("default/client")
	webPod, _ := l.Pod("default/web")
	nodeA, _ := l.Node("node-a")
	client := labtest.OpenNS(t, clientPod.NetnsPath)
	web := labtest.OpenNS(t, webPod.NetnsPath)
	nodeANS := labtest.OpenNS(t, nodeA.NetnsPath)
	src, dst := netip.MustParseAddr(clientPod.IP), netip.MustParseAddr(webPod.IP)
	watched := map[uint64]string{client.Inode(): "source", web.Inode(): "peer", nodeANS.Inode(): "peer-node"}
	fault := func(t *testing.T, name string) {
		if _, err := lab.InjectFault(ctx, l.Instance, name, quiet); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lab.Clear(ctx, l.Instance, quiet) })
	}
	// probe watches client -> web:port while one connect is tried.
	probe := func(port uint16, method string) *drops.Result {
		tr := drops.Start([]drops.Flow{{Proto: "tcp", Src: src, Dst: dst, DPort: port}}, watched, drops.Options{Method: method})
		dial(client, netip.AddrPortFrom(dst, port).String())
		return tr.Stop()
	}
	find := func(res *drops.Result, reason, where string) *drops.Drop {
		for i := range res.Drops {
			if res.Drops[i].Reason == reason && (where == "" || res.Drops[i].Where == where) {
				return &res.Drops[i]
			}
		}
		return nil
	}

	t.Run("netfilter-drop", func(t *testing.T) {
		fault(t, "port-firewall")
		res := probe(8080, "ebpf")
		if res.Method != "ebpf" {
			t.Fatalf("method %s: %s", res.Method, res.Note)
		}
		d := find(res, "NETFILTER_DROP", "peer")
		if d == nil {
			t.Fatalf("no NETFILTER_DROP in the web pod: %+v", res)
		}
		if d.Proto != "tcp" || d.Src != clientPod.IP || d.Dst != webPod.IP || d.DPort != 8080 || d.Netns != web.Inode() || d.Packet != "SYN" || !strings.Contains(d.Location, "nf_hook_slow") && !strings.Contains(d.Location, "nft_") {
			t.Errorf("drop: %+v", d)
		}
	})

	t.Run("any-namespace", func(t *testing.T) {
		// Without the destination's namespace the probe's own connection
		// decides, and the namespace is named from /run/netns. A second lab
		// carries the very same addresses and the same fault: its drops
		// are not the probe's.
		fault(t, "port-firewall")
		twin := labtest.Up(t, "tdrpb")
		if _, err := lab.InjectFault(ctx, twin.Instance, "port-firewall", quiet); err != nil {
			t.Fatal(err)
		}
		twinClientPod, _ := twin.Pod("default/client")
		twinClient := labtest.OpenNS(t, twinClientPod.NetnsPath)
		only := map[uint64]string{client.Inode(): "source"}
		tr := drops.Start([]drops.Flow{{Proto: "tcp", Src: src, Dst: dst, DPort: 8080}}, only, drops.Options{Method: "ebpf", AnyNamespace: true})
		for range 3 {
			dial(twinClient, webPod.IP+":8080")
		}
		dial(client, webPod.IP+":8080")
		res := tr.Stop()
		d := find(res, "NETFILTER_DROP", "")
		if !res.AnyNamespace || d == nil || d.Where != "" || d.Netns != web.Inode() || d.NetnsName != filepath.Base(webPod.NetnsPath) {
			t.Fatalf("drop in an unwatched namespace: %+v", res)
		}
		for _, x := range res.Drops {
			if x.Netns != web.Inode() {
				t.Errorf("a drop in the twin lab was attributed to the probe: %+v", x)
			}
		}
	})

	t.Run("no-socket", func(t *testing.T) {
		res := probe(9999, "ebpf")
		if find(res, "NO_SOCKET", "peer") == nil {
			t.Errorf("no NO_SOCKET in the web pod: %+v", res)
		}
	})

	t.Run("rp-filter", func(t *testing.T) {
		fault(t, "rp-filter")
		res := probe(8080, "ebpf")
		if find(res, "IP_RPFILTER", "peer-node") == nil {
			t.Errorf("no IP_RPFILTER on node-a: %+v", res)
		}
	})

	t.Run("background-drops-not-attributed", func(t *testing.T) {
		fault(t, "port-firewall")
		// Background: a flood to a closed UDP port on the web pod, dropped
		// there all the time (NO_SOCKET), and TCP to a closed port.
		bg, err := lab.HelperCommand("flood", "--to", webPod.IP+":7777", "--pps", "2000", "--size", "64")
		if err != nil {
			t.Fatal(err)
		}
		if err := client.Start(bg); err != nil {
			t.Fatal(err)
		}
		defer func() { bg.Process.Kill(); bg.Wait() }()
		time.Sleep(200 * time.Millisecond)
		tr := drops.Start([]drops.Flow{{Proto: "tcp", Src: src, Dst: dst, DPort: 8080}}, watched, drops.Options{Method: "ebpf"})
		dial(client, webPod.IP+":8080")
		dial(client, webPod.IP+":9999")
		res := tr.Stop()
		for _, d := range res.Drops {
			if d.DPort != 8080 && d.SPort != 8080 {
				t.Errorf("a drop of another flow was attributed to the probe: %+v", d)
			}
		}
		if find(res, "NETFILTER_DROP", "peer") == nil {
			t.Errorf("the probe's own drop is missing: %+v", res)
		}
	})

	t.Run("unavailable", func(t *testing.T) {
		// Neither way in: the evidence says why, and nothing fails.
		tr := drops.Start([]drops.Flow{{Proto: "tcp", Src: src, Dst: dst, DPort: 8080}}, watched, drops.Options{Method: "tracefs", TracefsRoot: "/nonexistent/netdiag-tracefs"})
		res := tr.Stop()
		if res.Method != "unavailable" || !strings.Contains(res.Note, "could not be read") || !strings.Contains(res.Note, "/nonexistent/netdiag-tracefs") {
			t.Errorf("unavailable: %+v", res)
		}
	})

	t.Run("tracefs-fallback", func(t *testing.T) {
		fault(t, "port-firewall")
		res := probe(8080, "tracefs")
		if res.Method != "tracefs" || !res.Approximate || !strings.Contains(res.Note, "approximate") {
			t.Fatalf("fallback: %+v", res)
		}
		if res.ByReason["NETFILTER_DROP"] == 0 {
			t.Errorf("tracefs saw no NETFILTER_DROP: %+v", res)
		}
	})
}
