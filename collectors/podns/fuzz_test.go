package podns

import "testing"

// FuzzSandboxInfo reads the verbose sandbox status a container runtime
// returns over CRI; `make test` fuzzes it for a short time.
func FuzzSandboxInfo(f *testing.F) {
	f.Add(`{"pid": 4242, "runtimeSpec": {"linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-3f2a"}]}}}`)
	f.Add(`{"pid": -1}`)
	f.Add(``)
	f.Fuzz(func(t *testing.T, info string) {
		found, err := fromSandboxInfo(info)
		if err == nil && found.Path == "" {
			t.Fatal("found a namespace without a path")
		}
	})
}
