package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/tools"
)

// Check is a connectivity test done by plain means from inside a lab
// namespace: iputils ping, dig through `ip netns exec` (which applies the pod's
// /etc/netns resolv.conf), and TCP or HTTP from a socket opened in the
// namespace. Checks prove the lab and its faults independently of netdiag's own
// collectors.
type Check struct {
	Name string
	From string // "pod NS/NAME" or "node NAME"
	What string
	// Family is the address family of the check's packets: "ipv4" or
	// "ipv6". A DNS lookup of an AAAA record over IPv4 is an "ipv4" check.
	Family string
	// Attempts > 1 makes a check able to report partial loss (distinct flows).
	Attempts int
	run      func(ctx context.Context, c *checkEnv) error
}

// CheckResult is the outcome of one check.
type CheckResult struct {
	Name   string `json:"name"`
	Family string `json:"family"` // "ipv4" or "ipv6"
	Status string `json:"status"` // "pass", "fail" or "partial"
	Detail string `json:"detail,omitempty"`
}

type checkEnv struct {
	lab *Lab
	ns  *netns.NS
	src string // namespace name
}

// Checks returns the lab's checks.
func Checks() []Check {
	l, _ := New(DefaultInstance) // addresses do not depend on the instance
	web, client := l.mustPod("default/web"), l.mustPod("default/client")
	webIP, clientIP := web.IP, client.IP
	web6, client6 := web.IP6, client.IP6
	ext, _ := l.Host("ext")
	v4 := []Check{
		{Name: ckWebPod, From: "pod default/client", What: "HTTP GET default/web's pod IP across the nodes", Attempts: 1,
			run: httpGet("http://" + webIP + ":8080/")},
		{Name: ckWebPing, From: "pod default/client", What: "ping default/web's pod IP", Attempts: 1,
			run: ping(webIP, false)},
		{Name: ckWebLarge, From: "pod default/client", What: "ping default/web with DF set at the full size of the pod's MTU", Attempts: 1,
			run: ping(webIP, true)},
		{Name: ckWebPost, From: "pod default/client", What: "HTTP POST of 256 KiB to default/web", Attempts: 1,
			run: httpPost("http://"+webIP+":8080/", 256<<10)},
		{Name: ckWebSvc, From: "pod default/client", What: "HTTP GET the ClusterIP of Service default/web", Attempts: 1,
			run: httpGet("http://" + webClusterIP + ":80/")},
		{Name: ckAPISvc, From: "pod default/client", What: "TCP connect to the ClusterIP of Service default/kubernetes:443", Attempts: 1,
			run: tcpConnect(hostPort(apiClusterIP, 443))},
		{Name: ckDNSCluster, From: "pod default/client", What: "resolve web.default.svc.cluster.local with the pod's resolv.conf", Attempts: 1,
			run: dig("web.default.svc.cluster.local", webClusterIP)},
		{Name: ckDNSOutside, From: "pod default/client", What: "resolve example.com with the pod's resolv.conf", Attempts: 1,
			run: dig("example.com", extIP)},
		{Name: ckClientExt, From: "pod default/client", What: "HTTP GET the outside host", Attempts: 1,
			run: httpGet("http://" + extIP + ":80/")},
		{Name: ckWebClient, From: "pod default/web", What: "ping default/client's pod IP", Attempts: 1,
			run: ping(clientIP, false)},
		{Name: ckWebExt, From: "pod default/web", What: "16 TCP connects to the outside host", Attempts: 16,
			run: tcpConnect(hostPort(extIP, 80))},
		{Name: ckNodeAExt, From: "node node-a", What: "16 TCP connects from node-a to the outside host", Attempts: 16,
			run: tcpConnect(hostPort(extIP, 80))},
		{Name: ckNodeBWeb, From: "node node-b", What: "TCP connect from node-b to default/web:8080", Attempts: 1,
			run: tcpConnect(hostPort(webIP, 8080))},
		{Name: ckNodeBPingA, From: "node node-b", What: "ping node-a's InternalIP from node-b", Attempts: 1,
			run: ping(nodeAIP, false)},
		// The question is about IPv6, the packets are IPv4: the DNS
		// Service has no IPv6 ClusterIP.
		{Name: ckDNSAAAA, From: "pod default/client", What: "resolve example.com's AAAA record with the pod's resolv.conf", Attempts: 1,
			run: digType("AAAA", "example.com", ext.IP6)},
	}
	// The IPv6 twins of the paths above that have an IPv6 address at both
	// ends (no Service has one). The pod MTU must also fit IPv6's 40-byte
	// header over the same VXLAN.
	v6 := []Check{
		{Name: ckWebPod6, From: "pod default/client", What: "HTTP GET default/web's IPv6 pod IP across the nodes", Attempts: 1,
			run: httpGet("http://" + net.JoinHostPort(web6, "8080") + "/")},
		{Name: ckWebPing6, From: "pod default/client", What: "ping -6 default/web's IPv6 pod IP", Attempts: 1,
			run: ping(web6, false)},
		{Name: ckWebLarge6, From: "pod default/client", What: "ping -6 default/web with DF set at the full size of the pod's MTU", Attempts: 1,
			run: ping(web6, true)},
		{Name: ckWebPost6, From: "pod default/client", What: "HTTP POST of 256 KiB to default/web over IPv6", Attempts: 1,
			run: httpPost("http://"+net.JoinHostPort(web6, "8080")+"/", 256<<10)},
		{Name: ckClientExt6, From: "pod default/client", What: "HTTP GET the outside host over IPv6 (masqueraded by node-b)", Attempts: 1,
			run: httpGet("http://" + net.JoinHostPort(ext.IP6, "80") + "/")},
		{Name: ckWebClient6, From: "pod default/web", What: "ping -6 default/client's IPv6 pod IP", Attempts: 1,
			run: ping(client6, false)},
		{Name: ckNodeBWeb6, From: "node node-b", What: "TCP connect from node-b to default/web's IPv6 pod IP, port 8080", Attempts: 1,
			run: tcpConnect(net.JoinHostPort(web6, "8080"))},
	}
	for i := range v4 {
		v4[i].Family = familyV4
	}
	for i := range v6 {
		v6[i].Family = familyV6
	}
	return append(v4, v6...)
}

// RunChecks runs every check of the lab in parallel.
func RunChecks(ctx context.Context, l *Lab) ([]CheckResult, error) {
	checks := Checks()
	results := make([]CheckResult, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		nsName, err := l.resolveFrom(c.From)
		if err != nil {
			return nil, err
		}
		ns, err := netns.Open(nsName)
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ns.Close()
			env := &checkEnv{lab: l, ns: ns, src: nsName}
			ok, firstErr := 0, ""
			for a := 0; a < c.Attempts; a++ {
				actx, cancel := context.WithTimeout(ctx, 4*time.Second)
				err := c.run(actx, env)
				cancel()
				if err == nil {
					ok++
				} else if firstErr == "" {
					firstErr = err.Error()
				}
			}
			r := CheckResult{Name: c.Name, Family: c.Family}
			switch {
			case ok == c.Attempts:
				r.Status = "pass"
			case ok == 0:
				r.Status, r.Detail = "fail", firstErr
			default:
				r.Status = "partial"
				r.Detail = fmt.Sprintf("%d of %d attempts failed: %s", c.Attempts-ok, c.Attempts, firstErr)
			}
			results[i] = r
		}()
	}
	wg.Wait()
	return results, nil
}

func (l *Lab) resolveFrom(from string) (string, error) {
	kind, name, _ := strings.Cut(from, " ")
	switch kind {
	case "pod":
		p, err := l.Pod(name)
		if err != nil {
			return "", err
		}
		return p.Netns, nil
	case "node":
		n, err := l.Node(name)
		if err != nil {
			return "", err
		}
		return n.Netns, nil
	case "host":
		h, err := l.Host(name)
		if err != nil {
			return "", err
		}
		return h.Netns, nil
	}
	return "", fmt.Errorf("bad check source %q", from)
}

func tcpConnect(addr string) func(context.Context, *checkEnv) error {
	return func(ctx context.Context, c *checkEnv) error {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		conn, err := c.ns.Dial(dctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
}

func (c *checkEnv) httpClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return c.ns.Dial(ctx, network, addr)
		},
	}}
}

func httpGet(url string) func(context.Context, *checkEnv) error {
	return func(ctx context.Context, c *checkEnv) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.httpClient(time.Second).Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(" ok")) {
			return fmt.Errorf("GET %s: %s %q", url, resp.Status, body)
		}
		return nil
	}
}

func httpPost(url string, size int) func(context.Context, *checkEnv) error {
	return func(ctx context.Context, c *checkEnv) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(make([]byte, size)))
		resp, err := c.httpClient(3 * time.Second).Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if want := fmt.Sprintf("received %d bytes", size); !bytes.Contains(body, []byte(want)) {
			return fmt.Errorf("POST %s: %s %q", url, resp.Status, body)
		}
		return nil
	}
}

// ping runs iputils ping inside the namespace, with -4 or -6 after the
// address. With full it sends one DF packet as large as the source
// interface's MTU allows: the MTU less the IP header (20 or 40 bytes) and the
// ICMP header (8).
func ping(ip string, full bool) func(context.Context, *checkEnv) error {
	return func(ctx context.Context, c *checkEnv) error {
		bin, err := tools.Find("ping")
		if err != nil {
			return err
		}
		family, headers := "-4", 28
		if strings.Contains(ip, ":") {
			family, headers = "-6", 48
		}
		// Two echo requests, one reply enough: a single one lost while a
		// loaded machine runs every check at once is not a broken path,
		// and a fault that breaks the path loses both.
		args := []string{family, "-n", "-c", "2", "-i", "0.2", "-W", "1"}
		if full {
			mtu, err := c.ifaceMTU("eth0")
			if err != nil {
				return err
			}
			args = append(args, "-M", "do", "-s", strconv.Itoa(mtu-headers))
		}
		out, err := c.ns.Output(ctx, bin, append(args, ip)...)
		if err != nil {
			return fmt.Errorf("ping %s: %v %s", ip, err, lastLine(string(out)))
		}
		return nil
	}
}

func (c *checkEnv) ifaceMTU(name string) (int, error) {
	h, err := c.ns.Handle()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return 0, err
	}
	return l.Attrs().MTU, nil
}

// dig resolves a name the way the pod would: `ip netns exec` bind-mounts the
// pod's /etc/netns/NAME/resolv.conf over /etc/resolv.conf for dig.
func dig(name, want string) func(context.Context, *checkEnv) error {
	return digType("A", name, want)
}

// digType is dig for a record type (A, AAAA).
func digType(rrType, name, want string) func(context.Context, *checkEnv) error {
	return func(ctx context.Context, c *checkEnv) error {
		ip, err := tools.Find("ip")
		if err != nil {
			return err
		}
		digBin, err := tools.Find("dig")
		if err != nil {
			return err
		}
		// Three tries of a second each: one UDP query lost to a busy
		// machine (or to a source port the port-exhaustion fault made
		// scarce) is not the fault a check is looking for, and a fault
		// that breaks DNS breaks every try.
		cmd := exec.CommandContext(ctx, ip, "netns", "exec", c.src, digBin, "+search", "+time=1", "+tries=3", "+short", "-t", rrType, name)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("dig %s: %v: %s", name, err, lastLine(string(out)))
		}
		for _, line := range strings.Fields(string(out)) {
			if line == want {
				return nil
			}
		}
		return fmt.Errorf("dig %s %s: got %q, want %s", rrType, name, strings.TrimSpace(string(out)), want)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
