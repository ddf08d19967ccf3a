package agent

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/netdiag/netdiag/diagnose"
)

// FuzzPart: whatever a caller sends, reading and checking a part never
// panics, and a part that passes names no path for the agent to open,
// read or write.
func FuzzPart(f *testing.F) {
	f.Add([]byte(`{"node":"node-a","places":{"source":{"node":"node-a","pod":{"namespace":"default","name":"web","ip":"198.18.0.2"}}},"jobs":[{"collector":"links","scope":"source"}],"params":{}}`))
	f.Add([]byte(`{"node":"node-a","places":{"source":{"node":"node-a","netns":"/proc/1/ns/net"}},"jobs":[{"collector":"tcp","scope":"source","params":{"resolv_conf":"/etc/shadow"}}],"params":{"capture":{"file":"/x"}}}`))
	f.Add([]byte(`{"node":"node-a","places":{"node":{"node":"node-a"}},"jobs":[{"collector":"dns","scope":"node"}],"params":{"dns":["a;b"],"ping_count":-1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p diagnose.Part
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if dec.Decode(&p) != nil {
			return
		}
		if checkPart(&p, "node-a") != nil {
			return
		}
		for _, pl := range p.Places {
			if pl.Netns != "" {
				t.Fatalf("a part with a namespace path passed: %s", b)
			}
		}
		if p.Params.ResolvConf != "" || p.Params.Capture.File != "" {
			t.Fatalf("a part with a file path passed: %s", b)
		}
		for _, j := range p.Jobs {
			if j.Params != nil && (j.Params.ResolvConf != "" || j.Params.Capture.File != "") {
				t.Fatalf("a job with a file path passed: %s", b)
			}
			if strings.ContainsAny(j.Collector, "/ ;") {
				t.Fatalf("collector %q passed", j.Collector)
			}
		}
	})
}
