// Command netdiag diagnoses Kubernetes pod network failures: it runs the
// checks an engineer would run by hand (ping, TCP connect, DNS, path MTU,
// capture, firewall and route dumps) inside the pod's network namespace and on
// its node, and says which failure of the taxonomy it is.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/netdiag/netdiag/internal/logs"
	"github.com/netdiag/netdiag/lab"
)

// Exit codes are part of the command-line contract.
const (
	exitOK       = 0
	exitInternal = 1
	exitUsage    = 2
)

type command struct {
	name    string
	summary string
	run     func(c *cli, args []string) int
}

// cli carries what every command writes to, so tests can run commands in
// process and read their output.
type cli struct {
	stdout, stderr io.Writer
	log            *slog.Logger
}

func commands() []command {
	return []command{
		{"agent", "the node agent: runs the node's part of diagnoses for the bot and the CLI (HTTPS, RBAC)", runAgent},
		{"bench", "measure capture, path-MTU and collector speed on a lab of its own", runBench},
		{"collect", "run collectors in network namespaces and print the raw evidence", runCollect},
		{"diagnose", "find out why a pod's network is broken (one verdict, evidence, next steps)", runDiagnose},
		{"digest", "print a health digest now: findings by cause and their trend, what recurs, open alerts, a sweep of every node", runDigest},
		{"demo", "run the main job end to end on the fault lab (no cluster, no Slack)", runDemo},
		{"history", "list the findings kept in the store, newest first, by pod, Service, node or namespace", runHistory},
		{"lab", "build, break and heal the fault lab (a two-node cluster network in namespaces)", runLab},
		{"serve", "run the bot: /netdiag in Slack, replies to Alertmanager alerts, scheduled digests", runServe},
		{"version", "print the version", runVersion},
	}
}

func main() {
	// The lab starts its servers by re-executing this binary.
	lab.MaybeRunHelper()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, log: newLogger(stderr)}
	if len(args) == 0 || isHelp(args[0]) || args[0] == "help" {
		if len(args) > 1 && args[0] == "help" {
			return run([]string{args[1], "--help"}, stdout, stderr)
		}
		usage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, cmd := range commands() {
		if cmd.name == args[0] {
			return cmd.run(c, args[1:])
		}
	}
	fmt.Fprintf(stderr, "netdiag: unknown command %q; commands are: %s (see `netdiag help`)\n", args[0], commandNames())
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `netdiag finds out why a pod's network is broken.

It runs, inside the pod's network namespace and on its node, what an engineer
would run by hand (ping, a TCP connect, dig, a path-MTU probe, tcpdump,
iptables-save, ip route) and says which failure it is.

Usage:
  netdiag COMMAND [flags]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run 'netdiag COMMAND --help' for a command's flags and examples.
Logs go to stderr; set NETDIAG_LOG_LEVEL=debug to see every step.
`)
}

func commandNames() string {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	return strings.Join(names, ", ")
}

func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "-help" }

func newLogger(w io.Writer) *slog.Logger { return logs.New(w) }

// newFlags makes a flag set whose --help prints the command's own usage text
// followed by its flags.
func (c *cli) newFlags(name, text string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprint(out, strings.TrimLeft(text, "\n"))
		fmt.Fprintln(out, "\nFlags:")
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags that may come before, between or after positional
// arguments ("lab fault NAME --instance x"), and returns the positionals. It
// returns exitOK with a nil error for --help, after printing the usage to
// stdout.
func (c *cli) parse(fs *flag.FlagSet, args []string) ([]string, int, error) {
	// The flag package would print the whole usage after any mistake; a
	// mistake gets one line that says what was wrong, --help the usage.
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(c.stdout)
				fs.Usage()
				return nil, exitOK, err
			}
			fmt.Fprintf(c.stderr, "netdiag %s: %v (see 'netdiag %s --help')\n", fs.Name(), err, fs.Name())
			return nil, exitUsage, err
		}
		if fs.NArg() == 0 {
			return pos, exitOK, nil
		}
		rest := fs.Args()
		if rest[0] == "--" {
			return append(pos, rest[1:]...), exitOK, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError prints a one-line bad-input message and returns exit code 2.
func (c *cli) usageError(cmd string, format string, a ...any) int {
	fmt.Fprintf(c.stderr, "netdiag %s: %s\n", cmd, fmt.Sprintf(format, a...))
	return exitUsage
}

// failure prints an internal failure and returns exit code 1.
func (c *cli) failure(cmd string, err error) int {
	fmt.Fprintf(c.stderr, "netdiag %s: %v\n", cmd, err)
	return exitInternal
}

// outputFlag adds -o/--output with the accepted formats.
func outputFlag(fs *flag.FlagSet, def string, accepted ...string) *string {
	o := new(string)
	*o = def
	help := "output format: " + strings.Join(accepted, ", ")
	fs.StringVar(o, "o", def, help)
	fs.StringVar(o, "output", def, help)
	return o
}

func checkOutput(o string, accepted ...string) error {
	for _, a := range accepted {
		if o == a {
			return nil
		}
	}
	return fmt.Errorf("unknown output format %q (accepted: %s)", o, strings.Join(accepted, ", "))
}
