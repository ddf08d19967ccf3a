// Package agent is netdiag's node agent and its callers. One agent runs on
// every node (a DaemonSet on the host network with the host's PIDs): it
// takes the part of a diagnosis plan that lives on its node, finds the
// pod's network namespace there (container runtime, cgroup, scan), runs the
// collectors in their phases and streams the evidence and the pcap back.
// Only authorised callers get that far: a bearer token checked with the
// TokenReview API and a SubjectAccessReview per namespace, so Kubernetes
// RBAC decides who may diagnose what (a static token where there is no
// cluster).
//
// The caller's side is a diagnose.Site per node (Client), found through the
// Kubernetes view or given by address, which RemoteRunner uses to run a
// whole plan across nodes.
package agent

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"

	"github.com/netdiag/netdiag/collectors"
)

// The agent's API. Every call but /healthz needs a bearer token; a part is
// the request body (JSON), at most MaxBody bytes; answers that carry
// evidence are a stream of records, one JSON object per line, ending with a
// record that says done or why not.
const (
	PathHealth  = "/healthz"
	PathPrepare = "/v1/prepare" // POST a part: {"params": ...}
	PathRun     = "/v1/run"     // POST a part: records
	PathWatch   = "/v1/watch"   // POST a part: {"session": ID} once the watches are bound
	// PathWatch + "/ID/finish" (POST): records; PathWatch + "/ID" (DELETE) aborts.

	// Audience is the audience a caller's token must be minted for.
	Audience = "netdiag-agent"
	// DefaultPort is where the agent listens (HTTPS).
	DefaultPort = 9443
	// MaxBody bounds a request body.
	MaxBody = 1 << 20
)

// record is one line of an answer.
type record struct {
	Evidence *collectors.Evidence `json:"evidence,omitempty"`
	Pcap     *pcapChunk           `json:"pcap,omitempty"`
	Params   *collectors.Params   `json:"params,omitempty"`
	Session  string               `json:"session,omitempty"`
	// Error ends a stream that failed; Done one that did not.
	Error string `json:"error,omitempty"`
	Done  bool   `json:"done,omitempty"`
}

// pcapChunk carries a piece of a capture's pcap file: the evidence of that
// capture (same scope and label) comes before its chunks.
type pcapChunk struct {
	Scope collectors.Scope `json:"scope"`
	Label string           `json:"label,omitempty"`
	Data  []byte           `json:"data"`
}

// pcapChunkSize keeps each record small: a stream is read line by line.
const pcapChunkSize = 128 << 10

// maxRecord bounds one line of a stream on the reading side: a pcap chunk
// in base64 plus room, or the largest evidence (an iptables dump of a big
// node is a few MiB).
const maxRecord = 32 << 20

// readRecords calls fn for each record of a stream until its last.
func readRecords(r io.Reader, fn func(*record) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxRecord)
	for sc.Scan() {
		var rec record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return fmt.Errorf("agent answer: %w", err)
		}
		if rec.Error != "" {
			return fmt.Errorf("%s", rec.Error)
		}
		if rec.Done {
			return nil
		}
		if err := fn(&rec); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("agent answer: %w", err)
	}
	return fmt.Errorf("agent answer ended before it was complete: %w", io.ErrUnexpectedEOF)
}
