package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/agent"
	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/diagnose/labview"
	"github.com/netdiag/netdiag/internal/procfs"
	"github.com/netdiag/netdiag/lab"
)

// benchAgent starts a real agent process on each lab node (static token,
// as where there is no cluster) and measures what the agent issue asks:
// its resident memory and CPU while idle, the time from a request to the
// first probe packet in the pod's namespace, and a whole diagnosis through
// the agents beside the same one in process.
func benchAgent(ctx context.Context, c *cli, l *lab.Lab) error {
	st, err := lab.GetStatus(l.Instance)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// The DaemonSet runs the slim netdiag-agent (make build puts it beside
	// netdiag); `netdiag agent` is the same agent in the whole binary.
	agentArgs := []string{"agent"}
	if slim := filepath.Join(filepath.Dir(self), "netdiag-agent"); fileExists(slim) {
		self, agentArgs = slim, nil
	}
	fmt.Fprintf(c.stdout, "agent binary: %s %s\n", self, strings.Join(agentArgs, " "))
	dir, err := os.MkdirTemp("", "netdiag-bench-agent-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	const token = "bench-token"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		return err
	}
	type running struct {
		node *lab.Node
		ns   *netns.NS
		cmd  *exec.Cmd
		url  string
	}
	agents := map[string]*running{}
	defer func() {
		for _, a := range agents {
			if a.cmd.Process != nil {
				a.cmd.Process.Signal(syscall.SIGTERM)
				a.cmd.Wait()
			}
			a.ns.Close()
		}
	}()
	for i := range st.Nodes {
		n := &st.Nodes[i]
		ns, err := netns.Open(n.NetnsPath)
		if err != nil {
			return err
		}
		addr := net.JoinHostPort(n.InternalIP, strconv.Itoa(agent.DefaultPort))
		log, err := os.Create(filepath.Join(dir, n.Name+".log"))
		if err != nil {
			ns.Close()
			return err
		}
		cmd := exec.Command(self, append(agentArgs, "--node", n.Name, "--listen", addr, "--token-file", tokenFile, "--scan-netns-prefix", st.Prefix)...)
		cmd.Stdout, cmd.Stderr = log, log
		a := &running{node: n, ns: ns, cmd: cmd, url: "https://" + addr}
		agents[n.Name] = a
		if err := ns.Start(cmd); err != nil {
			return fmt.Errorf("start the agent on %s: %w", n.Name, err)
		}
		log.Close()
	}
	// Each node's agent is reached through that node's namespace, as the
	// bot reaches it over the node network.
	clientFor := func(node string) *http.Client {
		ns := agents[node].ns
		return &http.Client{Transport: &http.Transport{
			DialContext:     func(ctx context.Context, network, addr string) (net.Conn, error) { return ns.Dial(ctx, network, addr) },
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // a self-signed agent: the bench measures, it does not pin
		}}
	}
	for name, a := range agents {
		if err := waitHealthy(ctx, clientFor(name), a.url); err != nil {
			b, _ := os.ReadFile(filepath.Join(dir, name+".log"))
			return fmt.Errorf("agent on %s: %w\n%s", name, err, b)
		}
	}

	// Idle: memory and CPU of each agent over 10 s with nothing asked.
	time.Sleep(time.Second)
	fmt.Fprintln(c.stdout, "agent idle (static token, 10 s):")
	before := map[string]time.Duration{}
	for name, a := range agents {
		before[name], _ = procfs.CPU(a.cmd.Process.Pid)
	}
	time.Sleep(10 * time.Second)
	for _, name := range sortedKeys(agents) {
		a := agents[name]
		mem, _ := procfs.ReadMemory(a.cmd.Process.Pid)
		cpu, _ := procfs.CPU(a.cmd.Process.Pid)
		mib := func(b int64) float64 { return float64(b) / (1 << 20) }
		fmt.Fprintf(c.stdout, "  %-7s RSS %5.1f MiB (target < 25 MiB): %.1f MiB its own, %.1f MiB pages of the binary   CPU while idle %s over 10 s\n",
			name, mib(mem.RSS), mib(mem.Anon), mib(mem.File), cpu-before[name])
	}

	// Time to the first probe packet: a capture socket in the pod's
	// namespace sees the probe leave; the clock starts when the request
	// is sent on a connection already open.
	client, _ := st.Pod("default/client")
	web, _ := st.Pod("default/web")
	src := agents[client.Node]
	hc := clientFor(client.Node)
	site := &agent.Client{Node: client.Node, URL: src.url, HTTP: hc, Token: func() (string, error) { return token, nil }}
	webIP := netip.MustParseAddr(web.IP)
	part := &diagnose.Part{Node: client.Node,
		Places: map[collectors.Scope]diagnose.Place{collectors.ScopeSource: {Node: client.Node, Pod: &diagnose.Pod{Namespace: client.Namespace, Name: client.Name, IP: netip.MustParseAddr(client.IP)}}},
		Jobs:   []collectors.Job{{Collector: "tcp", Scope: collectors.ScopeSource}},
		Params: &collectors.Params{To: &collectors.Dest{Addr: webIP, Port: 8080}, TCPAttempts: 1}}
	if _, err := site.Run(ctx, part); err != nil { // warm: TLS, the token, the pod found once
		return err
	}
	podNS, err := netns.Open(client.NetnsPath)
	if err != nil {
		return err
	}
	defer podNS.Close()
	var firsts []time.Duration
	for range 10 {
		d, err := timeToFirstPacket(ctx, podNS, webIP, func() error { _, err := site.Run(ctx, part); return err })
		if err != nil {
			return err
		}
		firsts = append(firsts, d)
	}
	slices.Sort(firsts)
	fmt.Fprintf(c.stdout, "request to the first probe packet in pod %s's namespace: median %s, min %s, max %s over 10 (target < 50 ms)\n",
		client.Key(), firsts[len(firsts)/2].Round(10*time.Microsecond), firsts[0].Round(10*time.Microsecond), firsts[len(firsts)-1].Round(10*time.Microsecond))

	// A whole diagnosis: through the agents, and in process.
	remote := &agent.Runner{Site: func(node string) (diagnose.Site, error) {
		a, ok := agents[node]
		if !ok {
			return nil, agent.ErrUnreachableNode(node)
		}
		return &agent.Client{Node: node, URL: a.url, HTTP: clientFor(node), Token: func() (string, error) { return token, nil }}, nil
	}, Local: &diagnose.LocalSite{}}
	for _, q := range []struct{ to string }{{"pod/default/web:8080"}, {"svc/default/web:80"}} {
		req, err := labview.Request(st, "pod", "default/client", q.to, nil)
		if err != nil {
			return err
		}
		times := map[string][]time.Duration{}
		verdicts := map[string]string{}
		for range 5 {
			for _, r := range []struct {
				name string
				run  diagnose.Runner
			}{{"local", diagnose.LocalRunner{}}, {"agents", remote}} {
				start := time.Now()
				f, err := (&diagnose.Engine{Runner: r.run}).Diagnose(ctx, req)
				if err != nil {
					return err
				}
				times[r.name] = append(times[r.name], time.Since(start))
				verdicts[r.name] = f.Verdict().String()
			}
		}
		med := func(ds []time.Duration) time.Duration { slices.Sort(ds); return ds[len(ds)/2] }
		fmt.Fprintf(c.stdout, "diagnose pod default/client --to %s: in process %s (%s), through the agents %s (%s), median of 5\n",
			q.to, med(times["local"]).Round(time.Millisecond), verdicts["local"], med(times["agents"]).Round(time.Millisecond), verdicts["agents"])
	}
	return nil
}

func waitHealthy(ctx context.Context, hc *http.Client, url string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+agent.PathHealth, nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not healthy after 15 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// timeToFirstPacket runs call and returns how long after its start an IPv4
// packet to dst left the namespace.
func timeToFirstPacket(ctx context.Context, ns *netns.NS, dst netip.Addr, call func() error) (time.Duration, error) {
	// ETH_P_ALL: outgoing packets reach only the taps that take all.
	fd, err := ns.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Usec: 100000}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	seen := make(chan time.Time, 1)
	stop := make(chan struct{})
	go func() {
		buf := make([]byte, 2048)
		want := dst.As4()
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || n < 34 {
				continue
			}
			ll, ok := from.(*unix.SockaddrLinklayer)
			if !ok || ll.Pkttype != unix.PACKET_OUTGOING {
				continue
			}
			// An IPv4 header after the 14-byte Ethernet header.
			if binary.BigEndian.Uint16(buf[12:14]) == unix.ETH_P_IP && [4]byte(buf[14+16:14+20]) == want {
				seen <- time.Now()
				return
			}
		}
	}()
	defer close(stop)
	start := time.Now()
	if err := call(); err != nil {
		return 0, err
	}
	select {
	case t := <-seen:
		return t.Sub(start), nil
	case <-time.After(2 * time.Second):
		return 0, errors.New("no probe packet seen in the pod's namespace")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func htons(v uint16) uint16 { return binary.BigEndian.Uint16([]byte{byte(v), byte(v >> 8)}) }

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
