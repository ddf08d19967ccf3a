package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/netdiag/netdiag/bot/digest"
	"sigs.k8s.io/yaml"
)

// Config is netdiag's configuration: the bot's server, Slack, the
// Alertmanager webhook, the store, the agents, the digests and who may do
// what.
type Config struct {
	// Listen is the bot's HTTP address (/alertmanager, /slack/..., /healthz,
	// /readyz, /metrics).
	Listen       string        `json:"listen"`
	Store        Store         `json:"store"`
	Slack        Slack         `json:"slack"`
	Alertmanager Alertmanager  `json:"alertmanager"`
	Agents       Agents        `json:"agents"`
	Digests      []digest.Spec `json:"digests"`
	Access       []AccessRule  `json:"access"`
	// Diagnose is where diagnoses run: a cluster (default) or the lab.
	Diagnose Diagnose `json:"diagnose"`
}

// Diagnose says where and how many diagnoses run.
type Diagnose struct {
	// Lab, when set, answers on the fault lab of that instance (`netdiag
	// lab up` makes "demo") instead of a cluster: the demo and the tests.
	Lab string `json:"lab"`
	// Workers is how many diagnoses run at once (default 2).
	Workers int `json:"workers"`
	// Timeout bounds one diagnosis (default 2m).
	Timeout Duration `json:"timeout"`
	// Capture is how long a diagnosis captures packets for the pcap in
	// the thread when the command does not say (default 3s; "0s" for none).
	Capture *Duration `json:"capture"`
}

// Store is the bbolt file and what it keeps.
type Store struct {
	Path   string   `json:"path"`
	MaxAge Duration `json:"max_age"`
	// MaxBytes is the live data kept, in bytes.
	MaxBytes int64 `json:"max_bytes"`
}

// Slack is how the bot meets Slack: over HTTP (slash commands and
// interactions posted to it, verified with the signing secret) or Socket
// Mode (it connects out with the app token: no public ingress needed).
type Slack struct {
	Mode           string `json:"mode"`
	BotToken       Secret `json:"bot_token"`
	SigningSecret  Secret `json:"signing_secret"`
	AppToken       Secret `json:"app_token"`
	DefaultChannel string `json:"default_channel"`
	// APIURL is Slack's Web API (default https://slack.com/api/): another
	// for a proxy, or a test server.
	APIURL string `json:"api_url"`
}

// Alertmanager is the webhook's authentication and pace.
type Alertmanager struct {
	// Bearer, or Username with Password (basic auth): one of them.
	Bearer   Secret `json:"bearer"`
	Username string `json:"username"`
	Password Secret `json:"password"`
	// Cooldown is the least time between two diagnoses of one target.
	Cooldown Duration `json:"cooldown"`
	// Channel is where alerts' threads go unless a rule says otherwise.
	Channel string `json:"channel"`
	// Mappings turn alerts into targets, tried in order before the
	// defaults (namespace+pod, namespace+service, node, instance).
	Mappings []AlertMapping `json:"mappings"`
}

// AlertMapping maps alerts whose labels equal Match to a target. Target,
// To and DNS may name labels as {label}: "pod {exported_namespace}/{exported_pod}".
type AlertMapping struct {
	Match map[string]string `json:"match"`
	// Target is "pod NS/NAME", "svc NS/NAME" or "node NAME".
	Target  string `json:"target"`
	To      string `json:"to"`
	DNS     string `json:"dns"`
	Channel string `json:"channel"`
}

// Agents is how the bot finds and reaches the node agents.
type Agents struct {
	Namespace string `json:"namespace"`
	Selector  string `json:"selector"`
	Port      int    `json:"port"`
	// CAFile verifies the agents' certificates.
	CAFile string `json:"ca_file"`
	// TokenFile is the bot's projected ServiceAccount token (audience
	// netdiag-agent), re-read at each call.
	TokenFile string `json:"token_file"`
}

// AccessRule grants verbs in namespaces to Slack users, user groups or
// channels ("*" for any namespace). Payload capture is denied unless a
// rule grants capture-payload.
type AccessRule struct {
	Users      []string `json:"users"`
	Groups     []string `json:"groups"`
	Channels   []string `json:"channels"`
	Verbs      []string `json:"verbs"`
	Namespaces []string `json:"namespaces"`
}

// Verbs a rule may grant.
var Verbs = []string{"pod", "svc", "node", "dns", "capture", "capture-payload", "history", "digest"}

// Duration is a time.Duration written as "10m" in YAML.
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"10m\" or \"90d\" written as hours (\"2160h\")")
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("duration %q: give e.g. 10m, 24h", s)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Secret is a credential read from a file or from an environment
// variable, never written in the config itself. It never prints.
type Secret struct {
	File  string `json:"file,omitempty"`
	Env   string `json:"env,omitempty"`
	value string
}

// Value is the secret.
func (s Secret) Value() string { return s.value }

// Set reports whether a secret was given.
func (s Secret) Set() bool { return s.File != "" || s.Env != "" || s.value != "" }

// String and GoString keep the secret out of logs and errors.
func (s Secret) String() string   { return redacted(s) }
func (s Secret) GoString() string { return redacted(s) }

func (s Secret) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"file": s.File, "env": s.Env, "value": redacted(s)})
}

func redacted(s Secret) string {
	if s.value == "" {
		return "(none)"
	}
	return "(redacted)"
}

// load reads the secret from where it says.
func (s *Secret) load(field string, getenv func(string) string) error {
	switch {
	case s.File != "" && s.Env != "":
		return fmt.Errorf("%s: give file or env, not both", field)
	case s.File != "":
		b, err := os.ReadFile(s.File)
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if len(b) > 16<<10 {
			return fmt.Errorf("%s: %s is %d bytes; a secret is at most 16 KiB", field, s.File, len(b))
		}
		s.value = strings.TrimSpace(string(b))
	case s.Env != "":
		s.value = strings.TrimSpace(getenv(s.Env))
		if s.value == "" {
			return fmt.Errorf("%s: environment variable %s is empty or not set", field, s.Env)
		}
	}
	if s.Set() && s.value == "" {
		return fmt.Errorf("%s: the secret is empty", field)
	}
	return nil
}

// Defaults.
const (
	DefaultListen    = ":8080"
	DefaultStorePath = "/var/lib/netdiag/netdiag.db"
	DefaultCooldown  = 10 * time.Minute
	DefaultSlackAPI  = "https://slack.com/api/"
)

// Load reads the YAML file, applies the environment's overrides and checks
// everything; the error lists every field that is wrong, each named.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(b, os.Getenv)
}

// Parse is Load on the file's bytes, with getenv for the overrides.
func Parse(b []byte, getenv func(string) string) (*Config, error) {
	c := &Config{}
	if err := yaml.UnmarshalStrict(b, c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := c.override(getenv); err != nil {
		return nil, err
	}
	c.defaults()
	if err := c.validate(getenv); err != nil {
		return nil, err
	}
	return c, nil
}

// override applies NETDIAG_* environment variables: a Deployment sets
// them from its values and Secrets without touching the file.
func (c *Config) override(getenv func(string) string) error {
	var errs []error
	str := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	str("NETDIAG_LISTEN", &c.Listen)
	str("NETDIAG_STORE_PATH", &c.Store.Path)
	str("NETDIAG_SLACK_MODE", &c.Slack.Mode)
	str("NETDIAG_SLACK_CHANNEL", &c.Slack.DefaultChannel)
	str("NETDIAG_AGENTS_NAMESPACE", &c.Agents.Namespace)
	if v := getenv("NETDIAG_AGENTS_PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("NETDIAG_AGENTS_PORT %q: give a port number", v))
		}
		c.Agents.Port = p
	}
	// Secrets straight from the environment, for platforms that inject
	// them so.
	for name, s := range map[string]*Secret{
		"NETDIAG_SLACK_BOT_TOKEN": &c.Slack.BotToken, "NETDIAG_SLACK_SIGNING_SECRET": &c.Slack.SigningSecret,
		"NETDIAG_SLACK_APP_TOKEN": &c.Slack.AppToken, "NETDIAG_ALERTMANAGER_BEARER": &c.Alertmanager.Bearer,
	} {
		if getenv(name) != "" {
			*s = Secret{Env: name}
		}
	}
	return errors.Join(errs...)
}

func (c *Config) defaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Store.Path == "" {
		c.Store.Path = DefaultStorePath
	}
	if c.Slack.Mode == "" {
		c.Slack.Mode = "http"
	}
	if c.Alertmanager.Cooldown == 0 {
		c.Alertmanager.Cooldown = Duration(DefaultCooldown)
	}
	if c.Alertmanager.Channel == "" {
		c.Alertmanager.Channel = c.Slack.DefaultChannel
	}
	if c.Agents.Namespace == "" {
		c.Agents.Namespace = "netdiag"
	}
	if c.Agents.Selector == "" {
		c.Agents.Selector = "app.kubernetes.io/name=netdiag-agent"
	}
	if c.Agents.Port == 0 {
		c.Agents.Port = 9443
	}
	if c.Slack.APIURL == "" {
		c.Slack.APIURL = DefaultSlackAPI
	}
	if c.Diagnose.Workers == 0 {
		c.Diagnose.Workers = 2
	}
	if c.Diagnose.Capture == nil {
		d := Duration(3 * time.Second)
		c.Diagnose.Capture = &d
	}
	if c.Diagnose.Timeout == 0 {
		c.Diagnose.Timeout = Duration(2 * time.Minute)
	}
}

// validate checks every field and reads the secrets; every error names
// its field.
func (c *Config) validate(getenv func(string) string) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		bad("listen %q: give HOST:PORT or :PORT, e.g. :8080", c.Listen)
	}
	if c.Store.MaxAge < 0 || c.Store.MaxBytes < 0 {
		bad("store: max_age and max_bytes cannot be negative")
	}
	switch c.Slack.Mode {
	case "http":
		if !c.Slack.SigningSecret.Set() {
			bad("slack.signing_secret: needed in http mode, to verify that requests come from Slack (file: or env:)")
		}
	case "socket":
		if !c.Slack.AppToken.Set() {
			bad("slack.app_token: needed in socket mode (an xapp- token with connections:write)")
		}
	default:
		bad("slack.mode %q: accepted: http (Slack posts to the bot), socket (the bot connects out; no public ingress)", c.Slack.Mode)
	}
	if !c.Slack.BotToken.Set() {
		bad("slack.bot_token: needed (an xoxb- token; file: or env:)")
	}
	if c.Slack.DefaultChannel == "" {
		bad("slack.default_channel: needed (where digests and alerts go unless told otherwise), e.g. \"#netops\"")
	}
	a := c.Alertmanager
	switch {
	case a.Bearer.Set() && (a.Username != "" || a.Password.Set()):
		bad("alertmanager: give bearer or username with password, not both")
	case !a.Bearer.Set() && (a.Username == "") != !a.Password.Set():
		bad("alertmanager: username and password go together")
	case !a.Bearer.Set() && a.Username == "":
		bad("alertmanager: the webhook needs bearer (a token) or username and password: it never takes anything from anyone")
	}
	if u, err := url.Parse(c.Slack.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || !strings.HasSuffix(u.Path, "/") {
		bad("slack.api_url %q: give an http(s) URL ending in /, e.g. %s", c.Slack.APIURL, DefaultSlackAPI)
	}
	for i, m := range a.Mappings {
		kind, rest, _ := strings.Cut(m.Target, " ")
		if (kind != "pod" && kind != "svc" && kind != "node") || rest == "" {
			bad("alertmanager.mappings[%d].target %q: accepted: \"pod NS/NAME\", \"svc NS/NAME\" or \"node NAME\", with {label} for a label's value", i, m.Target)
		}
		for _, f := range []struct{ name, v string }{{"target", m.Target}, {"to", m.To}, {"dns", m.DNS}} {
			if strings.Count(f.v, "{") != strings.Count(f.v, "}") {
				bad("alertmanager.mappings[%d].%s %q: a { without its } (write {label})", i, f.name, f.v)
			}
		}
	}
	if cp := time.Duration(*c.Diagnose.Capture); cp < 0 || cp > 2*time.Minute {
		bad("diagnose.capture %s: give 0s (no capture) to 2m", cp)
	}
	if c.Diagnose.Workers < 1 || c.Diagnose.Workers > 16 {
		bad("diagnose.workers %d: give 1 to 16", c.Diagnose.Workers)
	}
	if c.Agents.Port < 1 || c.Agents.Port > 65535 {
		bad("agents.port %d: give 1 to 65535", c.Agents.Port)
	}
	seen := map[string]bool{}
	for i, d := range c.Digests {
		if err := d.Validate(); err != nil {
			bad("digests[%d]: %v", i, err)
		}
		if seen[d.Key()] {
			bad("digests[%d]: another digest has the name %q; give each its own name", i, d.Key())
		}
		seen[d.Key()] = true
	}
	for i, r := range c.Access {
		if len(r.Users)+len(r.Groups)+len(r.Channels) == 0 {
			bad("access[%d]: names no users, groups or channels", i)
		}
		if len(r.Verbs) == 0 {
			bad("access[%d].verbs: none given (accepted: %s)", i, strings.Join(Verbs, ", "))
		}
		for j, v := range r.Verbs {
			if !slices.Contains(Verbs, v) {
				bad("access[%d].verbs[%d] %q: accepted: %s", i, j, v, strings.Join(Verbs, ", "))
			}
		}
		if len(r.Namespaces) == 0 {
			bad("access[%d].namespaces: none given (a namespace, or \"*\" for every one)", i)
		}
	}
	for field, s := range map[string]*Secret{
		"slack.bot_token": &c.Slack.BotToken, "slack.signing_secret": &c.Slack.SigningSecret, "slack.app_token": &c.Slack.AppToken,
		"alertmanager.bearer": &c.Alertmanager.Bearer, "alertmanager.password": &c.Alertmanager.Password,
	} {
		if err := s.load(field, getenv); err != nil {
			errs = append(errs, err)
		}
	}
	// Slack answers a bot token given for the app token with an error
	// slack-go retries for ever; say it here instead.
	if c.Slack.Mode == "socket" && c.Slack.AppToken.Value() != "" && !strings.HasPrefix(c.Slack.AppToken.Value(), "xapp-") {
		bad("slack.app_token: not an app-level token (they start with xapp-; make one under Basic Information, App-Level Tokens, with connections:write)")
	}
	if len(errs) == 0 {
		return nil
	}
	// Sorted, so that the same file gives the same message.
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return fmt.Errorf("config: %w", errors.Join(errs...))
}

// NewSecret is a secret given in code (a test, a program that embeds the
// bot), not read from a file or the environment.
func NewSecret(value string) Secret { return Secret{value: value} }
