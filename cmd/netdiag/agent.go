package main

import "github.com/netdiag/netdiag/internal/agentcmd"

// runAgent is the node agent; the DaemonSet runs the same command as the
// slim netdiag-agent binary.
func runAgent(c *cli, args []string) int { return agentcmd.Run(args, c.stdout, c.stderr, c.log) }
