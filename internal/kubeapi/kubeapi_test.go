package kubeapi

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFromKubeconfig(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ca.crt"), []byte("CA"), 0o600)
	os.WriteFile(filepath.Join(dir, "token"), []byte("tok\n"), 0o600)
	file := filepath.Join(dir, "config")
	os.WriteFile(file, []byte(`
apiVersion: v1
kind: Config
current-context: sa
clusters:
- name: c
  cluster: {server: "https://198.18.0.1:6443", certificate-authority: ca.crt}
users:
- name: sa
  user: {tokenFile: token}
- name: plugin
  user: {exec: {command: aws, apiVersion: client.authentication.k8s.io/v1}}
contexts:
- name: sa
  context: {cluster: c, user: sa}
- name: plugin
  context: {cluster: c, user: plugin}
- name: broken
  context: {cluster: nope, user: sa}
`), 0o600)
	c, err := FromKubeconfig(file, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Host != "https://198.18.0.1:6443" || string(c.CAPEM) != "CA" || c.TokenFile != filepath.Join(dir, "token") {
		t.Errorf("config %+v: want the server, the CA read beside the file, the token file beside it", c)
	}
	for _, tc := range []struct{ context, says string }{
		{"plugin", "plugin, which the agent does not run"},
		{"broken", "not in the file"},
		{"other", `no context "other" (contexts: sa, plugin, broken)`},
	} {
		if _, err := FromKubeconfig(file, tc.context); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("context %s: %v, want it to say %q", tc.context, err, tc.says)
		}
	}
	if _, err := New(&Config{Host: "http://198.18.0.1"}); err == nil {
		t.Error("a plain-HTTP API server was accepted")
	}
}
