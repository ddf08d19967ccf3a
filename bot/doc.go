// Package bot is the chat side of netdiag: Slack slash commands and
// interactions, the Alertmanager webhook, rendering a Finding for a channel
// with its pcap, the digest schedule, and the HTTP server for health and
// metrics. It delivers what package diagnose finds.
package bot
