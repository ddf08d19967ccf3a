// Package deploy holds netdiag's deployment examples, which are not Go: the
// Slack app manifests (slack-app.yaml, slack-app-socket.yaml), the
// Alertmanager receiver (alertmanager/) and the Prometheus alerting rules
// with their netdiag mappings (prometheus/). Its tests load each of them with
// the loader that will read it in production (Alertmanager's, Prometheus',
// netdiag's own config and alert mapping) so that an example that no longer
// loads, routes or maps fails the build.
package deploy
