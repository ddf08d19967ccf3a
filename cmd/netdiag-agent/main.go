// Command netdiag-agent is netdiag's node agent alone: `netdiag agent` in
// a binary without the bot, the CLI and client-go, so that the agent on
// every node idles in a third of the memory. See `netdiag-agent --help`.
package main

import (
	"os"

	"github.com/netdiag/netdiag/internal/agentcmd"
	"github.com/netdiag/netdiag/internal/logs"
)

func main() {
	os.Exit(agentcmd.Run(os.Args[1:], os.Stdout, os.Stderr, logs.New(os.Stderr)))
}
