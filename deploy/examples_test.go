package deploy_test

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	amconfig "github.com/prometheus/alertmanager/config"
	"github.com/prometheus/alertmanager/dispatch"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	promparser "github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/template"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"sigs.k8s.io/yaml"

	"github.com/netdiag/netdiag/bot"
	"github.com/netdiag/netdiag/config"
)

// The example files, relative to this package.
const (
	slackHTTPFile     = "slack-app.yaml"
	slackSocketFile   = "slack-app-socket.yaml"
	alertmanagerFile  = "alertmanager/alertmanager.yml"
	rulesFile         = "prometheus/netdiag-rules.yaml"
	mappingsFile      = "prometheus/netdiag-mappings.yaml"
	botSources        = "../bot"
	exampleOrigin     = "https://netdiag.example.com"
	webhookURL        = "http://netdiag.netdiag.svc:8080/alertmanager"
	netdiagReceiver   = "netdiag"
	defaultReceiver   = "default"
	slashCommand      = "/netdiag"
	commandsPath      = "/slack/commands"
	interactionsPath  = "/slack/interactions"
	alertmanagerPath  = "/alertmanager"
	maxBytesPerAlert  = 16 << 10 // a generous alert: labels, annotations, generatorURL
	evalStep          = 30 * time.Second
	sampleStep        = 15 * time.Second
	sampleSpan        = 45 * time.Minute
	sampleStartUnixTS = 1_767_225_600 // 2026-01-01T00:00:00Z
)

// ---------------------------------------------------------------------------
// Slack app manifests

// slackManifest is the part of Slack's app manifest schema the examples use.
// Decoding is strict: a field it does not know (a typo, a setting added
// without a test) fails.
type slackManifest struct {
	Metadata struct {
		MajorVersion int `json:"major_version"`
		MinorVersion int `json:"minor_version"`
	} `json:"_metadata"`
	DisplayInformation struct {
		Name            string `json:"name"`
		Description     string `json:"description"`
		LongDescription string `json:"long_description"`
		BackgroundColor string `json:"background_color"`
	} `json:"display_information"`
	Features struct {
		BotUser struct {
			DisplayName  string `json:"display_name"`
			AlwaysOnline bool   `json:"always_online"`
		} `json:"bot_user"`
		SlashCommands []slackCommand `json:"slash_commands"`
	} `json:"features"`
	OAuthConfig struct {
		Scopes struct {
			Bot []string `json:"bot"`
		} `json:"scopes"`
	} `json:"oauth_config"`
	Settings struct {
		Interactivity struct {
			IsEnabled  bool   `json:"is_enabled"`
			RequestURL string `json:"request_url"`
		} `json:"interactivity"`
		OrgDeployEnabled     bool  `json:"org_deploy_enabled"`
		SocketModeEnabled    *bool `json:"socket_mode_enabled"`
		TokenRotationEnabled bool  `json:"token_rotation_enabled"`
	} `json:"settings"`
}

type slackCommand struct {
	Command      string `json:"command"`
	URL          string `json:"url"`
	Description  string `json:"description"`
	UsageHint    string `json:"usage_hint"`
	ShouldEscape *bool  `json:"should_escape"`
}

func loadManifest(t *testing.T, file string) slackManifest {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var m slackManifest
	if err := yaml.UnmarshalStrict(b, &m); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return m
}

// slackMethodScopes are the bot scopes of the Slack Web API methods the bot
// calls through slack-go (SlackChat's c.API.X calls in package bot). A call
// that is not listed fails TestSlackScopesAreWhatTheBotCalls: add it with its
// scope, and the scope to both manifests.
var slackMethodScopes = map[string]string{
	"PostMessageContext":         "chat:write",      // chat.postMessage
	"UpdateMessageContext":       "chat:write",      // chat.update
	"PostEphemeralContext":       "chat:write",      // chat.postEphemeral
	"UploadFileContext":          "files:write",     // files.getUploadURLExternal + files.completeUploadExternal
	"GetUserGroupMembersContext": "usergroups:read", // usergroups.users.list
}

// commandScope is the scope of the slash command itself.
const commandScope = "commands"

// wantScopes is the bot's scopes: exactly these, and nothing more.
var wantScopes = []string{"chat:write", "commands", "files:write", "usergroups:read"}

// Slack's limits on manifest fields (its app manifest reference).
const (
	maxAppName        = 35
	maxAppDescription = 140
	minLongDesc       = 174
	maxLongDesc       = 4000
	maxBotName        = 80
	maxCommand        = 32
	maxCommandDesc    = 2000
	maxUsageHint      = 1000
)

func checkManifestCommon(t *testing.T, file string, m slackManifest) {
	t.Helper()
	if m.Metadata.MajorVersion != 1 {
		t.Errorf("%s: _metadata.major_version %d, want 1", file, m.Metadata.MajorVersion)
	}
	d := m.DisplayInformation
	if d.Name == "" || utf8.RuneCountInString(d.Name) > maxAppName {
		t.Errorf("%s: display_information.name %q: 1 to %d characters", file, d.Name, maxAppName)
	}
	if d.Description == "" || utf8.RuneCountInString(d.Description) > maxAppDescription {
		t.Errorf("%s: display_information.description: 1 to %d characters, got %d", file, maxAppDescription, utf8.RuneCountInString(d.Description))
	}
	if n := utf8.RuneCountInString(d.LongDescription); d.LongDescription != "" && (n < minLongDesc || n > maxLongDesc) {
		t.Errorf("%s: display_information.long_description: %d to %d characters, got %d", file, minLongDesc, maxLongDesc, n)
	}
	if d.BackgroundColor != "" && !regexp.MustCompile(`^#[0-9a-fA-F]{6}$`).MatchString(d.BackgroundColor) {
		t.Errorf("%s: display_information.background_color %q: give #RRGGBB", file, d.BackgroundColor)
	}
	if b := m.Features.BotUser.DisplayName; b == "" || utf8.RuneCountInString(b) > maxBotName {
		t.Errorf("%s: features.bot_user.display_name %q: 1 to %d characters", file, b, maxBotName)
	}

	if len(m.Features.SlashCommands) != 1 {
		t.Fatalf("%s: %d slash commands, want exactly %s", file, len(m.Features.SlashCommands), slashCommand)
	}
	c := m.Features.SlashCommands[0]
	if c.Command != slashCommand {
		t.Errorf("%s: slash command %q, want %q", file, c.Command, slashCommand)
	}
	if len(c.Command) > maxCommand {
		t.Errorf("%s: slash command %q is over %d characters", file, c.Command, maxCommand)
	}
	if c.Description == "" || utf8.RuneCountInString(c.Description) > maxCommandDesc {
		t.Errorf("%s: slash command description: 1 to %d characters", file, maxCommandDesc)
	}
	if utf8.RuneCountInString(c.UsageHint) > maxUsageHint {
		t.Errorf("%s: usage_hint is over %d characters", file, maxUsageHint)
	}
	if c.ShouldEscape == nil || *c.ShouldEscape {
		t.Errorf("%s: should_escape must be given and false: the bot parses the raw text", file)
	}
	// The usage hint lists one form per command the parser takes: the
	// access verbs (capture-payload is a permission, not a command) and help.
	var hinted []string
	for _, form := range strings.Split(c.UsageHint, " | ") {
		verb, _, _ := strings.Cut(strings.TrimSpace(form), " ")
		hinted = append(hinted, verb)
	}
	var verbs []string
	for _, v := range config.Verbs {
		if v != "capture-payload" {
			verbs = append(verbs, v)
		}
	}
	verbs = append(verbs, "help")
	slices.Sort(hinted)
	slices.Sort(verbs)
	if !slices.Equal(hinted, verbs) {
		t.Errorf("%s: usage_hint forms start with %v, want one form for each of %v", file, hinted, verbs)
	}
	for _, v := range verbs {
		if _, err := bot.ParseCommand(v); err != nil && strings.Contains(err.Error(), "unknown command") {
			t.Errorf("usage_hint verb %q: the bot does not know it: %v", v, err)
		}
	}

	scopes := slices.Clone(m.OAuthConfig.Scopes.Bot)
	slices.Sort(scopes)
	if !slices.Equal(scopes, wantScopes) {
		t.Errorf("%s: bot scopes %v, want exactly %v", file, m.OAuthConfig.Scopes.Bot, wantScopes)
	}
	if !m.Settings.Interactivity.IsEnabled {
		t.Errorf("%s: settings.interactivity.is_enabled: the finding's buttons need it", file)
	}
	if m.Settings.SocketModeEnabled == nil {
		t.Errorf("%s: settings.socket_mode_enabled: say true or false", file)
	}
	if m.Settings.TokenRotationEnabled {
		t.Errorf("%s: token_rotation_enabled: netdiag reads one long-lived bot token; it does not refresh rotating tokens", file)
	}
}

func TestSlackManifestHTTP(t *testing.T) {
	m := loadManifest(t, slackHTTPFile)
	checkManifestCommon(t, slackHTTPFile, m)
	if m.Settings.SocketModeEnabled == nil || *m.Settings.SocketModeEnabled {
		t.Errorf("socket_mode_enabled must be false in the HTTP manifest")
	}
	served := botRoutes(t)
	for _, c := range []struct{ field, got, path string }{
		{"features.slash_commands[0].url", m.Features.SlashCommands[0].URL, commandsPath},
		{"settings.interactivity.request_url", m.Settings.Interactivity.RequestURL, interactionsPath},
	} {
		if c.got != exampleOrigin+c.path {
			t.Errorf("%s %q, want %q", c.field, c.got, exampleOrigin+c.path)
		}
		if !served[c.path] {
			t.Errorf("%s: package bot serves no %s (it serves %v)", c.field, c.path, slices.Sorted(maps.Keys(served)))
		}
	}
}

func TestSlackManifestSocket(t *testing.T) {
	sock := loadManifest(t, slackSocketFile)
	checkManifestCommon(t, slackSocketFile, sock)
	if sock.Settings.SocketModeEnabled == nil || !*sock.Settings.SocketModeEnabled {
		t.Errorf("socket_mode_enabled must be true in the Socket Mode manifest")
	}
	if u := sock.Features.SlashCommands[0].URL; u != "" {
		t.Errorf("slash command url %q: Socket Mode takes none", u)
	}
	if u := sock.Settings.Interactivity.RequestURL; u != "" {
		t.Errorf("interactivity request_url %q: Socket Mode takes none", u)
	}
	// Apart from the URLs and the mode, the two manifests are the same app.
	httpm := loadManifest(t, slackHTTPFile)
	httpm.Features.SlashCommands[0].URL = ""
	httpm.Settings.Interactivity.RequestURL = ""
	httpm.Settings.SocketModeEnabled = sock.Settings.SocketModeEnabled
	if !reflect.DeepEqual(httpm, sock) {
		t.Errorf("%s and %s differ in more than the URLs and socket_mode_enabled:\nhttp:   %+v\nsocket: %+v", slackHTTPFile, slackSocketFile, httpm, sock)
	}
}

// TestSlackScopesAreWhatTheBotCalls reads package bot's sources for the Slack
// Web API calls it makes and checks that the manifests' scopes are exactly
// the scopes of those calls and of the slash command.
func TestSlackScopesAreWhatTheBotCalls(t *testing.T) {
	called := map[string]bool{}
	forEachBotFile(t, func(fset *token.FileSet, f *ast.File) {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.SelectorExpr); ok && x.Sel.Name == "API" {
				if _, known := slackMethodScopes[sel.Sel.Name]; !known {
					t.Errorf("%s: the bot calls the Slack API's %s, which this test does not know: add it to slackMethodScopes with its scope, and the scope to both manifests",
						fset.Position(call.Pos()), sel.Sel.Name)
				}
				called[sel.Sel.Name] = true
			}
			return true
		})
	})
	need := map[string]bool{commandScope: true}
	for method := range slackMethodScopes {
		if !called[method] {
			t.Errorf("the bot no longer calls %s: drop it from slackMethodScopes, and its scope from the manifests if nothing else needs it", method)
			continue
		}
		need[slackMethodScopes[method]] = true
	}
	got := slices.Sorted(maps.Keys(need))
	if !slices.Equal(got, wantScopes) {
		t.Errorf("the bot's calls need the scopes %v; the manifests grant %v", got, wantScopes)
	}
}

func forEachBotFile(t *testing.T, fn func(*token.FileSet, *ast.File)) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(botSources, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s (%v)", botSources, err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		fn(fset, f)
	}
}

// botRoutes are the paths package bot's HTTP server registers
// (mux.HandleFunc("/path", ...) and mux.Handle).
func botRoutes(t *testing.T) map[string]bool {
	t.Helper()
	routes := map[string]bool{}
	forEachBotFile(t, func(_ *token.FileSet, f *ast.File) {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "HandleFunc" && sel.Sel.Name != "Handle") {
				return true
			}
			if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if p, err := strconv.Unquote(lit.Value); err == nil {
					routes[p] = true
				}
			}
			return true
		})
	})
	return routes
}

// ---------------------------------------------------------------------------
// Alertmanager

func loadAlertmanager(t *testing.T) (*amconfig.Config, *dispatch.Route) {
	t.Helper()
	cfg, err := amconfig.LoadFile(alertmanagerFile)
	if err != nil {
		t.Fatalf("%s: %v", alertmanagerFile, err)
	}
	return cfg, dispatch.NewRoute(cfg.Route, nil)
}

// receiversOf are the receivers Alertmanager's router gives the labels.
func receiversOf(root *dispatch.Route, ls map[string]string) []string {
	set := model.LabelSet{}
	for k, v := range ls {
		set[model.LabelName(k)] = model.LabelValue(v)
	}
	var out []string
	for _, r := range root.Match(set) {
		out = append(out, r.RouteOpts.Receiver)
	}
	return out
}

func TestAlertmanagerExample(t *testing.T) {
	cfg, root := loadAlertmanager(t)
	var rc *amconfig.Receiver
	for i := range cfg.Receivers {
		if cfg.Receivers[i].Name == netdiagReceiver {
			rc = &cfg.Receivers[i]
		}
	}
	if rc == nil {
		t.Fatalf("no receiver %q", netdiagReceiver)
	}
	if len(rc.WebhookConfigs) != 1 {
		t.Fatalf("receiver %q: %d webhook_configs, want 1", netdiagReceiver, len(rc.WebhookConfigs))
	}
	wc := rc.WebhookConfigs[0]
	if wc.URL == nil || wc.URL.URL == nil || wc.URL.String() != webhookURL {
		t.Errorf("webhook url: want %s", webhookURL)
	} else if !botRoutes(t)[wc.URL.Path] || wc.URL.Path != alertmanagerPath {
		t.Errorf("webhook url path %q: the bot's webhook is %s", wc.URL.Path, alertmanagerPath)
	}
	if !wc.SendResolved() {
		t.Errorf("send_resolved: want true, so that the thread says when alerts resolve")
	}
	if wc.MaxAlerts == 0 || wc.MaxAlerts*maxBytesPerAlert > bot.MaxWebhookBody {
		t.Errorf("max_alerts %d: give 1 to %d, so that a notification stays under the bot's %d-byte limit", wc.MaxAlerts, bot.MaxWebhookBody/maxBytesPerAlert, bot.MaxWebhookBody)
	}
	if wc.Timeout <= 0 || wc.Timeout > time.Minute {
		t.Errorf("timeout %s: give a bound (the bot answers once the alerts are on disk)", wc.Timeout)
	}
	hc := wc.HTTPConfig
	if hc == nil || hc.Authorization == nil || hc.Authorization.Type != "Bearer" || hc.Authorization.CredentialsFile == "" || hc.Authorization.Credentials != "" {
		t.Errorf("http_config.authorization: want type Bearer with credentials_file (never the token inline)")
	}

	// The netdiag route: group per alert name and namespace, a chat pace.
	netdiagRoutes := 0
	for _, r := range root.Routes {
		if r.RouteOpts.Receiver != netdiagReceiver {
			continue
		}
		netdiagRoutes++
		gb := slices.Sorted(maps.Keys(r.RouteOpts.GroupBy))
		if !slices.Equal(gb, []model.LabelName{"alertname", "namespace"}) || r.RouteOpts.GroupByAll {
			t.Errorf("netdiag route group_by %v, want [alertname namespace]: one thread per alert name and namespace", gb)
		}
		if !r.Continue {
			t.Errorf("netdiag route: continue: true, so that the routes after it still get the alerts")
		}
		o := r.RouteOpts
		if o.GroupWait < 10*time.Second || o.GroupWait > 2*time.Minute || o.GroupInterval < time.Minute || o.GroupInterval > 10*time.Minute || o.RepeatInterval < time.Hour {
			t.Errorf("netdiag route: group_wait %s, group_interval %s, repeat_interval %s: want 10s-2m, 1m-10m, at least 1h", o.GroupWait, o.GroupInterval, o.RepeatInterval)
		}
	}
	if netdiagRoutes != 1 {
		t.Errorf("%d routes to %q, want 1", netdiagRoutes, netdiagReceiver)
	}

	// A network alert reaches netdiag and, thanks to continue, the routes
	// after it; any other alert does not reach netdiag.
	network := map[string]string{"alertname": "NetdiagPodProbeFailed", "netdiag": "true", "namespace": "shop", "pod": "web-0"}
	if got := receiversOf(root, network); !slices.Equal(got, []string{netdiagReceiver, defaultReceiver}) {
		t.Errorf("a network alert goes to %v, want [%s %s]", got, netdiagReceiver, defaultReceiver)
	}
	other := map[string]string{"alertname": "Watchdog", "severity": "none"}
	if got := receiversOf(root, other); slices.Contains(got, netdiagReceiver) {
		t.Errorf("an alert without netdiag=\"true\" goes to %v", got)
	}
}

// ---------------------------------------------------------------------------
// Prometheus rules and netdiag mappings

// sampleSeries is one series of a rule's sample: its labels in PromQL form
// and its value at t seconds after the sample's start (sampled every 15 s
// for 45 minutes).
type sampleSeries struct {
	metric string
	value  func(t float64) float64
}

func gauge(v float64) func(float64) float64 { return func(float64) float64 { return v } }

// counter grows at perSec per second.
func counter(perSec float64) func(float64) float64 {
	return func(t float64) float64 { return perSec * t }
}

// buckets is a classic histogram: one counter per le, growing at the given
// cumulative rates per second.
func buckets(name, lbls string, rates map[string]float64) []sampleSeries {
	var out []sampleSeries
	for _, le := range slices.Sorted(maps.Keys(rates)) {
		out = append(out, sampleSeries{fmt.Sprintf(`%s{%s, le=%q}`, name, lbls, le), counter(rates[le])})
	}
	return out
}

// ruleCase is a sample of the series a rule reads: failing (the rule must
// fire, for its whole `for`, with exactly one alert) and healthy (no rule of
// the file may fire). The alert, with the rule's labels and expanded
// annotations, must go to the netdiag receiver and map, through netdiag's
// MapAlert and the mappings file, to want (the question as a command).
type ruleCase struct {
	name    string
	rule    string
	failing []sampleSeries
	healthy []sampleSeries
	want    string
	// mapped: the question comes from netdiag-mappings.yaml; without it the
	// alert must not map to want (the mapping is needed). Otherwise the
	// defaults give want, with or without the mappings.
	mapped bool
}

// Labels the series carry in a kube-prometheus-like setup.
const (
	proberA  = `prober_namespace="monitoring", prober_pod="blackbox-exporter-7c9d8f6b5-x2x4q"`
	proberB  = `prober_namespace="monitoring", prober_pod="blackbox-exporter-7c9d8f6b5-k8m2n"`
	coredns1 = `job="coredns", namespace="kube-system", service="kube-dns", pod="coredns-5d78c9869d-abcde", instance="10.244.0.5:9153", server="dns://:53", zone="."`
	coredns2 = `job="coredns", namespace="kube-system", service="kube-dns", pod="coredns-5d78c9869d-fghij", instance="10.244.1.6:9153", server="dns://:53", zone="."`
	kproxy1  = `job="kube-proxy", namespace="kube-system", pod="kube-proxy-4gq7z", instance="10.0.1.11:10249"`
	kproxy2  = `job="kube-proxy", namespace="kube-system", pod="kube-proxy-8xkq2", instance="10.0.1.12:10249"`
	nodeexp1 = `job="node-exporter", namespace="monitoring", pod="node-exporter-2lk9d", container="node-exporter", instance="10.0.1.11:9100"`
	nodeexp2 = `job="node-exporter", namespace="monitoring", pod="node-exporter-7xk2p", container="node-exporter", instance="10.0.1.12:9100"`
	ksm      = `job="kube-state-metrics", namespace="monitoring", pod="kube-state-metrics-6f7d8c9b5-q2w3e", instance="10.244.0.8:8080"`
)

// nodeInfo is kube-state-metrics' kube_node_info of the two nodes.
var nodeInfo = []sampleSeries{
	{`kube_node_info{` + ksm + `, node="worker-1", internal_ip="10.0.1.11", kernel_version="6.8.0-45-generic"}`, gauge(1)},
	{`kube_node_info{` + ksm + `, node="worker-2", internal_ip="10.0.1.12", kernel_version="6.8.0-45-generic"}`, gauge(1)},
}

// uname is node-exporter's node_uname_info of the two nodes.
var uname = []sampleSeries{
	{`node_uname_info{` + nodeexp1 + `, nodename="worker-1", sysname="Linux", release="6.8.0-45-generic"}`, gauge(1)},
	{`node_uname_info{` + nodeexp2 + `, nodename="worker-2", sysname="Linux", release="6.8.0-45-generic"}`, gauge(1)},
}

func with(base []sampleSeries, more ...sampleSeries) []sampleSeries {
	return append(slices.Clone(base), more...)
}

func lastSync(stale bool) func(float64) float64 {
	return func(t float64) float64 {
		if stale {
			return sampleStartUnixTS // never synced since the sample started
		}
		return sampleStartUnixTS + t - 20
	}
}

func netSeries(exporter, device string, errsPerSec float64) []sampleSeries {
	l := exporter + `, device="` + device + `"`
	return []sampleSeries{
		{`node_network_receive_errs_total{` + l + `}`, counter(errsPerSec)},
		{`node_network_transmit_errs_total{` + l + `}`, counter(0)},
		{`node_network_receive_packets_total{` + l + `}`, counter(1000)},
		{`node_network_transmit_packets_total{` + l + `}`, counter(500)},
	}
}

var ruleCases = []ruleCase{
	{
		// role: endpoints discovery: namespace, service and the backend pod;
		// the Service is the target, not the pod.
		name: "service discovered", rule: "NetdiagServiceProbeFailed",
		failing: []sampleSeries{
			{`probe_success{job="blackbox-endpoints", module="http_2xx", instance="10.244.1.7:8080", namespace="shop", service="web", pod="web-5d9c7b8f6-abcde"}`, gauge(0)},
			{`probe_success{job="blackbox-endpoints", module="http_2xx", instance="10.244.2.3:5432", namespace="shop", service="db", pod="db-0"}`, gauge(1)},
		},
		healthy: []sampleSeries{
			{`probe_success{job="blackbox-endpoints", module="http_2xx", instance="10.244.1.7:8080", namespace="shop", service="web", pod="web-5d9c7b8f6-abcde"}`, gauge(1)},
		},
		want: "svc shop/web",
	},
	{
		// A static probe (Prometheus Operator Probe: its own namespace label)
		// of a Service's DNS name: namespace and service come from the URL.
		name: "service static URL", rule: "NetdiagServiceProbeFailed",
		failing: []sampleSeries{
			{`probe_success{job="probe/monitoring/shop", namespace="monitoring", module="http_2xx", instance="http://cart.shop.svc.cluster.local:8080/healthz"}`, gauge(0)},
		},
		healthy: []sampleSeries{
			{`probe_success{job="probe/monitoring/shop", namespace="monitoring", module="http_2xx", instance="http://cart.shop.svc.cluster.local:8080/healthz"}`, gauge(1)},
		},
		want: "svc shop/cart",
	},
	{
		name: "pod", rule: "NetdiagPodProbeFailed",
		failing: []sampleSeries{
			{`probe_success{job="blackbox-pods", module="tcp_connect", instance="10.244.2.9:8080", namespace="shop", pod="web-5d9c7b8f6-fghij"}`, gauge(0)},
			{`probe_success{job="blackbox-pods", module="tcp_connect", instance="10.244.1.7:8080", namespace="shop", pod="web-5d9c7b8f6-abcde"}`, gauge(1)},
		},
		healthy: []sampleSeries{
			{`probe_success{job="blackbox-pods", module="tcp_connect", instance="10.244.2.9:8080", namespace="shop", pod="web-5d9c7b8f6-fghij"}`, gauge(1)},
		},
		want: "pod shop/web-5d9c7b8f6-fghij",
	},
	{
		// One exporter pod fails (the other reaches the target): HTTPS
		// without a port is port 443.
		name: "egress https", rule: "NetdiagEgressProbeFailed", mapped: true,
		failing: []sampleSeries{
			{`probe_success{job="blackbox-egress-api", module="http_2xx", instance="https://api.example.com/healthz", ` + proberA + `}`, gauge(0)},
			{`probe_success{job="blackbox-egress-api", module="http_2xx", instance="https://api.example.com/healthz", ` + proberB + `}`, gauge(1)},
		},
		healthy: []sampleSeries{
			{`probe_success{job="blackbox-egress-api", module="http_2xx", instance="https://api.example.com/healthz", ` + proberA + `}`, gauge(1)},
		},
		want: "pod monitoring/blackbox-exporter-7c9d8f6b5-x2x4q to api.example.com:443",
	},
	{
		name: "egress http", rule: "NetdiagEgressProbeFailed", mapped: true,
		failing: []sampleSeries{
			{`probe_success{job="blackbox-egress-status", module="http_2xx", instance="http://status.example.com/", ` + proberB + `}`, gauge(0)},
		},
		want: "pod monitoring/blackbox-exporter-7c9d8f6b5-k8m2n to status.example.com:80",
	},
	{
		name: "egress tcp", rule: "NetdiagEgressProbeFailed", mapped: true,
		failing: []sampleSeries{
			{`probe_success{job="blackbox-egress-db", module="tcp_connect", instance="db.example.com:5432", ` + proberA + `}`, gauge(0)},
		},
		want: "pod monitoring/blackbox-exporter-7c9d8f6b5-x2x4q to db.example.com:5432",
	},
	{
		// The DNS Service's name is a .svc instance, but a prober's series
		// is not a probe of that Service.
		name: "dns probe", rule: "NetdiagDNSProbeFailed", mapped: true,
		failing: []sampleSeries{
			{`probe_success{job="blackbox-dns", module="dns_kubernetes", instance="kube-dns.kube-system.svc.cluster.local:53", ` + proberA + `}`, gauge(0)},
			{`probe_success{job="blackbox-dns", module="dns_kubernetes", instance="kube-dns.kube-system.svc.cluster.local:53", ` + proberB + `}`, gauge(1)},
		},
		healthy: []sampleSeries{
			{`probe_success{job="blackbox-dns", module="dns_kubernetes", instance="kube-dns.kube-system.svc.cluster.local:53", ` + proberA + `}`, gauge(1)},
		},
		want: "pod monitoring/blackbox-exporter-7c9d8f6b5-x2x4q dns kubernetes.default.svc.cluster.local",
	},
	{
		// coredns-...-abcde answers 2 of 12 queries a second with SERVFAIL;
		// the other pod is fine.
		name: "coredns servfail", rule: "NetdiagCoreDNSServfail",
		failing: []sampleSeries{
			{`coredns_dns_responses_total{` + coredns1 + `, rcode="SERVFAIL"}`, counter(2)},
			{`coredns_dns_responses_total{` + coredns1 + `, rcode="NOERROR"}`, counter(10)},
			{`coredns_dns_responses_total{` + coredns2 + `, rcode="SERVFAIL"}`, counter(0.01)},
			{`coredns_dns_responses_total{` + coredns2 + `, rcode="NOERROR"}`, counter(10)},
		},
		healthy: []sampleSeries{
			{`coredns_dns_responses_total{` + coredns1 + `, rcode="SERVFAIL"}`, counter(0.01)},
			{`coredns_dns_responses_total{` + coredns1 + `, rcode="NOERROR"}`, counter(10)},
		},
		want: "pod kube-system/coredns-5d78c9869d-abcde",
	},
	{
		// p99 in the (1s, 2.5s] bucket against a healthy p99 under 100 ms.
		name: "coredns latency", rule: "NetdiagCoreDNSLatencyHigh", mapped: true,
		failing: with(
			buckets("coredns_dns_request_duration_seconds_bucket", coredns1+`, type="A"`,
				map[string]float64{"0.1": 1, "0.25": 2, "0.5": 3, "1": 5, "2.5": 9.95, "+Inf": 10}),
			buckets("coredns_dns_request_duration_seconds_bucket", coredns2+`, type="A"`,
				map[string]float64{"0.1": 1, "0.25": 2, "0.5": 3, "1": 5, "2.5": 9.95, "+Inf": 10})...),
		healthy: buckets("coredns_dns_request_duration_seconds_bucket", coredns1+`, type="A"`,
			map[string]float64{"0.1": 9.99, "0.25": 10, "0.5": 10, "1": 10, "2.5": 10, "+Inf": 10}),
		want: "svc kube-system/kube-dns",
	},
	{
		// kube-proxy on worker-2 (10.0.1.12) stopped syncing.
		name: "kube-proxy stale", rule: "NetdiagKubeProxyRulesStale",
		failing: with(nodeInfo,
			sampleSeries{`kubeproxy_sync_proxy_rules_last_timestamp_seconds{` + kproxy1 + `}`, lastSync(false)},
			sampleSeries{`kubeproxy_sync_proxy_rules_last_timestamp_seconds{` + kproxy2 + `}`, lastSync(true)}),
		healthy: with(nodeInfo,
			sampleSeries{`kubeproxy_sync_proxy_rules_last_timestamp_seconds{` + kproxy2 + `}`, lastSync(false)}),
		want: "node worker-2",
	},
	{
		// A sync every 30 s, nearly all of them taking 10-30 s on worker-2.
		name: "kube-proxy slow", rule: "NetdiagKubeProxySyncSlow",
		failing: with(with(nodeInfo,
			buckets("kubeproxy_sync_proxy_rules_duration_seconds_bucket", kproxy2,
				map[string]float64{"0.5": 0, "1": 0, "5": 0, "10": 0.0003, "30": 0.0333, "+Inf": 0.0333})...),
			buckets("kubeproxy_sync_proxy_rules_duration_seconds_bucket", kproxy1,
				map[string]float64{"0.5": 0.0333, "1": 0.0333, "5": 0.0333, "10": 0.0333, "30": 0.0333, "+Inf": 0.0333})...),
		healthy: with(nodeInfo,
			buckets("kubeproxy_sync_proxy_rules_duration_seconds_bucket", kproxy2,
				map[string]float64{"0.5": 0.0333, "1": 0.0333, "5": 0.0333, "10": 0.0333, "30": 0.0333, "+Inf": 0.0333})...),
		want: "node worker-2",
	},
	{
		name: "kube-proxy restore failing", rule: "NetdiagKubeProxyRestoreFailing",
		failing: with(nodeInfo,
			sampleSeries{`kubeproxy_sync_proxy_rules_iptables_restore_failures_total{` + kproxy2 + `}`, counter(0.01)},
			sampleSeries{`kubeproxy_sync_proxy_rules_iptables_restore_failures_total{` + kproxy1 + `}`, gauge(0)}),
		healthy: with(nodeInfo,
			// Old failures, none now.
			sampleSeries{`kubeproxy_sync_proxy_rules_iptables_restore_failures_total{` + kproxy2 + `}`, gauge(3)}),
		want: "node worker-2",
	},
	{
		// worker-2's table is 91.5% full, worker-1's 10%. The series carry
		// the node-exporter pod's namespace and pod, which must not win.
		name: "conntrack", rule: "NetdiagConntrackTableFull",
		failing: with(uname,
			sampleSeries{`node_nf_conntrack_entries{` + nodeexp2 + `}`, gauge(240000)},
			sampleSeries{`node_nf_conntrack_entries_limit{` + nodeexp2 + `}`, gauge(262144)},
			sampleSeries{`node_nf_conntrack_entries{` + nodeexp1 + `}`, gauge(26000)},
			sampleSeries{`node_nf_conntrack_entries_limit{` + nodeexp1 + `}`, gauge(262144)}),
		healthy: with(uname,
			sampleSeries{`node_nf_conntrack_entries{` + nodeexp2 + `}`, gauge(26000)},
			sampleSeries{`node_nf_conntrack_entries_limit{` + nodeexp2 + `}`, gauge(262144)}),
		want: "node worker-2",
	},
	{
		// eth0 of worker-2: 20 errors in 1500 packets a second (1.3%). A pod
		// veth with errors is left out.
		name: "node network errors", rule: "NetdiagNodeNetworkErrors",
		failing: with(with(with(uname, netSeries(nodeexp2, "eth0", 20)...), netSeries(nodeexp2, "veth3a1f9c2", 500)...), netSeries(nodeexp1, "eth0", 0.1)...),
		healthy: with(with(uname, netSeries(nodeexp2, "eth0", 0.1)...), netSeries(nodeexp2, "veth3a1f9c2", 500)...),
		want:    "node worker-2",
	},
}

// memStorage is a storage.Queryable over sample series: enough for the
// PromQL engine, without a TSDB.
type memStorage struct{ series []storage.Series }

func newMemStorage(t *testing.T, ss []sampleSeries) storage.Queryable {
	t.Helper()
	m := &memStorage{}
	seen := map[string]bool{}
	for _, s := range ss {
		lset, err := promparser.ParseMetric(s.metric)
		if err != nil {
			t.Fatalf("sample series %s: %v", s.metric, err)
		}
		if seen[lset.String()] {
			t.Fatalf("sample series %s given twice", lset)
		}
		seen[lset.String()] = true
		var samples []chunks.Sample
		for d := time.Duration(0); d <= sampleSpan; d += sampleStep {
			samples = append(samples, floatSample{t: sampleStart().Add(d).UnixMilli(), f: s.value(d.Seconds())})
		}
		m.series = append(m.series, storage.NewListSeries(lset, samples))
	}
	slices.SortFunc(m.series, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
	return &storage.MockQueryable{MockQuerier: &storage.MockQuerier{SelectMockFunction: m.sel}}
}

func (m *memStorage) sel(_ bool, _ *storage.SelectHints, matchers ...*labels.Matcher) storage.SeriesSet {
	var out []storage.Series
	for _, s := range m.series {
		if slices.ContainsFunc(matchers, func(ma *labels.Matcher) bool { return !ma.Matches(s.Labels().Get(ma.Name)) }) {
			continue
		}
		out = append(out, s)
	}
	return &seriesSet{series: out}
}

type seriesSet struct {
	series []storage.Series
	i      int
}

func (s *seriesSet) Next() bool                      { s.i++; return s.i <= len(s.series) }
func (s *seriesSet) At() storage.Series              { return s.series[s.i-1] }
func (*seriesSet) Err() error                        { return nil }
func (*seriesSet) Warnings() annotations.Annotations { return nil }

type floatSample struct {
	t int64
	f float64
}

func (s floatSample) T() int64                    { return s.t }
func (s floatSample) F() float64                  { return s.f }
func (floatSample) H() *histogram.Histogram       { return nil }
func (floatSample) FH() *histogram.FloatHistogram { return nil }
func (floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample         { return s }

func sampleStart() time.Time { return time.Unix(sampleStartUnixTS, 0) }
func sampleEnd() time.Time   { return sampleStart().Add(sampleSpan) }

func newEngine() *promql.Engine {
	return promql.NewEngine(promql.EngineOpts{MaxSamples: 10_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
}

func query(t *testing.T, eng *promql.Engine, q storage.Queryable, expr string, ts time.Time) promql.Vector {
	t.Helper()
	qry, err := eng.NewInstantQuery(context.Background(), q, nil, expr, ts)
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	defer qry.Close()
	res := qry.Exec(context.Background())
	if res.Err != nil {
		t.Fatalf("%s at %s: %v", expr, ts, res.Err)
	}
	v, err := res.Vector()
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// alert is what Prometheus sends for one element of a rule's result: the
// series' labels without __name__, the rule's labels (expanded) and
// alertname, and the rule's annotations expanded.
type alert struct {
	labels, annotations map[string]string
}

func alertOf(t *testing.T, r rulefmt.Rule, s promql.Sample, ts time.Time) alert {
	t.Helper()
	series := s.Metric.Map()
	delete(series, model.MetricNameLabel)
	a := alert{labels: maps.Clone(series), annotations: map[string]string{}}
	for k, v := range r.Labels {
		a.labels[k] = expandTemplate(t, r.Alert, v, series, s, ts)
	}
	a.labels[model.AlertNameLabel] = r.Alert
	for k, v := range r.Annotations {
		a.annotations[k] = expandTemplate(t, r.Alert, v, series, s, ts)
	}
	return a
}

var labelRef = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)

// expandTemplate expands a rule's label or annotation as Prometheus does
// (rules/alerting.go).
func expandTemplate(t *testing.T, rule, text string, series map[string]string, s promql.Sample, ts time.Time) string {
	t.Helper()
	defs := "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	data := template.AlertTemplateData(series, nil, "", s)
	e := template.NewTemplateExpander(context.Background(), defs+text, "__alert_"+rule, data, model.TimeFromUnixNano(ts.UnixNano()), nil, nil, nil)
	out, err := e.Expand()
	if err != nil {
		t.Fatalf("%s: expanding %q: %v", rule, text, err)
	}
	for _, m := range labelRef.FindAllStringSubmatch(text, -1) {
		if series[m[1]] == "" {
			t.Errorf("%s: %q names $labels.%s, which the alert does not have (it has %v)", rule, text, m[1], slices.Sorted(maps.Keys(series)))
		}
	}
	return out
}

func loadRules(t *testing.T) []rulefmt.Rule {
	t.Helper()
	// Strict (no unknown fields) and with the legacy label-name rules, so
	// that the file loads on a Prometheus configured either way. rulefmt
	// parses every expr and every label and annotation template.
	groups, errs := rulefmt.ParseFile(rulesFile, false, model.LegacyValidation)
	if len(errs) > 0 {
		t.Fatalf("%s: %v", rulesFile, errs)
	}
	var rules []rulefmt.Rule
	for _, g := range groups.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s: no rules", rulesFile)
	}
	return rules
}

func loadMappings(t *testing.T) []config.AlertMapping {
	t.Helper()
	b, err := os.ReadFile(mappingsFile)
	if err != nil {
		t.Fatal(err)
	}
	// The fragment goes through netdiag's own loader and validation; the
	// environment supplies what a whole config needs besides it.
	env := map[string]string{
		"NETDIAG_SLACK_BOT_TOKEN": "xoxb-test", "NETDIAG_SLACK_SIGNING_SECRET": "secret",
		"NETDIAG_ALERTMANAGER_BEARER": "token", "NETDIAG_SLACK_CHANNEL": "#netops",
	}
	c, err := config.Parse(b, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("%s: %v", mappingsFile, err)
	}
	if len(c.Alertmanager.Mappings) == 0 {
		t.Fatalf("%s: no alertmanager.mappings", mappingsFile)
	}
	return c.Alertmanager.Mappings
}

func TestRulesFile(t *testing.T) {
	rules := loadRules(t)
	for _, r := range rules {
		if r.Alert == "" {
			t.Errorf("recording rule %q: the file holds alerting rules only", r.Record)
			continue
		}
		expr, err := promparser.ParseExpr(r.Expr)
		if err != nil {
			t.Errorf("%s: %v", r.Alert, err)
		} else if expr.Type() != promparser.ValueTypeVector {
			t.Errorf("%s: expr is a %s, want an instant vector", r.Alert, expr.Type())
		}
		if r.For <= 0 {
			t.Errorf("%s: give a for: a single failed evaluation is not worth a diagnosis", r.Alert)
		}
		if r.Labels["netdiag"] != "true" || r.Labels["severity"] == "" {
			t.Errorf("%s: labels %v: want netdiag: \"true\" (netdiag's route) and a severity", r.Alert, r.Labels)
		}
		if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("%s: give a summary and a description (the thread shows the summary)", r.Alert)
		}
		if !strings.HasPrefix(r.Alert, "Netdiag") {
			t.Errorf("%s: name the file's alerts Netdiag...", r.Alert)
		}
	}
	// Every rule has a sample, and every sample a rule.
	cased := map[string]bool{}
	for _, c := range ruleCases {
		cased[c.rule] = true
		if !slices.ContainsFunc(rules, func(r rulefmt.Rule) bool { return r.Alert == c.rule }) {
			t.Errorf("case %q: no rule %s in %s", c.name, c.rule, rulesFile)
		}
	}
	for _, r := range rules {
		if !cased[r.Alert] {
			t.Errorf("%s: no sample in ruleCases: add one (the series it reads, failing and healthy, and the target it must map to)", r.Alert)
		}
	}
}

// TestRulesFireRouteAndMap evaluates every rule on its samples with the
// PromQL engine and follows each alert to netdiag's question.
func TestRulesFireRouteAndMap(t *testing.T) {
	rules := loadRules(t)
	mappings := loadMappings(t)
	_, root := loadAlertmanager(t)
	eng := newEngine()
	byName := map[string]rulefmt.Rule{}
	for _, r := range rules {
		byName[r.Alert] = r
	}
	for _, c := range ruleCases {
		t.Run(c.name, func(t *testing.T) {
			r, ok := byName[c.rule]
			if !ok {
				t.Fatalf("no rule %s", c.rule)
			}
			q := newMemStorage(t, c.failing)
			// It fires on the failing sample, and only it: no two rules of
			// the file alert on one symptom.
			for _, other := range rules {
				v := query(t, eng, q, other.Expr, sampleEnd())
				if other.Alert != c.rule && len(v) > 0 {
					t.Errorf("%s fires on %s's failing sample too: %v", other.Alert, c.rule, v)
				}
			}
			// It fires with one alert, the same one at every evaluation of its
			// `for` (a label that changed would restart it).
			var first map[string]string
			for ts := sampleEnd().Add(-time.Duration(r.For)); !ts.After(sampleEnd()); ts = ts.Add(evalStep) {
				v := query(t, eng, q, r.Expr, ts)
				if len(v) != 1 {
					t.Fatalf("at %s (end - %s): %d results, want 1 firing alert: %v", ts.Format(time.TimeOnly), sampleEnd().Sub(ts), len(v), v)
				}
				a := alertOf(t, r, v[0], ts)
				if first == nil {
					first = a.labels
				} else if !maps.Equal(first, a.labels) {
					t.Fatalf("the alert's labels change within its for: %v then %v", first, a.labels)
				}
			}
			v := query(t, eng, q, r.Expr, sampleEnd())
			a := alertOf(t, r, v[0], sampleEnd())
			t.Logf("alert %v %v", a.labels, a.annotations)

			// Alertmanager sends it to netdiag.
			if got := receiversOf(root, a.labels); !slices.Contains(got, netdiagReceiver) {
				t.Errorf("Alertmanager routes the alert to %v, not %s", got, netdiagReceiver)
			}

			// netdiag maps it to the question.
			question, channel, reason := bot.MapAlert(a.labels, a.annotations, mappings)
			if reason != "" {
				t.Fatalf("MapAlert: %s", reason)
			}
			if got := commandOf(question); got != c.want || channel != "" {
				t.Errorf("MapAlert: %q in channel %q, want %q in the default channel", got, channel, c.want)
			}
			wantTarget, _, _ := strings.Cut(c.want, " to ")
			wantTarget, _, _ = strings.Cut(wantTarget, " dns ")
			if question.Target() != wantTarget {
				t.Errorf("target %q, want %q", question.Target(), wantTarget)
			}
			if _, err := bot.ParseCommand(c.want); err != nil {
				t.Errorf("the bot cannot take %q: %v", c.want, err)
			}
			// The mapping is needed exactly when the case says so.
			bare, _, bareReason := bot.MapAlert(a.labels, a.annotations, nil)
			bareGot := bareReason
			if bareReason == "" {
				bareGot = commandOf(bare)
			}
			if c.mapped && bareGot == c.want {
				t.Errorf("the defaults alone give %q: %s's mapping in %s is not needed", bareGot, c.rule, mappingsFile)
			}
			if !c.mapped && bareGot != c.want {
				t.Errorf("without %s: %q, want %q from the defaults", mappingsFile, bareGot, c.want)
			}

			// On the healthy sample, no rule of the file fires.
			if c.healthy != nil {
				hq := newMemStorage(t, c.healthy)
				for _, other := range rules {
					if v := query(t, eng, hq, other.Expr, sampleEnd()); len(v) > 0 {
						t.Errorf("%s fires on %s's healthy sample: %v", other.Alert, c.rule, v)
					}
				}
			}
		})
	}
}

// TestMappingsAreUsed checks that every mapping of the fragment is the one
// that maps some rule's alert: no mapping is dead.
func TestMappingsAreUsed(t *testing.T) {
	mappings := loadMappings(t)
	for i, m := range mappings {
		alertname := m.Match["alertname"]
		if !slices.ContainsFunc(ruleCases, func(c ruleCase) bool { return c.mapped && c.rule == alertname }) {
			t.Errorf("%s: mappings[%d] (match %v) maps no rule of %s with a sample", mappingsFile, i, m.Match, rulesFile)
		}
	}
}

// commandOf is the question as the command that asks it.
func commandOf(q bot.Question) string {
	return bot.Command{Verb: q.Kind, Namespace: q.Namespace, Name: q.Name, To: q.To, DNS: q.DNS}.String()
}
