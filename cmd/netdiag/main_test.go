package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
)

func TestMain(m *testing.M) {
	// Tests start the agents and the CLI as processes of their own: this
	// test binary, playing netdiag.
	if os.Getenv(asMainEnv) == "1" {
		// As main does: a lab started by this process re-executes it
		// for its servers.
		lab.MaybeRunHelper()
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	labtest.Main(m)
}

const asMainEnv = "NETDIAG_TEST_AS_MAIN"

// TestBadInput: every bad input exits 2 with one line that says what was wrong
// and what is accepted.
func TestBadInput(t *testing.T) {
	// No cluster to find: no kubeconfig, no pod account, no node name.
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("NODE_NAME", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nosuch"}, "unknown command \"nosuch\"; commands are: agent, bench, collect, diagnose, digest, demo, history, lab, serve, version"},
		{[]string{"lab", "nosuch"}, "accepted: up, down, status"},
		{[]string{"lab", "fault"}, "give exactly one fault name"},
		{[]string{"lab", "fault", "nosuch"}, "nosuch"},
		{[]string{"lab", "up", "--instance", "Bad-Name"}, "Bad-Name"},
		{[]string{"lab", "status", "-o", "yaml"}, "accepted: text, json"},
		{[]string{"lab", "up", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"demo", "--fault", "nosuch"}, "nosuch"},
		{[]string{"collect"}, "--netns is required"},
		{[]string{"collect", "--netns", "/run/netns/ndl-nosuch"}, "does not exist"},
		{[]string{"collect", "--netns", "/proc/self/ns/net", "--to", "10.0.0.1:http"}, "bad port"},
		{[]string{"collect", "--netns", "/proc/self/ns/net", "--dns", "bad name!"}, "bad DNS name"},
		{[]string{"collect", "--netns", "/proc/self/ns/net", "--collector", "nosuch"}, "accepted: capture, dns"},
		{[]string{"collect", "--netns", "/proc/self/ns/net", "--collector", "tcp", "--to", "10.0.0.1"}, "needs --to HOST:PORT"},
		{[]string{"collect", "--netns", "/proc/self/ns/net", "--capture", "10m"}, "between 1s and 5m0s"},
		{[]string{"collect", "--netns", "/proc/self/ns/net", "--capture", "soon"}, "invalid value"},
		{[]string{"bench", "nosuch"}, "give one of: agent, capture, pmtu, collectors, diagnose, drops, tracer, store"},
		{[]string{"diagnose", "--netns", "/proc/self/ns/net", "--drops", "bpf"}, `--drops "bpf": accepted: auto (eBPF, else tracefs), ebpf, tracefs, off`},
		{[]string{"collect", "--netns", "/proc/self/ns/net", "--drops", "kprobe"}, "accepted: auto"},
		{[]string{"diagnose"}, "give a target: pod NAMESPACE/NAME, svc NAMESPACE/NAME or node NAME"},
		{[]string{"diagnose", "--netns", "/run/netns/ndl-nosuch"}, "--netns: network namespace /run/netns/ndl-nosuch does not exist"},
		{[]string{"diagnose", "--netns", "/proc/self/ns/net", "--capture", "soon"}, `invalid value "soon" for flag -capture`},
		{[]string{"diagnose", "--netns", "/proc/self/ns/net", "--capture", "1h"}, "between 1s and 5m0s"},
		{[]string{"diagnose", "--netns", "/proc/self/ns/net", "--to", "10.0.0.1:99999"}, "bad port"},
		{[]string{"diagnose", "--netns", "/proc/self/ns/net", "--dns", "a b"}, "bad DNS name"},
		{[]string{"diagnose", "--netns", "/proc/self/ns/net", "-o", "yaml"}, "accepted: text, json, markdown"},
		{[]string{"diagnose", "--netns", "/proc/self/ns/net", "--capture", "2s", "--filter", "tcp port"}, "can't parse filter expression: syntax error"},
		{[]string{"diagnose", "--lab", "pod"}, "--lab needs a target: pod NAMESPACE/NAME or node NAME"},
		{[]string{"diagnose", "pod", "default/web"}, "no cluster: no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not in a pod"},
		{[]string{"diagnose", "pod", "default/web", "--kubeconfig", "/nonexistent/config"}, "/nonexistent/config"},
		{[]string{"diagnose", "pod", "default/web", "--agents", "ssh"}, `--agents "ssh": accepted: port-forward, direct`},
		{[]string{"diagnose", "pod", "default/web", "--agent-port", "0"}, "--agent-port 0: give 1 to 65535"},
		{[]string{"diagnose", "pod"}, "give a target: pod NAMESPACE/NAME, svc NAMESPACE/NAME or node NAME"},
		{[]string{"diagnose", "deployment", "default/web"}, `unknown target "deployment"`},
		{[]string{"diagnose", "pod", "default/web", "--peer-netns", "/proc/self/ns/net"}, "are for --netns"},
		{[]string{"agent"}, "no node name: give --node NAME, or set NODE_NAME"},
		{[]string{"agent", "--node", "node-a", "--max-captures", "0"}, "--max-captures 0: give 1 to 16"},
		{[]string{"agent", "--node", "node-a", "--tls-cert", "/x.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"agent", "--node", "node-a", "--token-file", "/t", "--kubeconfig", "/k"}, "exclude each other"},
		{[]string{"agent", "--node", "node-a", "now"}, "the agent takes flags only"},
		{[]string{"agent", "--bogus"}, "flag provided but not defined: -bogus"},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", tc.args, code, exitUsage, errb.String())
		}
		if !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: stderr %q lacks %q", tc.args, errb.String(), tc.want)
		}
	}
}

// TestHelp: every command's --help exits 0 and teaches with an example.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"help", "lab"}, {"lab", "--help"}, {"lab", "up", "--help"}, {"lab", "down", "--help"},
		{"lab", "status", "--help"}, {"lab", "faults", "--help"}, {"lab", "fault", "--help"},
		{"lab", "clear", "--help"}, {"lab", "check", "--help"}, {"demo", "--help"}, {"version", "--help"},
		{"collect", "--help"}, {"bench", "--help"}, {"diagnose", "--help"}, {"lab", "bench", "--help"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != exitOK {
			t.Errorf("%v: exit %d (stderr %q)", args, code, errb.String())
		}
		if !strings.Contains(out.String(), "Usage") && !strings.Contains(out.String(), "Commands:") {
			t.Errorf("%v: help does not show usage: %q", args, out.String())
		}
	}
}

// TestFilesBeforeAnythingRuns: files the flags name are checked before any
// probe runs, with bounds: a device or a FIFO named as resolv.conf is
// refused at once (never read without end, never waited on), and a pcap that
// cannot be written is an error, not a finding without its pcap.
func TestFilesBeforeAnythingRuns(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.conf")
	if err := os.WriteFile(big, bytes.Repeat([]byte("# padding\n"), 40000), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"diagnose", "--netns", "/proc/self/ns/net", "--resolv-conf", "/dev/zero", "--dns", "example.com"}, "/dev/zero is not a regular file (a character device)"},
		{[]string{"diagnose", "--netns", "/proc/self/ns/net", "--resolv-conf", fifo, "--dns", "example.com"}, "is not a regular file (a FIFO)"},
		{[]string{"diagnose", "--netns", "/proc/self/ns/net", "--resolv-conf", big, "--dns", "example.com"}, "larger than allowed"},
		{[]string{"collect", "--netns", "/proc/self/ns/net", "--resolv-conf", "/dev/zero"}, "not a regular file"},
		{[]string{"diagnose", "--netns", "/proc/self/ns/net", "--to", "198.18.0.1:80", "--capture", "1s", "--pcap", "/nonexistent-netdiag/x.pcap"}, "folder /nonexistent-netdiag does not exist"},
		{[]string{"diagnose", "--netns", "/proc/self/ns/net", "--to", "198.18.0.1:80", "--capture", "1s", "--pcap", dir}, "it is a folder"},
		{[]string{"diagnose", "--netns", "/proc/self/ns/net", "--to", "198.18.0.1:80", "--pcap", filepath.Join(dir, "x.pcap")}, "needs --capture"},
		{[]string{"collect", "--netns", "/proc/self/ns/net", "--to", "198.18.0.1", "--capture", "1s", "--pcap", "/nonexistent-netdiag/x.pcap"}, "does not exist"},
	} {
		start := time.Now()
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != exitUsage || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 saying %q", tc.args, code, errb.String(), tc.want)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%v: took %s to refuse", tc.args, d)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.pcap")); err == nil {
		t.Error("a pcap was left behind by a refused run")
	}
}

// TestIPv6Destination: an IPv6 destination is diagnosed, not a crash: from
// a bare namespace with no IPv6 route, the verdict is that route.
func TestIPv6Destination(t *testing.T) {
	b := labtest.NewBare(t, "tcli", "a")
	var out, errb bytes.Buffer
	code := run([]string{"diagnose", "--netns", b.Path("a"), "--node-netns", b.Path("a"), "--to", "[2001:2:0:ffff::2]:80", "-o", "json"}, &out, &errb)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var f struct{ Class, Cause string }
	if err := json.Unmarshal(out.Bytes(), &f); err != nil {
		t.Fatal(err)
	}
	if f.Class+"/"+f.Cause != "network-unreachable/route" {
		t.Errorf("got %s/%s, want network-unreachable/route\n%s", f.Class, f.Cause, out.String())
	}
}

func TestFaultsListed(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"lab", "faults"}, &out, &errb); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"loopback-only", "port-unreachable/loopback-only", "cni-anomaly/podcidr-exhausted"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("lab faults lacks %q", want)
		}
	}
}

// TestBadInputOneLine: a mistake is one line on stderr, not the usage.
func TestBadInputOneLine(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"diagnose", "--netns", "/proc/self/ns/net", "--capture", "soon"}, &out, &errb); code != exitUsage {
		t.Fatalf("exit %d", code)
	}
	if n := strings.Count(strings.TrimSpace(errb.String()), "\n"); n != 0 {
		t.Errorf("want one line, got %d:\n%s", n+1, errb.String())
	}
}

// TestDualStackName: --to a name with both A and AAAA records probes both
// families from the pod, the name resolved as the pod resolves it.
func TestDualStackName(t *testing.T) {
	l := labtest.Up(t, "tname")
	client, _ := l.Pod("default/client")
	var out, errb bytes.Buffer
	code := run([]string{"diagnose", "--netns", client.NetnsPath, "--to", "example.com:80", "-o", "json"}, &out, &errb)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var f struct {
		Class, Cause, Summary string
		Raw                   []struct {
			Collector, Label string
		}
	}
	if err := json.Unmarshal(out.Bytes(), &f); err != nil {
		t.Fatal(err)
	}
	labels := map[string]bool{}
	for _, e := range f.Raw {
		if e.Collector == "tcp" {
			labels[e.Label] = true
		}
	}
	if f.Class != "healthy" || !labels[""] || !labels["ipv6"] || !strings.Contains(f.Summary, "IPv6") {
		t.Errorf("got %s/%s %q, TCP probes %v; want both families probed and healthy", f.Class, f.Cause, f.Summary, labels)
	}
}
