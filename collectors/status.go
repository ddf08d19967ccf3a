package collectors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/tools"
)

// Status says how far a collector got, so that the rules read a fact, not an
// error message.
type Status string

const (
	// StatusOK: the collector ran and its evidence is complete.
	StatusOK Status = "ok"
	// StatusPartial: it ran, but part of what it reads was not there
	// (ip6tables-save missing beside iptables-save, a sysctl file absent).
	StatusPartial Status = "partial"
	// StatusFailed: it could not run; Error and ErrorKind say why.
	StatusFailed Status = "failed"
	// StatusNotApplicable: there was nothing for it to do here (no
	// destination to ping, no IPVS in this kernel). Not a fault.
	StatusNotApplicable Status = "not-applicable"
)

// ErrorKind classifies why a collector did not get everything.
type ErrorKind string

const (
	KindMissingTool   ErrorKind = "missing-tool"   // a program such as iptables-save is not installed
	KindPermission    ErrorKind = "permission"     // not root, or no CAP_NET_ADMIN / CAP_BPF
	KindTimeout       ErrorKind = "timeout"        // its deadline passed
	KindCancelled     ErrorKind = "cancelled"      // the whole run was cancelled
	KindNoNamespace   ErrorKind = "no-namespace"   // the namespace for its scope was not given or is gone
	KindUnsupported   ErrorKind = "unsupported"    // the kernel lacks the feature
	KindBadInput      ErrorKind = "bad-input"      // the question is malformed for it
	KindTooLarge      ErrorKind = "too-large"      // a file or output exceeded its bound
	KindPanic         ErrorKind = "panic"          // a bug: the collector panicked
	KindNotApplicable ErrorKind = "not-applicable" // nothing to do (see StatusNotApplicable)
	KindFailed        ErrorKind = "failed"         // anything else
	// KindUnreachable: the agent of the node the job was to run on did
	// not answer; KindNotFound: the pod's namespace is not on that node.
	KindUnreachable ErrorKind = "agent-unreachable"
	KindNotFound    ErrorKind = "not-found"
	// KindDenied: the node's agent refused the caller.
	KindDenied ErrorKind = "denied"
)

// JobFailed is the evidence of a job that could not be run at all (its
// node's agent did not answer, its pod is not there): the failure is
// evidence too, so that the finding can name it.
func JobFailed(j Job, kind ErrorKind, err error) Evidence {
	ev := Evidence{Collector: j.Collector, Scope: j.Scope, Label: j.Label, Started: time.Now().UTC()}
	ev.setResult(nil, withKind(kind, err))
	return ev
}

// kindError carries an explicit kind through error wrapping.
type kindError struct {
	kind ErrorKind
	err  error
}

func (e *kindError) Error() string { return e.err.Error() }
func (e *kindError) Unwrap() error { return e.err }

// withKind marks err with a kind; errors.As finds it through wrapping.
func withKind(kind ErrorKind, err error) error {
	if err == nil {
		return nil
	}
	return &kindError{kind, err}
}

// NotApplicable is the error of a collector that had nothing to do.
func NotApplicable(format string, a ...any) error {
	return withKind(KindNotApplicable, fmt.Errorf(format, a...))
}

func badInput(err error) error { return withKind(KindBadInput, err) }

func noNamespace(s Scope) error {
	return withKind(KindNoNamespace, fmt.Errorf("no %s namespace given", s))
}

// errTooLarge is returned by the bounded readers, and by programs that print
// more than allowed.
var errTooLarge = netns.ErrOutputTooLarge

// KindOf classifies an error.
func KindOf(err error) ErrorKind {
	if err == nil {
		return ""
	}
	var ke *kindError
	if errors.As(err, &ke) {
		return ke.kind
	}
	var me *tools.MissingError
	switch {
	case errors.As(err, &me):
		return KindMissingTool
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return KindTimeout
	case errors.Is(err, context.Canceled):
		return KindCancelled
	case errors.Is(err, errTooLarge):
		return KindTooLarge
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return KindPermission
	case errors.Is(err, syscall.EAFNOSUPPORT), errors.Is(err, syscall.EPROTONOSUPPORT), errors.Is(err, syscall.ENOPROTOOPT),
		errors.Is(err, syscall.EOPNOTSUPP):
		return KindUnsupported
	}
	return KindFailed
}

// statusOf turns a collector's outcome into a status and an error kind.
func statusOf(hasData bool, err error) (Status, ErrorKind) {
	kind := KindOf(err)
	switch {
	case kind == KindNotApplicable:
		return StatusNotApplicable, kind
	case err == nil && hasData:
		return StatusOK, ""
	case err == nil:
		// Nothing returned and nothing wrong: nothing to do.
		return StatusNotApplicable, ""
	case hasData:
		return StatusPartial, kind
	}
	return StatusFailed, kind
}

func errorOrNil(msg string) error {
	if msg == "" {
		return nil
	}
	return errors.New(msg)
}

// Recover turns a panic in the calling function into an error in *err and
// logs it with its stack; what names the failing part. Every goroutine a
// collector starts defers it: a bug in one probe must not take down the
// agent or lose the rest of the evidence.
func Recover(what string, err *error) {
	r := recover()
	if r == nil {
		return
	}
	slog.Error("panic recovered", "in", what, "panic", r, "stack", string(debug.Stack()))
	perr := withKind(KindPanic, fmt.Errorf("%s failed: panic: %v (stack in the log)", what, r))
	if err != nil {
		*err = errors.Join(*err, perr)
	}
}
