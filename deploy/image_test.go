package deploy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/agent"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/diagnose/labview"
	"github.com/netdiag/netdiag/internal/elfinfo"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/containerd"
	"github.com/netdiag/netdiag/lab/labtest"
)

// The lab starts its servers by running the test binary again in a role
// (lab.MaybeRunHelper). This package has no TestMain of its own, so the
// role is taken here, before any test runs; a TestMain that calls
// labtest.Main does the same again harmlessly.
func init() { lab.MaybeRunHelper() }

// imageAgentCaps are the capabilities the agent's DaemonSet adds after
// dropping all (the Dockerfile and IMAGE.md say why each; chart_test.go
// holds the list to the chart's values): the test runs the agent with
// exactly these. NETDIAG_IMAGE_AGENT_CAPS (comma-separated) replaces them,
// to see what one fewer breaks.
var imageAgentCaps = chartAgentCapabilities

var imageCapBits = map[string]uint{
	"NET_ADMIN": unix.CAP_NET_ADMIN, "NET_RAW": unix.CAP_NET_RAW, "SYS_ADMIN": unix.CAP_SYS_ADMIN,
	"SYS_PTRACE": unix.CAP_SYS_PTRACE, "BPF": unix.CAP_BPF, "PERFMON": unix.CAP_PERFMON, "SYS_RESOURCE": unix.CAP_SYS_RESOURCE,
	"NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "SYSLOG": unix.CAP_SYSLOG,
}

// Where the image is imported on the lab's runtimes, and the agents' port.
const (
	imageRef       = "netdiag.lab/netdiag:image-test"
	imageAgentPort = 9443
	imageToken     = "image-test-token"
)

// TestImage builds the image as a user without a registry builds it
// (scripts/build-image, the OCI archive it exports), checks what it holds,
// and runs it on the lab the way the chart runs it: the agent as a
// host-network, host-PID pod of a real containerd on each lab node, root
// but with only the capabilities the Dockerfile lists, the node's paths
// mounted, a token file for authentication. Diagnoses through those agents
// must give the lab's verdicts: a fault injected on the lab, and a real CRI
// pod the agent finds through the runtime's socket. The programs the
// collectors run are run in the agent's container, and the bot's user is
// checked in a pod of its own.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the image")
	}
	labtest.RequireRoot(t)
	for _, p := range []string{"buildah", "debootstrap"} {
		if _, err := imageLookPath(p); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed and CI is set: scripts/install-deps installs it", p)
			}
			t.Skipf("%s is not installed (scripts/install-deps installs it)", p)
		}
	}
	caps := imageAgentCaps
	if v := os.Getenv("NETDIAG_IMAGE_AGENT_CAPS"); v != "" {
		caps = strings.Split(v, ",")
		t.Logf("agent capabilities from NETDIAG_IMAGE_AGENT_CAPS: %v", caps)
	}
	caps = imageGrantable(t, caps)
	ctx, cancel := context.WithTimeout(context.Background(), 13*time.Minute)
	defer cancel()

	archive := filepath.Join(t.TempDir(), "netdiag.tar")
	imageBuild(t, ctx, archive)
	t.Run("the archive", func(t *testing.T) { imageCheckArchive(t, archive) })

	t0 := time.Now()
	l := labtest.Up(t, "img")
	st, err := lab.GetStatus(l.Instance)
	if err != nil {
		t.Fatal(err)
	}
	client, err := st.Pod("default/client")
	if err != nil {
		t.Fatal(err)
	}
	web, err := st.Pod("default/web")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lab %s up in %v", l.Instance, time.Since(t0).Round(time.Millisecond))

	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(imageToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agents := map[string]*imageAgent{}
	for i := range st.Nodes {
		n := &st.Nodes[i]
		t0 := time.Now()
		rt := containerd.StartForTest(t, n.NetnsPath, containerd.Options{})
		started := time.Since(t0)
		t0 = time.Now()
		if err := rt.ImportArchive(ctx, archive, imageRef); err != nil {
			t.Fatal(err)
		}
		imported := time.Since(t0)
		t0 = time.Now()
		a := imageRunAgent(t, ctx, rt, n, st.Prefix, tokenFile, caps)
		agents[n.Name] = a
		t.Logf("%s: containerd started in %v, archive imported in %v, agent pod %v serving after %v", n.Name,
			started.Round(time.Millisecond), imported.Round(time.Millisecond), a.pod, time.Since(t0).Round(time.Millisecond))
	}

	t.Run("the agent runs as root with exactly its capabilities, under seccomp", func(t *testing.T) {
		var want uint64
		for _, c := range caps {
			want |= 1 << imageCapBits[c]
		}
		for name, a := range agents {
			status, err := os.ReadFile("/proc/" + strconv.Itoa(a.pod.ContainerPID) + "/status")
			if err != nil {
				t.Fatal(err)
			}
			for key, w := range map[string]string{"Uid": "0\t0\t0\t0", "CapEff": fmt.Sprintf("%016x", want), "CapBnd": fmt.Sprintf("%016x", want),
				"Seccomp": "2"} { // the runtime's default profile, as the chart asks
				if got := imageStatusField(string(status), key); got != w {
					t.Errorf("%s: agent process %d: %s %q, want %q", name, a.pod.ContainerPID, key, got, w)
				}
			}
		}
	})

	runner := &agent.Runner{Local: &diagnose.LocalSite{}, Site: func(node string) (diagnose.Site, error) {
		a, ok := agents[node]
		if !ok {
			return nil, agent.ErrUnreachableNode(node)
		}
		return &agent.Client{Node: node, URL: a.url, HTTP: a.http, Token: func() (string, error) { return imageToken, nil }}, nil
	}}
	eng := &diagnose.Engine{Runner: runner}

	t.Run("a fault injected on the lab", func(t *testing.T) {
		// An nftables rule on the destination's node drops new
		// connections to default/web: the agents find both lab pods by
		// their IPs in the lab's /run/netns (--scan-netns-prefix) and
		// read the node's rules (nft, iptables-save), the drops program
		// sees the kernel drop, a capture runs at the source.
		const fault = "firewall-node"
		f, err := lab.FaultByName(fault)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lab.InjectFault(ctx, l.Instance, fault, nil); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if _, err := lab.Clear(ctx, l.Instance, nil); err != nil {
				t.Error(err)
			}
		}()
		req, err := labview.Request(st, "pod", client.Key(), "pod/"+web.Key()+":8080", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Capture, req.Pcap = 2*time.Second, filepath.Join(t.TempDir(), "fault.pcap")
		fd := imageDiagnose(t, ctx, eng, req, agents)
		if want := (diagnose.Verdict{Class: f.Class, Cause: f.Cause}); fd.Verdict() != want {
			t.Errorf("%s: verdict %s (%s), want %s", fault, fd.Verdict(), fd.Summary, want)
		}
		if fd.Pcap == nil {
			t.Error("no pcap: the capture did not run")
		}
		drops := 0
		for _, ev := range fd.Raw {
			if ev.Collector == "drops" {
				drops++
				m, reasons := imageDrops(ev)
				if m != "ebpf" {
					t.Errorf("drops (%s): method %q, want ebpf: the drops program did not load in the agent's container", ev.Scope, m)
				}
				t.Logf("drops (%s): method %s, drops by reason %v", ev.Scope, m, reasons)
			}
		}
		if drops == 0 {
			t.Error("no evidence from the drops collector")
		}
	})

	t.Run("a CRI pod found through the runtime", func(t *testing.T) {
		// A real pod on web's node, made by that node's containerd: the
		// agent asks the runtime (the mounted CRI socket) for its
		// sandbox and enters it by the sandbox's PID (hostPID, its
		// /proc/PID/ns/net), as on a cluster node.
		a := agents[web.Node]
		server := filepath.Join(t.TempDir(), "server")
		if err := containerd.BuildStatic(ctx, ".", containerd.ServerPackage, server); err != nil {
			t.Fatal(err)
		}
		if err := a.rt.ImportImage(ctx, containerd.Image{Ref: containerd.ServerRef, Binary: server, Cmd: []string{"-listen", ":8080"}}); err != nil {
			t.Fatal(err)
		}
		pod, err := a.rt.RunPod(ctx, containerd.PodSpec{Namespace: "default", Name: "cri-web", Image: containerd.ServerRef, Port: 8080})
		if err != nil {
			t.Fatal(err)
		}
		defer a.rt.RemovePod(context.WithoutCancel(ctx), pod)
		req, err := labview.Request(st, "pod", client.Key(), "pod/"+web.Key()+":8080", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.To, req.AltTo = &collectors.Dest{Addr: pod.IP, Port: 8080}, nil
		req.Peer = diagnose.Place{Node: web.Node, Pod: &diagnose.Pod{Namespace: "default", Name: "cri-web", UID: pod.Spec.UID, IP: pod.IP}}
		req.Cluster.PeerName = "pod default/cri-web"
		req.Question = "pod " + client.Key() + " to pod/default/cri-web:8080"
		fd := imageDiagnose(t, ctx, eng, req, agents)
		if fd.Verdict() != diagnose.Healthy {
			t.Errorf("verdict %s (%s), want %s", fd.Verdict(), fd.Summary, diagnose.Healthy)
		}
		want := "/proc/" + strconv.Itoa(pod.PID) + "/ns/net"
		seen := false
		for _, ev := range fd.Raw {
			if ev.Scope == collectors.ScopePeer {
				seen = true
				if ev.Netns != want {
					t.Errorf("peer evidence %s read in %s, want the sandbox's %s (found through CRI, entered by PID)", ev.Collector, ev.Netns, want)
				}
			}
		}
		if !seen {
			t.Error("no evidence from the CRI pod's namespace")
		}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			log := imageReadLog(a.pod)
			if regexp.MustCompile(`pod=default/cri-web .*via=cri`).MatchString(log) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("the agent's log does not say it found the pod through CRI:\n%s", log)
				break
			}
		}
	})

	t.Run("the collectors' programs run in the agent's container", func(t *testing.T) {
		a := agents[client.Node]
		type outcome struct {
			exit int32
			want string
		}
		ok := func(want string) []outcome { return []outcome{{0, want}} }
		for _, tc := range []struct {
			argv []string
			any  []outcome // one of these
		}{
			{[]string{"iptables-save", "--version"}, ok("(nf_tables)")},
			{[]string{"ip6tables-save", "--version"}, ok("(nf_tables)")},
			{[]string{"iptables-legacy-save", "--version"}, ok("(legacy)")},
			{[]string{"ip6tables-legacy-save", "--version"}, ok("(legacy)")},
			{[]string{"nft", "--version"}, ok("nftables v")},
			{[]string{"tcpdump", "--version"}, ok("tcpdump version")},
			// Not run by netdiag; there for checking a finding by hand.
			{[]string{"ip", "-V"}, ok("iproute2")},
			{[]string{"conntrack", "--version"}, ok("conntrack")},
			// With the agent's capabilities, on the node: the dumps the
			// collectors take, iptables in both flavours. ipvsadm asks
			// the kernel before anything else, and a kernel without
			// IPVS (this one) answers what the ipvs collector reports as
			// not applicable; a missing permission would say "you must
			// be root".
			{[]string{"iptables-save", "-c"}, ok("*filter")},
			{[]string{"ip6tables-save", "-c"}, ok("*filter")},
			{[]string{"iptables-legacy-save", "-c"}, ok("")},
			{[]string{"nft", "list", "tables"}, ok("table ")},
			{[]string{"ipvsadm", "-Ln"}, []outcome{{0, "IP Virtual Server version"}, {2, "Protocol not available"}}},
		} {
			res, err := a.rt.Exec(ctx, a.pod, 20*time.Second, tc.argv...)
			if err != nil {
				t.Fatal(err)
			}
			out := string(res.Stdout) + string(res.Stderr)
			if !slices.ContainsFunc(tc.any, func(o outcome) bool { return res.ExitCode == o.exit && strings.Contains(out, o.want) }) {
				t.Errorf("%s: exit %d, output %q; want one of %+v", strings.Join(tc.argv, " "), res.ExitCode, imageFirstLine(out), tc.any)
				continue
			}
			t.Logf("%s: exit %d: %s", strings.Join(tc.argv, " "), res.ExitCode, imageFirstLine(out))
		}
	})

	t.Run("the bot runs as netdiag, not root", func(t *testing.T) {
		a := agents[client.Node]
		pod, err := a.rt.RunPod(ctx, containerd.PodSpec{Namespace: "netdiag", Name: "bot", Container: "bot", Image: imageRef,
			Command: []string{"sleep", "300"}})
		if err != nil {
			t.Fatal(err)
		}
		defer a.rt.RemovePod(context.WithoutCancel(ctx), pod)
		for _, tc := range []struct {
			argv []string
			exit int32
			want string
		}{
			{[]string{"id", "-u"}, 0, "65532"},
			{[]string{"id", "-un"}, 0, "netdiag"},
			{[]string{"/usr/local/bin/netdiag", "version"}, 0, "netdiag "},
			{[]string{"test", "-w", "/var/lib/netdiag"}, 0, ""}, // its store's directory
			{[]string{"test", "-w", "/etc"}, 1, ""},
			{[]string{"pwd"}, 0, "/var/lib/netdiag"},
		} {
			res, err := a.rt.Exec(ctx, pod, 10*time.Second, tc.argv...)
			if err != nil {
				t.Fatal(err)
			}
			out := string(res.Stdout) + string(res.Stderr)
			if res.ExitCode != tc.exit || !strings.Contains(out, tc.want) {
				t.Errorf("bot pod: %s: exit %d, output %q; want exit %d and %q", strings.Join(tc.argv, " "), res.ExitCode, out, tc.exit, tc.want)
			}
		}
		status, err := os.ReadFile("/proc/" + strconv.Itoa(pod.ContainerPID) + "/status")
		if err != nil {
			t.Fatal(err)
		}
		if got := imageStatusField(string(status), "CapEff"); got != "0000000000000000" {
			t.Errorf("bot process: CapEff %s, want none", got)
		}
	})
}

// imageGrantable leaves out the capabilities this machine's own bounding
// set lacks, and says so: no runtime can give a container a capability
// its node does not have (runc fails with "unable to apply caps"), and a
// sandboxed test machine may lack one that real nodes have.
func imageGrantable(t *testing.T, caps []string) []string {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	bnd, err := strconv.ParseUint(imageStatusField(string(status), "CapBnd"), 16, 64)
	if err != nil {
		t.Fatalf("CapBnd of this process: %v", err)
	}
	var out []string
	for _, c := range caps {
		bit, ok := imageCapBits[c]
		if !ok {
			t.Fatalf("capability %s: the test does not know its number", c)
		}
		if bnd&(1<<bit) == 0 {
			t.Logf("note: this machine's bounding set (%x) lacks CAP_%s: the agent runs without it here", bnd, c)
			continue
		}
		out = append(out, c)
	}
	return out
}

// imageAgent is an agent pod on a lab node and how the test reaches it.
type imageAgent struct {
	rt   *containerd.Runtime
	pod  *containerd.Pod
	url  string
	http *http.Client
}

// imageRunAgent runs the image's agent on a lab node's runtime as the
// DaemonSet runs it on a cluster node, waits until it serves, and pins its
// self-signed certificate by the fingerprint it logs.
func imageRunAgent(t *testing.T, ctx context.Context, rt *containerd.Runtime, n *lab.Node, prefix, tokenFile string, caps []string) *imageAgent {
	t.Helper()
	root := int64(0)
	listen := net.JoinHostPort(n.InternalIP, strconv.Itoa(imageAgentPort))
	// As the chart's DaemonSet mounts them (deploy/helm/netdiag), but the
	// runtime's socket itself where the chart mounts its directory.
	mounts := []containerd.Mount{
		{HostPath: tokenFile, ContainerPath: "/etc/netdiag/token", ReadOnly: true},
		{HostPath: rt.Socket, ContainerPath: "/run/containerd/containerd.sock", ReadOnly: true},
		{HostPath: "/run/netns", ContainerPath: "/run/netns", ReadOnly: true, Propagation: "HostToContainer"},
		{HostPath: "/sys/fs/cgroup", ContainerPath: "/host/sys/fs/cgroup", ReadOnly: true},
		// The root filesystem is read-only: the agent's temporary files
		// (a pod's resolv.conf from its runtime) go here, an emptyDir.
		{HostPath: t.TempDir(), ContainerPath: "/tmp"},
		// The lab's: its pods' resolv.conf, where `ip netns exec` finds
		// it. A cluster's pods' come through the runtime and /proc.
		{HostPath: "/etc/netns", ContainerPath: "/etc/netns", ReadOnly: true},
	}
	pod, err := rt.RunPod(ctx, containerd.PodSpec{
		Namespace: "kube-system", Name: "netdiag-agent-" + n.Name, Container: "agent", Image: imageRef,
		Command: []string{"/usr/local/bin/netdiag-agent"},
		Args: []string{"--node", n.Name, "--listen", listen, "--token-file", "/etc/netdiag/token",
			"--cgroup-root", "/host/sys/fs/cgroup", "--scan-netns-prefix", prefix},
		Env:         map[string]string{"NETDIAG_LOG_LEVEL": "debug"},
		Port:        imageAgentPort,
		HostNetwork: true, HostPID: true, RunAsUser: &root,
		CapDrop: []string{"ALL"}, CapAdd: caps,
		ReadOnlyRootfs: true, Seccomp: "RuntimeDefault",
		Mounts: mounts,
	})
	if err != nil {
		t.Fatal(err)
	}
	a := &imageAgent{rt: rt, pod: pod, url: "https://" + listen}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent on %s, its log:\n%s", n.Name, imageReadLog(pod))
		}
	})
	// The runtime copies the container's output to its log a moment
	// after the container writes it.
	var fp []string
	for deadline := time.Now().Add(5 * time.Second); fp == nil; time.Sleep(50 * time.Millisecond) {
		fp = regexp.MustCompile(`tls_sha256=([0-9a-f]{64})`).FindStringSubmatch(imageReadLog(pod))
		if fp == nil && time.Now().After(deadline) {
			t.Fatalf("agent on %s logs no certificate fingerprint:\n%s", n.Name, imageReadLog(pod))
		}
	}
	ns := labtest.OpenNS(t, n.NetnsPath)
	a.http = &http.Client{Transport: &http.Transport{
		// The agents listen on the node network: reached from a node.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return ns.Dial(ctx, network, addr) },
		TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, // self-signed: checked by its fingerprint below
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) == 0 {
					return errors.New("no certificate")
				}
				sum := sha256.Sum256(raw[0])
				if hex.EncodeToString(sum[:]) != fp[1] {
					return fmt.Errorf("agent certificate %x is not the one it logged (%s)", sum, fp[1])
				}
				return nil
			},
		},
	}}
	t.Cleanup(a.http.CloseIdleConnections)
	if err := imageWaitHealthy(ctx, a); err != nil {
		t.Fatalf("agent on %s: %v\n%s", n.Name, err, imageReadLog(pod))
	}
	return a
}

func imageWaitHealthy(ctx context.Context, a *imageAgent) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.url+agent.PathHealth, nil)
		resp, err := a.http.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("health: %s", resp.Status)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not healthy after 30 s: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// imageDiagnose diagnoses through the agents and fails the test for any
// collector that an agent could not run for want of a program or a
// permission: what the image and the capabilities must provide.
func imageDiagnose(t *testing.T, ctx context.Context, eng *diagnose.Engine, req *diagnose.Request, agents map[string]*imageAgent) *diagnose.Finding {
	t.Helper()
	t0 := time.Now()
	fd, err := eng.Diagnose(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s (%.2f) in %v: %s", req.Question, fd.Verdict(), fd.Confidence, time.Since(t0).Round(time.Millisecond), fd.Summary)
	for _, ev := range fd.Raw {
		state := ev.State()
		if state == collectors.StatusOK || state == collectors.StatusNotApplicable {
			continue
		}
		t.Logf("  %s (%s%s): %s %s: %s", ev.Collector, ev.Scope, imageLabel(ev.Label), state, ev.ErrorKind, ev.Error)
		switch ev.ErrorKind {
		case collectors.KindPermission, collectors.KindMissingTool, collectors.KindNotFound, collectors.KindUnreachable, collectors.KindDenied:
			t.Errorf("%s (%s): %s: %s", ev.Collector, ev.Scope, ev.ErrorKind, ev.Error)
		default:
			// A program that failed for want of a capability exits
			// with a message, not an errno the collector can classify.
			if imageDenied.MatchString(ev.Error) {
				t.Errorf("%s (%s): %s", ev.Collector, ev.Scope, ev.Error)
			}
		}
	}
	return fd
}

var imageDenied = regexp.MustCompile(`(?i)permission denied|operation not permitted|you must be root`)

func imageLabel(l string) string {
	if l == "" {
		return ""
	}
	return ", " + l
}

// imageDrops is how the drops collector read the kernel's drops, and what
// it saw.
func imageDrops(ev collectors.Evidence) (method string, byReason map[string]int) {
	b, err := json.Marshal(ev.Data)
	if err != nil {
		return "", nil
	}
	var d struct {
		Method   string         `json:"method"`
		ByReason map[string]int `json:"by_reason"`
	}
	json.Unmarshal(b, &d)
	return d.Method, d.ByReason
}

// imageBuild runs scripts/build-image as a user would, exporting the image
// to archive.
func imageBuild(t *testing.T, ctx context.Context, archive string) {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "scripts", "build-image"))
	if err != nil {
		t.Fatal(err)
	}
	before := imageWorkingContainers()
	t.Cleanup(func() { imageRemoveWorkingContainers(t, before) })
	bctx, cancel := context.WithTimeout(ctx, 12*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, script, "--oci-archive", archive)
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err = cmd.Run()
	var steps []string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "build-image: ") || strings.HasPrefix(line, "base-images: ") {
			steps = append(steps, line)
		}
	}
	if err != nil {
		t.Fatalf("scripts/build-image: %v after %v\n%s", err, time.Since(t0).Round(time.Second), imageTail(out.String(), 60))
	}
	t.Logf("scripts/build-image took %v:\n%s", time.Since(t0).Round(time.Millisecond), strings.Join(steps, "\n"))
}

// imageWorkingContainers lists buildah's working containers by ID.
func imageWorkingContainers() map[string]string {
	out, err := exec.Command("buildah", "containers", "--noheading", "--notruncate", "--format", "{{.ContainerID}} {{.ImageName}}").Output()
	if err != nil {
		return nil
	}
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if id, image, ok := strings.Cut(line, " "); ok {
			m[id] = image
		}
	}
	return m
}

// imageRemoveWorkingContainers removes the working containers a build
// left (one killed midway leaves its step's): those made since before
// from the Dockerfile's base images. Others' containers are left alone.
func imageRemoveWorkingContainers(t *testing.T, before map[string]string) {
	for id, image := range imageWorkingContainers() {
		if _, old := before[id]; old {
			continue
		}
		if strings.Contains(image, "library/golang:") || strings.Contains(image, "library/debian:") || image == "" {
			t.Logf("removing the working container %s (%s) a build left", id, image)
			if out, err := exec.Command("buildah", "rm", id).CombinedOutput(); err != nil {
				t.Errorf("buildah rm %s: %v: %s", id, err, out)
			}
		}
	}
}

// imageCheckArchive reads the OCI archive as a runtime would: the image's
// configuration (its user, entrypoint, command) and the two binaries from
// its layers, which must be static.
func imageCheckArchive(t *testing.T, archive string) {
	blobs, err := imageReadBlobs(archive)
	if err != nil {
		t.Fatal(err)
	}
	var index struct {
		Manifests []struct {
			MediaType   string            `json:"mediaType"`
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if len(index.Manifests) != 1 {
		t.Fatalf("index.json lists %d manifests, want 1", len(index.Manifests))
	}
	t.Logf("archive: manifest %s named %q", index.Manifests[0].Digest, index.Manifests[0].Annotations["org.opencontainers.image.ref.name"])
	var manifest struct {
		Config struct {
			Digest string `json:"digest"`
		} `json:"config"`
		Layers []struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
			Size      int64  `json:"size"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(blobs[index.Manifests[0].Digest], &manifest); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	var config struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
		Config       struct {
			User       string            `json:"User"`
			Entrypoint []string          `json:"Entrypoint"`
			Cmd        []string          `json:"Cmd"`
			WorkingDir string            `json:"WorkingDir"`
			Labels     map[string]string `json:"Labels"`
		} `json:"config"`
	}
	if err := json.Unmarshal(blobs[manifest.Config.Digest], &config); err != nil {
		t.Fatalf("config: %v", err)
	}
	c := config.Config
	t.Logf("config: %s/%s, user %q, entrypoint %q, cmd %q, %d layers", config.OS, config.Architecture, c.User, c.Entrypoint, c.Cmd, len(manifest.Layers))
	if c.User != "65532:65532" && c.User != "65532" {
		t.Errorf("the image's USER is %q, want 65532 (netdiag): the bot runs non-root", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/netdiag"}) || len(c.Cmd) == 0 || c.Cmd[0] != "serve" {
		t.Errorf("entrypoint %q, cmd %q: want netdiag serve", c.Entrypoint, c.Cmd)
	}

	// The binaries, from the layers in order (a later layer's copy wins).
	want := map[string]string{"usr/local/bin/netdiag": "", "usr/local/bin/netdiag-agent": ""}
	dir := t.TempDir()
	for _, l := range manifest.Layers {
		data, ok := blobs[l.Digest]
		if !ok {
			t.Fatalf("layer %s is not in the archive", l.Digest)
		}
		if err := imageExtract(data, l.MediaType, want, dir); err != nil {
			t.Fatalf("layer %s: %v", l.Digest, err)
		}
	}
	for name, file := range want {
		if file == "" {
			t.Errorf("/%s is not in the image", name)
			continue
		}
		if err := elfinfo.Static(file); err != nil {
			t.Errorf("/%s: %v", name, err)
		}
		st, _ := os.Stat(file)
		t.Logf("/%s: static, %.1f MB", name, float64(st.Size())/1e6)
	}
}

// imageReadBlobs reads an OCI archive's index.json and its small blobs
// whole, and its layers too: the archive is a tar of the layout.
func imageReadBlobs(archive string) (map[string][]byte, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := path.Clean(h.Name)
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		switch {
		case name == "index.json":
			out[name] = b
		case strings.HasPrefix(name, "blobs/sha256/"):
			out["sha256:"+path.Base(name)] = b
		}
	}
}

// imageExtract writes the files of a layer that are in want to dir and
// records their paths there.
func imageExtract(layer []byte, mediaType string, want map[string]string, dir string) error {
	var r io.Reader = bytes.NewReader(layer)
	if strings.HasSuffix(mediaType, "+gzip") || strings.HasSuffix(mediaType, ".gzip") {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if _, ok := want[name]; !ok || h.Typeflag != tar.TypeReg {
			continue
		}
		file := filepath.Join(dir, strings.ReplaceAll(name, "/", "_"))
		b, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		if err := os.WriteFile(file, b, 0o755); err != nil {
			return err
		}
		want[name] = file
	}
}

// imageReadLog is a container's CRI log as plain text: each line's
// message without the time stamp, stream and tag.
func imageReadLog(pod *containerd.Pod) string {
	b, err := os.ReadFile(pod.LogPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	var out []string
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		f := strings.SplitN(line, " ", 4)
		if len(f) == 4 {
			line = f[3]
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

func imageStatusField(status, key string) string {
	for _, line := range strings.Split(status, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func imageFirstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func imageTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// imageLookPath finds a program in PATH or the sbin directories, where
// Debian puts debootstrap.
func imageLookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if st, err := os.Stat(filepath.Join(d, name)); err == nil && st.Mode()&0o111 != 0 {
			return filepath.Join(d, name), nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}
