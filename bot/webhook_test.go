package bot_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/netdiag/netdiag/bot"
	"github.com/netdiag/netdiag/config"
	"github.com/netdiag/netdiag/lab"
)

// What the webhook refuses, and that a refused notification records
// nothing.
func TestWebhookRefuses(t *testing.T) {
	h := startBot(t, &lab.Lab{Instance: "unused"}, config.Alertmanager{Username: "am", Password: config.NewSecret("pw")}, 0)
	valid := `{"version":"4","groupKey":"g","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A","namespace":"default","pod":"web"},"fingerprint":"f1"}]}`
	tests := []struct {
		name, method, user, pass, body string
		code                           int
		want                           string
	}{
		{"no credentials", http.MethodPost, "", "", valid, 401, "bad or missing credentials"},
		{"wrong password", http.MethodPost, "am", "nope", valid, 401, "bad or missing credentials"},
		{"GET", http.MethodGet, "am", "pw", "", 405, "POST"},
		{"not JSON", http.MethodPost, "am", "pw", "alerts!", 400, "not an Alertmanager webhook notification"},
		{"no alerts", http.MethodPost, "am", "pw", `{"version":"4"}`, 400, "no alerts"},
		{"over 1 MiB", http.MethodPost, "am", "pw", `{"x":"` + strings.Repeat("a", bot.MaxWebhookBody) + `"}`, 413, "max_alerts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, h.server.URL+"/alertmanager", strings.NewReader(tt.body))
			if tt.user != "" {
				req.SetBasicAuth(tt.user, tt.pass)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b := new(strings.Builder)
			buf := make([]byte, 4096)
			n, _ := resp.Body.Read(buf)
			b.Write(buf[:n])
			if resp.StatusCode != tt.code || !strings.Contains(b.String(), tt.want) {
				t.Errorf("%d %s, want %d with %q", resp.StatusCode, b.String(), tt.code, tt.want)
			}
		})
	}
	if open, _ := h.store.OpenAlerts(t.Context()); len(open) != 0 {
		t.Fatalf("a refused notification recorded %d alerts", len(open))
	}
	// The right credentials: recorded.
	req, _ := http.NewRequest(http.MethodPost, h.server.URL+"/alertmanager", strings.NewReader(valid))
	req.SetBasicAuth("am", "pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", err, resp)
	}
	resp.Body.Close()
	if open, _ := h.store.OpenAlerts(t.Context()); len(open) != 1 {
		t.Fatalf("%d alerts recorded, want 1", len(open))
	}
}
