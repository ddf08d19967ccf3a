package bot

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/netdiag/netdiag/collectors"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Command is what a user asked of the bot, checked: `/netdiag pod
// default/web to svc/default/db:5432`. It never reaches a shell: the
// diagnosis takes its fields one by one.
type Command struct {
	// Verb is pod, svc, node, dns, capture, history, digest or help.
	Verb string
	// Namespace and Name are the target (Namespace empty for a node, and
	// for history of everything).
	Namespace, Name string
	// To is the destination as typed (pod/NS/NAME:PORT, svc/NS/NAME:PORT,
	// node/NAME:PORT, HOST:PORT); the diagnoser resolves it.
	To string
	// DNS are names to resolve from the pod.
	DNS []string
	// Capture is how long to capture (capture: default 10s); Filter a
	// tcpdump filter; Payload keeps whole packets, not only headers.
	Capture time.Duration
	Filter  string
	Payload bool
}

// Command limits and defaults.
const (
	MaxCommandText    = 1000
	DefaultCaptureFor = 10 * time.Second
	MaxCaptureFor     = 2 * time.Minute
	maxFilterLen      = 256
)

// CommandHelp is what `/netdiag help` and every refused command show.
const CommandHelp = "`/netdiag pod NS/NAME [to HOST:PORT|svc/NS/NAME:PORT|pod/NS/NAME:PORT|node/NAME:PORT] [dns NAME]` · " +
	"`/netdiag svc NS/NAME` · `/netdiag node NAME [to ...]` · `/netdiag dns NS/POD NAME` · " +
	"`/netdiag capture NS/POD [for 10s] [filter \"tcp port 80\"] [payload]` · `/netdiag history [NS/NAME]` · " +
	"`/netdiag digest` · `/netdiag help`"

// ErrCommand marks a command the bot cannot take as typed; its text says
// what is accepted.
var ErrCommand = errors.New("bad command")

func badCommand(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrCommand, fmt.Sprintf(format, a...))
}

// ParseCommand reads the text after `/netdiag`.
func ParseCommand(text string) (Command, error) {
	if len(text) > MaxCommandText {
		return Command{}, badCommand("the command is %d bytes; at most %d", len(text), MaxCommandText)
	}
	if !utf8.ValidString(text) {
		return Command{}, badCommand("the command is not valid UTF-8")
	}
	words, err := splitWords(text)
	if err != nil {
		return Command{}, err
	}
	if len(words) == 0 {
		return Command{Verb: "help"}, nil
	}
	c := Command{Verb: strings.ToLower(words[0])}
	args := words[1:]
	switch c.Verb {
	case "help":
		return c, nil
	case "digest":
		if len(args) > 0 {
			return Command{}, badCommand("digest takes nothing after it (got %q)", strings.Join(args, " "))
		}
		return c, nil
	case "history":
		if len(args) > 1 {
			return Command{}, badCommand("history takes at most one NS/NAME (got %q)", strings.Join(args, " "))
		}
		if len(args) == 1 {
			if c.Namespace, c.Name, err = namespaced("history", args[0]); err != nil {
				return Command{}, err
			}
		}
		return c, nil
	case "pod", "svc":
		if len(args) == 0 {
			return Command{}, badCommand("%s needs NAMESPACE/NAME, e.g. `/netdiag %s default/web`", c.Verb, c.Verb)
		}
		if c.Namespace, c.Name, err = namespaced(c.Verb, args[0]); err != nil {
			return Command{}, err
		}
		return c, c.options(args[1:], c.Verb == "pod", c.Verb == "pod")
	case "node":
		if len(args) == 0 {
			return Command{}, badCommand("node needs a node name, e.g. `/netdiag node worker-1`")
		}
		_, ipErr := netip.ParseAddr(args[0]) // a node by its InternalIP
		if errs := validation.IsDNS1123Subdomain(args[0]); len(errs) > 0 && ipErr != nil {
			return Command{}, badCommand("node %q: not a node name or an IP address (%s)", args[0], errs[0])
		}
		c.Name = args[0]
		return c, c.options(args[1:], true, false)
	case "dns":
		if len(args) != 2 {
			return Command{}, badCommand("dns needs a pod and a name, e.g. `/netdiag dns default/web kubernetes.default`")
		}
		if c.Namespace, c.Name, err = namespaced("dns", args[0]); err != nil {
			return Command{}, err
		}
		if err := collectors.ValidateName(args[1]); err != nil {
			return Command{}, badCommand("dns: %v", err)
		}
		c.DNS = []string{args[1]}
		return c, nil
	case "capture":
		if len(args) == 0 {
			return Command{}, badCommand("capture needs a pod, e.g. `/netdiag capture default/web for 10s`")
		}
		if c.Namespace, c.Name, err = namespaced("capture", args[0]); err != nil {
			return Command{}, err
		}
		c.Capture = DefaultCaptureFor
		return c, c.captureOptions(args[1:])
	}
	return Command{}, badCommand("unknown command %q", words[0])
}

// options reads `to X` and `dns NAME` (also written --to, --dns).
func (c *Command) options(args []string, to, dns bool) error {
	for i := 0; i < len(args); i++ {
		key := strings.TrimPrefix(strings.ToLower(args[i]), "--")
		if i+1 >= len(args) {
			return badCommand("%q needs a value after it", args[i])
		}
		v := args[i+1]
		i++
		switch {
		case key == "to" && to:
			if c.To != "" {
				return badCommand("give one `to` (got %q and %q)", c.To, v)
			}
			if len(v) > 300 || strings.ContainsFunc(v, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
				return badCommand("to %q: accepted: HOST:PORT, svc/NS/NAME:PORT, pod/NS/NAME:PORT, node/NAME:PORT", v)
			}
			c.To = v
		case key == "dns" && dns:
			if err := collectors.ValidateName(v); err != nil {
				return badCommand("dns: %v", err)
			}
			if len(c.DNS) == 4 {
				return badCommand("at most 4 dns names")
			}
			c.DNS = append(c.DNS, v)
		default:
			accepted := "nothing more"
			switch {
			case to && dns:
				accepted = "`to TARGET`, `dns NAME`"
			case to:
				accepted = "`to TARGET`"
			}
			return badCommand("%s %s: unexpected %q (accepted after it: %s)", c.Verb, c.target(), args[i-1], accepted)
		}
	}
	return nil
}

// captureOptions reads `for 10s`, `filter "..."` and `payload`.
func (c *Command) captureOptions(args []string) error {
	for i := 0; i < len(args); i++ {
		key := strings.TrimPrefix(strings.ToLower(args[i]), "--")
		switch key {
		case "payload":
			c.Payload = true
			continue
		case "for", "filter":
		default:
			return badCommand("capture %s: unexpected %q (accepted: `for 10s`, `filter \"tcp port 80\"`, `payload`)", c.target(), args[i])
		}
		if i+1 >= len(args) {
			return badCommand("%q needs a value after it", args[i])
		}
		v := args[i+1]
		i++
		if key == "for" {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second || d > MaxCaptureFor {
				return badCommand("for %q: give a duration from 1s to %s, e.g. 10s", v, MaxCaptureFor)
			}
			c.Capture = d
			continue
		}
		if len(v) > maxFilterLen || strings.ContainsFunc(v, func(r rune) bool { return r > unicode.MaxASCII || unicode.IsControl(r) || r == '"' }) {
			return badCommand("filter: at most %d printable ASCII characters of tcpdump filter, e.g. \"tcp port 80\"", maxFilterLen)
		}
		c.Filter = v
	}
	return nil
}

// splitWords splits on spaces, keeping "quoted text" (straight or the curly
// quotes Slack's clients type) as one word.
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in, quoted := false, false
	var closeQ rune
	for _, r := range s {
		switch {
		case in && r == closeQ:
			in = false
		case !in && (r == '"' || r == '“' || r == '”'):
			in, quoted = true, true
			closeQ = r
			if r == '“' {
				closeQ = '”'
			}
		case !in && unicode.IsSpace(r):
			if cur.Len() > 0 || quoted {
				words = append(words, cur.String())
				cur.Reset()
				quoted = false
			}
		default:
			cur.WriteRune(r)
		}
	}
	if in {
		return nil, badCommand("a quote is not closed")
	}
	if cur.Len() > 0 || quoted {
		words = append(words, cur.String())
	}
	return words, nil
}

// namespaced reads NAMESPACE/NAME.
func namespaced(verb, s string) (string, string, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" {
		return "", "", badCommand("%s %q: give NAMESPACE/NAME, e.g. default/web", verb, s)
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return "", "", badCommand("%s %q: %q is not a namespace name (%s)", verb, s, ns, errs[0])
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "", "", badCommand("%s %q: %q is not a name (%s)", verb, s, name, errs[0])
	}
	return ns, name, nil
}

func (c Command) target() string {
	if c.Namespace == "" {
		return c.Name
	}
	return c.Namespace + "/" + c.Name
}

// Target is what the command is about, as the store names it: "pod NS/NAME",
// "svc NS/NAME" or "node NAME"; empty for help, digest and history.
func (c Command) Target() string {
	switch c.Verb {
	case "pod", "dns", "capture":
		return "pod " + c.target()
	case "svc", "node":
		return c.Verb + " " + c.target()
	}
	return ""
}

// Permission is the verb an access rule must grant for the command, and the
// namespace it must grant it in (empty for a node: only "*" covers nodes).
func (c Command) Permission() (verb, namespace string) {
	verb = c.Verb
	if c.Verb == "capture" && c.Payload {
		verb = "capture-payload"
	}
	return verb, c.Namespace
}

// String gives the command back in its canonical form, as a button repeats
// it.
func (c Command) String() string {
	var b strings.Builder
	b.WriteString(c.Verb)
	if t := c.target(); t != "" {
		b.WriteString(" " + t)
	}
	if c.To != "" {
		b.WriteString(" to " + c.To)
	}
	for i, d := range c.DNS {
		if c.Verb == "dns" && i == 0 {
			b.WriteString(" " + d)
			continue
		}
		b.WriteString(" dns " + d)
	}
	if c.Verb == "capture" {
		fmt.Fprintf(&b, " for %s", c.Capture)
		if c.Filter != "" {
			fmt.Fprintf(&b, " filter %q", c.Filter)
		}
		if c.Payload {
			b.WriteString(" payload")
		}
	}
	return b.String()
}

// Diagnoses reports whether the command runs a diagnosis.
func (c Command) Diagnoses() bool {
	switch c.Verb {
	case "pod", "svc", "node", "dns", "capture":
		return true
	}
	return false
}
