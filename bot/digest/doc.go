// Package digest is netdiag's scheduled health digest: when one is due (a
// cron schedule in a time zone, with one catch-up after downtime), what it
// says (findings by class and cause since the last one and the trend against
// the period before, the targets, namespaces and nodes that recur, the
// inconclusive findings, the alert threads still open, an optional sweep of
// the nodes) and its chart (findings per day by class, as PNG).
//
// It knows nothing about the store or Slack: the caller fills a Period from
// the store, calls Build, posts Markdown and ChartPNG, and records the slot
// as the digest's last run when the post succeeded.
package digest
