package diagnose

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/drops"
)

// twoNodes is a question whose ends run on two nodes.
func twoNodes() *Request {
	pod := func(ns, name, ip string) *Pod {
		return &Pod{Namespace: ns, Name: name, IP: netip.MustParseAddr(ip)}
	}
	return &Request{
		Source:   Place{Node: "node-a", Pod: pod("default", "client", "198.18.20.2")},
		Node:     Place{Node: "node-a"},
		Peer:     Place{Node: "node-b", Pod: pod("default", "web", "198.18.21.2")},
		PeerNode: Place{Node: "node-b"},
		To:       &collectors.Dest{Addr: netip.MustParseAddr("198.18.21.2"), Port: 8080},
	}
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		req   func() *Request
		nodes []string
		// drops: the scope of each part's drops watch
		drops []collectors.Scope
	}{
		{"two nodes", twoNodes, []string{"node-a", "node-b"}, []collectors.Scope{collectors.ScopeSource, collectors.ScopePeer}},
		{"one node", func() *Request {
			r := twoNodes()
			r.Peer.Node, r.PeerNode.Node = "node-a", "node-a"
			return r
		}, []string{"node-a"}, []collectors.Scope{collectors.ScopeSource}},
		{"destination outside the cluster", func() *Request {
			r := twoNodes()
			r.Peer, r.PeerNode = NetnsPlace("/run/netns/ext"), Place{}
			return r
		}, []string{"node-a", ""}, []collectors.Scope{collectors.ScopeSource, collectors.ScopePeer}},
		{"no peer: one part", func() *Request {
			r := twoNodes()
			r.Peer, r.PeerNode = Place{}, Place{}
			return r
		}, []string{"node-a"}, []collectors.Scope{collectors.ScopeSource}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPlan(tc.req())
			if err != nil {
				t.Fatal(err)
			}
			parts := p.Split()
			var nodes []string
			var dropScopes []collectors.Scope
			jobs := 0
			for _, pt := range parts {
				nodes = append(nodes, pt.Node)
				for _, j := range pt.Jobs {
					if j.Collector == "drops" {
						dropScopes = append(dropScopes, j.Scope)
						continue
					}
					jobs++
					if pl, ok := pt.Places[j.Scope]; !ok || pl.Node != pt.Node {
						t.Errorf("job %s@%s is in the part of node %q, its scope is not", j.Collector, j.Scope, pt.Node)
					}
				}
			}
			if !slices.Equal(nodes, tc.nodes) {
				t.Errorf("parts on %q, want %q", nodes, tc.nodes)
			}
			if !parts[0].HasSource() {
				t.Error("the source's part is not first")
			}
			if !slices.Equal(dropScopes, tc.drops) {
				t.Errorf("drops watches in %v, want %v", dropScopes, tc.drops)
			}
			want := slices.DeleteFunc(slices.Clone(p.Jobs), func(j collectors.Job) bool { return j.Collector == "drops" })
			if jobs != len(want) {
				t.Errorf("%d jobs across the parts, the plan has %d", jobs, len(want))
			}
		})
	}
}

// recordingSite runs nothing: it records the order of the phases, which
// the real sites (this process, the agents) are tested for elsewhere.
type recordingSite struct {
	node  string
	mu    *sync.Mutex
	log   *[]string
	fail  error
	parts map[string]*Part
}

func (s *recordingSite) note(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*s.log = append(*s.log, what+" "+s.node)
}

func (s *recordingSite) Prepare(_ context.Context, p *Part) (*collectors.Params, error) {
	s.note("prepare")
	if s.fail != nil {
		return nil, s.fail
	}
	q := *p.Params
	q.Flows = []collectors.Flow{{Proto: "tcp", Src: netip.MustParseAddr("198.18.20.2"), Dst: p.Params.To.Addr, DPort: p.Params.To.Port}}
	q.Prepared = true
	return &q, nil
}

func (s *recordingSite) evidence(p *Part) []collectors.Evidence {
	var out []collectors.Evidence
	for _, j := range p.Jobs {
		out = append(out, collectors.Evidence{Collector: j.Collector, Scope: j.Scope, Label: j.Label, Status: collectors.StatusNotApplicable})
	}
	return out
}

func (s *recordingSite) Run(_ context.Context, p *Part) ([]collectors.Evidence, error) {
	s.note("run")
	if s.fail != nil {
		return nil, s.fail
	}
	return s.evidence(p), nil
}

func (s *recordingSite) Watch(_ context.Context, p *Part) (Watching, error) {
	s.note("watch")
	if s.fail != nil {
		return nil, s.fail
	}
	s.mu.Lock()
	s.parts[s.node] = p
	s.mu.Unlock()
	return watchFunc(func(context.Context) ([]collectors.Evidence, error) {
		s.note("finish")
		return s.evidence(p), nil
	}), nil
}

type watchFunc func(context.Context) ([]collectors.Evidence, error)

func (f watchFunc) Finish(ctx context.Context) ([]collectors.Evidence, error) { return f(ctx) }

func TestRunPlanPhases(t *testing.T) {
	unreach := fmt.Errorf("dial tcp 198.18.0.12:9443: connect: connection refused: %w", ErrUnreachable)
	for _, tc := range []struct {
		name    string
		down    string // the node whose agent does not answer
		order   []string
		verdict Verdict
		names   string // what the finding must name
	}{
		{"both answer", "", []string{"prepare node-a", "watch node-b", "run node-a", "finish node-b"}, Insufficient, ""},
		{"destination's node down", "node-b", []string{"prepare node-a", "watch node-b", "run node-a"}, AgentDown, "node node-b"},
		{"source's node down", "node-a", []string{"prepare node-a"}, AgentDown, "node node-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var log []string
			parts := map[string]*Part{}
			site := func(node string) (Site, error) {
				s := &recordingSite{node: node, mu: &mu, log: &log, parts: parts}
				if node == tc.down {
					s.fail = unreach
				}
				return s, nil
			}
			req := twoNodes()
			p, err := NewPlan(req)
			if err != nil {
				t.Fatal(err)
			}
			evs, err := RunPlan(context.Background(), p, site)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(log, tc.order) {
				t.Errorf("phases %q, want %q", log, tc.order)
			}
			if b := parts["node-b"]; b != nil && (!b.Params.Prepared || len(b.Params.Flows) != 1) {
				t.Errorf("node-b's part did not get the flows prepared on node-a: %+v", b.Params)
			}
			if tc.down != "" {
				n := 0
				for _, e := range evs {
					if e.ErrorKind == collectors.KindUnreachable {
						n++
						if !strings.Contains(e.Error, "node "+tc.down) {
							t.Errorf("evidence %s@%s does not name the node: %s", e.Collector, e.Scope, e.Error)
						}
					}
				}
				if n == 0 {
					t.Error("no evidence of the unreachable node")
				}
			}
			f := Classify(req, evs)
			if f.Verdict() != tc.verdict {
				t.Errorf("verdict %s (%s), want %s", f.Verdict(), f.Summary, tc.verdict)
			}
			if tc.names != "" && !strings.Contains(f.Summary, tc.names) {
				t.Errorf("summary does not name %q: %s", tc.names, f.Summary)
			}
		})
	}
}

func TestMergeDrops(t *testing.T) {
	at := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	syn := drops.Drop{At: at, Reason: "NETFILTER_DROP", Location: "nft_do_chain+0x1", Netns: 7, Proto: "tcp", Src: "198.18.20.2", Dst: "198.18.21.2", SPort: 40000, DPort: 8080, Packet: "SYN"}
	named := syn
	named.Where, named.At = "peer", at.Add(time.Microsecond)
	other := syn
	other.Netns, other.Reason = 9, "NO_SOCKET"
	for _, tc := range []struct {
		name    string
		results [][]drops.Drop
		want    map[string]int
		where   string
	}{
		// One kernel, two watches: each saw the one drop.
		{"shared kernel", [][]drops.Drop{{syn}, {named}}, map[string]int{"NETFILTER_DROP": 1}, "peer"},
		// Two kernels: each saw its own.
		{"two kernels", [][]drops.Drop{{syn}, {other}}, map[string]int{"NETFILTER_DROP": 1, "NO_SOCKET": 1}, ""},
		// A retransmitted SYN dropped twice is two drops.
		{"retransmission", [][]drops.Drop{{syn, syn}, {named}}, map[string]int{"NETFILTER_DROP": 2}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var evs []collectors.Evidence
			scopes := []collectors.Scope{collectors.ScopeSource, collectors.ScopePeer}
			for i, ds := range tc.results {
				evs = append(evs, collectors.Evidence{Collector: "drops", Scope: scopes[i], Status: collectors.StatusOK,
					Data: &collectors.DropsResult{Method: "ebpf", Drops: ds}})
			}
			evs = append(evs, collectors.Evidence{Collector: "tcp", Scope: collectors.ScopeSource, Data: &collectors.TCP{}})
			out := mergeDrops(evs)
			if len(out) != 2 || out[0].Scope != collectors.ScopeSource {
				t.Fatalf("merged evidence %+v", out)
			}
			res := out[0].Data.(*collectors.DropsResult)
			if fmt.Sprint(res.ByReason) != fmt.Sprint(tc.want) {
				t.Errorf("by reason %v, want %v", res.ByReason, tc.want)
			}
			if tc.where != "" && res.Drops[0].Where != tc.where {
				t.Errorf("kept the drop seen in %q, want the one named %q", res.Drops[0].Where, tc.where)
			}
		})
	}
}

// A node's self-check resolves an outside name only: its resolver is the
// site's, which does not know cluster names, and that is right. A pod's
// asks a cluster name too.
func TestSelfCheckNamesByKind(t *testing.T) {
	for _, tc := range []struct {
		source      string
		dns         []string
		wantCluster bool
	}{
		{"pod default/client", nil, true},
		{"node node-a", nil, false},
		{"node node-a", []string{"example.org"}, false},
		{"pod default/client", []string{"example.org"}, true}, // the control
	} {
		r := twoNodes()
		r.To, r.Peer, r.PeerNode, r.DNS = nil, Place{}, Place{}, tc.dns
		if strings.HasPrefix(tc.source, "node ") {
			r.Source.Pod = nil
		}
		r.Cluster = &Cluster{SourceName: tc.source, APIName: "kubernetes.default.svc.cluster.local"}
		p, err := NewPlan(r)
		if err != nil {
			t.Fatal(err)
		}
		got := slices.Contains(p.Params.DNS, "kubernetes.default.svc.cluster.local")
		if got != tc.wantCluster {
			t.Errorf("%s asking %v: cluster name asked = %v, want %v (names %v)", tc.source, tc.dns, got, tc.wantCluster, p.Params.DNS)
		}
	}
}
