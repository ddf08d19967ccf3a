package bot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/diagnose"
)

// Question is a diagnosis the bot asks for: a command, or an alert mapped to
// a target.
type Question struct {
	// Kind is pod, svc or node; Namespace and Name name it.
	Kind, Namespace, Name string
	To                    string
	DNS                   []string
	Capture               time.Duration
	Filter                string
	Payload               bool
}

// Target is the question's subject as the store names it.
func (q Question) Target() string {
	if q.Namespace == "" {
		return q.Kind + " " + q.Name
	}
	return q.Kind + " " + q.Namespace + "/" + q.Name
}

// QuestionOf turns a diagnosing command into its question.
func QuestionOf(c Command) Question {
	q := Question{Kind: c.Verb, Namespace: c.Namespace, Name: c.Name, To: c.To, DNS: c.DNS, Capture: c.Capture, Filter: c.Filter, Payload: c.Payload}
	switch c.Verb {
	case "dns", "capture":
		q.Kind = "pod"
	}
	return q
}

// Answer is a diagnosis done: the finding and the node it ran on. The
// finding's Pcap, if any, is a file the bot stores and then removes.
type Answer struct {
	Finding *diagnose.Finding
	Node    string
}

// Diagnoser runs a question where its target lives: on a cluster through the
// node agents, or on the lab. progress hears each step ("resolving",
// "collecting on node-a", "classifying").
type Diagnoser interface {
	Diagnose(ctx context.Context, q Question, progress func(step string)) (*Answer, error)
}

// Checker is a Diagnoser that can tell at once, from what it already knows
// (the lab's state, the cluster's informers), whether a question names
// things that exist. The bot asks it before acknowledging, so a typo gets
// its answer in the acknowledgement rather than a failure in the channel.
type Checker interface {
	Check(ctx context.Context, q Question) error
}

// ErrQuestion marks a question that cannot be answered as asked (no such
// pod, a bad destination); its text says why and what exists. The bot shows
// it to the user rather than as a failure of its own.
var ErrQuestion = errors.New("cannot diagnose that")

// RunRequest is the end every Diagnoser shares: it gives a resolved request
// the question's capture (into a new file in pcapDir, "" for the system's
// temporary folder), checks it and runs it.
func RunRequest(ctx context.Context, req *diagnose.Request, q Question, runner diagnose.Runner, pcapDir string, log *slog.Logger, progress func(string)) (*Answer, error) {
	req.Capture, req.Filter, req.Payload = q.Capture, q.Filter, q.Payload
	if q.Capture > 0 {
		f, err := os.CreateTemp(pcapDir, "netdiag-*.pcap")
		if err != nil {
			return nil, err
		}
		f.Close()
		req.Pcap = f.Name()
	}
	fail := func(err error) (*Answer, error) {
		removePcaps(req.Pcap)
		return nil, err
	}
	if err := req.Validate(); err != nil {
		return fail(fmt.Errorf("%w: %v", ErrQuestion, err))
	}
	eng := &diagnose.Engine{Runner: runner, Log: log, Progress: progress}
	f, err := eng.Diagnose(ctx, req)
	if err != nil {
		return fail(err)
	}
	if req.Pcap != "" {
		mergePeerCapture(req, log)
	}
	return &Answer{Finding: f, Node: req.Source.Node}, nil
}

// mergePeerCapture puts the destination's capture, when one was taken, into
// the source's file (pcapng, one interface each): the thread then holds one
// file that shows both ends of the flow.
func mergePeerCapture(req *diagnose.Request, log *slog.Logger) {
	peer := collectors.PcapFile(req.Pcap, collectors.ScopePeer)
	if _, err := os.Stat(peer); err != nil {
		return
	}
	src, dst := "the source", "the destination"
	if c := req.Cluster; c != nil {
		src, dst = orText(c.SourceName, src), orText(c.PeerName, dst)
	}
	err := collectors.MergePcaps(req.Pcap, []collectors.PcapPart{
		{Name: "source", Description: src + " (where the probes start)", Path: req.Pcap},
		{Name: "peer", Description: dst + " (where they should arrive)", Path: peer},
	})
	if err != nil && log != nil {
		log.Warn("the destination's capture is left out of the pcap", "err", err)
	}
}

// removePcaps removes a diagnosis's capture files once they are stored: the
// source's and the one each other scope wrote next to it.
func removePcaps(path string) {
	if path == "" {
		return
	}
	for _, s := range []collectors.Scope{collectors.ScopeSource, collectors.ScopePeer, collectors.ScopeNode} {
		os.Remove(collectors.PcapFile(path, s))
	}
}
