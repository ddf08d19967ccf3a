package containerd

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestDefaultRanges(t *testing.T) {
	pfx := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	addr := netip.MustParseAddr
	for _, tc := range []struct {
		name   string
		bridge []netip.Prefix
		want   []Range
		err    string
	}{
		{
			name:   "lab node, dual-stack",
			bridge: []netip.Prefix{pfx("198.19.1.1/24"), pfx("2001:2:0:101::1/64")},
			want: []Range{
				{Subnet: pfx("198.19.1.0/24"), Gateway: addr("198.19.1.1"), Start: addr("198.19.1.128"), End: addr("198.19.1.254")},
				{Subnet: pfx("2001:2:0:101::/64"), Gateway: addr("2001:2:0:101::1"), Start: addr("2001:2:0:101::128"), End: addr("2001:2:0:101::254")},
			},
		},
		{
			name:   "IPv4 only, /25",
			bridge: []netip.Prefix{pfx("198.19.3.1/25")},
			want:   []Range{{Subnet: pfx("198.19.3.0/25"), Gateway: addr("198.19.3.1"), Start: addr("198.19.3.64"), End: addr("198.19.3.126")}},
		},
		{name: "IPv6 only", bridge: []netip.Prefix{pfx("2001:2:0:101::1/64")}, err: "no IPv4 address"},
		{name: "subnet too small", bridge: []netip.Prefix{pfx("198.19.3.1/30")}, err: "/8 to /29"},
		{name: "no twin for a /16's upper half", bridge: []netip.Prefix{pfx("198.19.0.1/16"), pfx("2001:2:0:100::1/64")}, err: "no IPv6 twin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DefaultRanges(tc.bridge)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("range %d: got %+v, want %+v", i, got[i], tc.want[i])
				}
			}
			if err := checkRanges(got); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestSplitRef(t *testing.T) {
	for _, tc := range []struct {
		ref, repo, tag string
		ok             bool
	}{
		{"netdiag.lab/server:1", "netdiag.lab/server", "1", true},
		{"localhost/x/y:v2", "localhost/x/y", "v2", true},
		{"localhost:5000/x:v2", "localhost:5000/x", "v2", true},
		{"server:1", "", "", false},    // would become docker.io/library/server
		{"busybox/x:1", "", "", false}, // a Docker Hub user, not a domain
		{"netdiag.lab/server", "", "", false},
		{"netdiag.lab/server:", "", "", false},
		{"netdiag.lab/server@sha256:00", "", "", false},
	} {
		repo, tag, err := splitRef(tc.ref)
		if (err == nil) != tc.ok || repo != tc.repo || tag != tc.tag {
			t.Errorf("splitRef(%q) = %q, %q, %v; want %q, %q, ok=%v", tc.ref, repo, tag, err, tc.repo, tc.tag, tc.ok)
		}
	}
}

// TestWriteImage reads the layout back as an importer would: every blob
// matches its digest, the manifest and config point at each other, the
// layer holds the binary, and the same input gives the same bytes.
func TestWriteImage(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "server")
	content := []byte("\x7fELF not really a binary")
	if err := os.WriteFile(bin, content, 0o755); err != nil {
		t.Fatal(err)
	}
	img := Image{Ref: "netdiag.lab/server:1", Binary: bin, Cmd: []string{"-listen", ":8080"}}
	var a, b bytes.Buffer
	digest, err := WriteImage(&a, img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteImage(&b, img); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two writes of one image differ: digests would change at every import")
	}
	files := map[string][]byte{}
	tr := tar.NewReader(&a)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		files[h.Name] = data
	}
	blob := func(d string) []byte {
		t.Helper()
		data, ok := files["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")]
		if !ok {
			t.Fatalf("blob %s missing", d)
		}
		sum := sha256.Sum256(data)
		if "sha256:"+hex.EncodeToString(sum[:]) != d {
			t.Fatalf("blob %s does not match its digest", d)
		}
		return data
	}
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout: %q", files["oci-layout"])
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v, %s", err, files["index.json"])
	}
	m := index.Manifests[0]
	if m.Digest != digest || m.Annotations[annRefName] != "1" || m.Annotations[annImageName] != img.Ref || m.Platform == nil || m.Platform.OS != "linux" {
		t.Errorf("index entry %+v, want digest %s, ref name 1, image name %s, a linux platform", m, digest, img.Ref)
	}
	var man struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(blob(m.Digest), &man); err != nil || len(man.Layers) != 1 {
		t.Fatalf("manifest: %v", err)
	}
	var cfg struct {
		Config struct {
			Entrypoint, Cmd []string
		} `json:"config"`
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(blob(man.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Config.Entrypoint, " ") != "/server" || strings.Join(cfg.Config.Cmd, " ") != "-listen :8080" {
		t.Errorf("config: entrypoint %v cmd %v", cfg.Config.Entrypoint, cfg.Config.Cmd)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(man.Layers[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	layer, _ := io.ReadAll(zr)
	sum := sha256.Sum256(layer)
	if len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("diff_ids %v do not match the uncompressed layer", cfg.RootFS.DiffIDs)
	}
	lr := tar.NewReader(bytes.NewReader(layer))
	h, err := lr.Next()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(lr)
	if h.Name != "server" || h.Mode&0o111 == 0 || !bytes.Equal(got, content) {
		t.Errorf("layer holds %s (mode %o), want the executable binary as /server", h.Name, h.Mode)
	}
}

func TestConfigs(t *testing.T) {
	cfg := renderConfig("/tmp/ndl-x-node-a-containerd-1-2", "native", "/root/go/bin/cni")
	for _, want := range []string{
		"version = 2\n",
		`root = "/tmp/ndl-x-node-a-containerd-1-2/root"`,
		`address = "/tmp/ndl-x-node-a-containerd-1-2/containerd.sock"`,
		"restrict_oom_score_adj = true",
		"netns_mounts_under_state_dir = true",
		`sandbox_image = "` + PauseRef + `"`,
		`snapshotter = "native"`,
		"SystemdCgroup = false",
		`Root = "/tmp/ndl-x-node-a-containerd-1-2/state/runc"`,
		`bin_dir = "/root/go/bin/cni"`,
		`"io.containerd.snapshotter.v1.overlayfs"`, // disabled with native
		`"io.containerd.internal.v1.opt"`,
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %s:\n%s", want, cfg)
		}
	}
	if strings.Contains(renderConfig("/d", "overlayfs", "/b"), "v1.overlayfs") {
		t.Error("overlayfs disabled although chosen")
	}
	if got := tomlString(`a"b\c` + "\n"); got != `"a\"b\\c?"` {
		t.Errorf("tomlString: %s", got)
	}

	ranges, err := DefaultRanges([]netip.Prefix{netip.MustParsePrefix("198.19.1.1/24")})
	if err != nil {
		t.Fatal(err)
	}
	b, err := cniConfig("ndl-x-node-a-containerd", "cni0", 1450, "/d/ipam", ranges)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Name    string `json:"name"`
		Plugins []struct {
			Type             string `json:"type"`
			Bridge           string `json:"bridge"`
			IsGateway        bool   `json:"isGateway"`
			IsDefaultGateway bool   `json:"isDefaultGateway"`
			IPMasq           bool   `json:"ipMasq"`
			MTU              int    `json:"mtu"`
			IPAM             struct {
				Type    string `json:"type"`
				DataDir string `json:"dataDir"`
				Ranges  [][]map[string]string
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &conf); err != nil {
		t.Fatal(err)
	}
	p := conf.Plugins[0]
	if conf.Name != "ndl-x-node-a-containerd" || p.Type != "bridge" || p.Bridge != "cni0" || !p.IsGateway || !p.IsDefaultGateway || p.IPMasq || p.MTU != 1450 ||
		p.IPAM.Type != "host-local" || p.IPAM.DataDir != "/d/ipam" || p.IPAM.Ranges[0][0]["rangeStart"] != "198.19.1.128" || p.IPAM.Ranges[0][0]["gateway"] != "198.19.1.1" {
		t.Errorf("CNI configuration:\n%s", b)
	}
}

func TestNamesAndArgs(t *testing.T) {
	for _, tc := range []struct {
		base, name string
		pid        int
		ok         bool
	}{
		{"ndl-ctrd12-node-a-containerd-12-345", "ndl-ctrd12-node-a-containerd", 12, true},
		{"ndl-x-node-containerd-7-1", "ndl-x-node-containerd", 7, true},
		{"ndl-x-node-containerd-7", "", 0, false},
		{"other-node-containerd-7-1", "", 0, false},
		{"ndl-x-node-a-7-1", "", 0, false},
		{"ndl-x-node-containerd-x-1", "", 0, false},
	} {
		name, pid, ok := dirOwner(tc.base)
		if name != tc.name || pid != tc.pid || ok != tc.ok {
			t.Errorf("dirOwner(%q) = %q, %d, %v; want %q, %d, %v", tc.base, name, pid, ok, tc.name, tc.pid, tc.ok)
		}
	}
	shim := []string{"/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "abc", "-address", "/tmp/d/containerd.sock"}
	if !hasArgPair(shim, "-address", "/tmp/d/containerd.sock") || hasArgPair(shim, "-address", "/tmp/d") {
		t.Error("hasArgPair on a shim command line")
	}
	if !hasArgPair([]string{"containerd", "--config=/d/config.toml"}, "--config", "/d/config.toml") {
		t.Error("hasArgPair with --flag=value")
	}
	if got := unescapeMount(`/tmp/a\040b\134c`); got != `/tmp/a b\c` {
		t.Errorf("unescapeMount: %q", got)
	}
}

// A DaemonSet agent's pod spec becomes the CRI's: mounts with their
// propagation, the user and the capabilities, the namespaces.
func TestDaemonSetSpec(t *testing.T) {
	for _, tc := range []struct {
		m    Mount
		want cri.MountPropagation
		err  string
	}{
		{m: Mount{HostPath: "/run/netns", ContainerPath: "/run/netns", ReadOnly: true, Propagation: "HostToContainer"}, want: cri.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
		{m: Mount{HostPath: "/sys/fs/cgroup", ContainerPath: "/sys/fs/cgroup"}, want: cri.MountPropagation_PROPAGATION_PRIVATE},
		{m: Mount{HostPath: "/a", ContainerPath: "/b", Propagation: "None"}, want: cri.MountPropagation_PROPAGATION_PRIVATE},
		{m: Mount{HostPath: "/a", ContainerPath: "/b", Propagation: "Bidirectional"}, want: cri.MountPropagation_PROPAGATION_BIDIRECTIONAL},
		{m: Mount{HostPath: "/a", ContainerPath: "/b", Propagation: "rslave"}, err: "accepted are None, HostToContainer and Bidirectional"},
		{m: Mount{HostPath: "a", ContainerPath: "/b"}, err: "absolute"},
		{m: Mount{HostPath: "/a", ContainerPath: "b"}, err: "absolute"},
	} {
		got, err := tc.m.criMount()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%+v: %v, want an error saying %q", tc.m, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v: %v", tc.m, err)
			continue
		}
		if got.Propagation != tc.want || got.HostPath != tc.m.HostPath || got.ContainerPath != tc.m.ContainerPath || got.Readonly != tc.m.ReadOnly {
			t.Errorf("%+v: %v", tc.m, got)
		}
	}

	ns := &cri.NamespaceOption{Network: cri.NamespaceMode_NODE, Pid: cri.NamespaceMode_NODE}
	root := int64(0)
	sc, err := containerSecurity(PodSpec{RunAsUser: &root, CapDrop: []string{"ALL"}, CapAdd: []string{"NET_ADMIN", "BPF"},
		ReadOnlyRootfs: true, Seccomp: "RuntimeDefault"}, ns)
	if err != nil || sc.NamespaceOptions != ns || sc.RunAsUser == nil || sc.RunAsUser.Value != 0 || !sc.ReadonlyRootfs ||
		sc.Seccomp.GetProfileType() != cri.SecurityProfile_RuntimeDefault ||
		strings.Join(sc.Capabilities.DropCapabilities, ",") != "ALL" || strings.Join(sc.Capabilities.AddCapabilities, ",") != "NET_ADMIN,BPF" {
		t.Errorf("agent's security context: %v, %v", sc, err)
	}
	// Nothing asked: the image's user, the runtime's capabilities, no
	// seccomp profile (the CRI's default, as the kubelet's).
	for _, profile := range []string{"", "Unconfined"} {
		if sc, err := containerSecurity(PodSpec{Seccomp: profile}, ns); err != nil || sc.RunAsUser != nil || sc.Capabilities != nil || sc.Seccomp != nil || sc.ReadonlyRootfs {
			t.Errorf("default security context (seccomp %q): %v, %v", profile, sc, err)
		}
	}
	if _, err := containerSecurity(PodSpec{Seccomp: "Localhost"}, ns); err == nil || !strings.Contains(err.Error(), "RuntimeDefault") {
		t.Errorf("an unknown seccomp profile: %v", err)
	}
}
