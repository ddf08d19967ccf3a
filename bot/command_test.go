package bot

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		text    string
		want    string // the canonical form
		target  string
		perm    string
		wantErr string // part of the error
	}{
		{text: "", want: "help"},
		{text: "help", want: "help"},
		{text: "pod default/web", want: "pod default/web", target: "pod default/web", perm: "pod default"},
		{text: "  POD   default/web  to svc/default/db:5432 ", want: "pod default/web to svc/default/db:5432", target: "pod default/web", perm: "pod default"},
		{text: "pod default/web --to 10.0.0.5:80 --dns example.com dns kubernetes.default", want: "pod default/web to 10.0.0.5:80 dns example.com dns kubernetes.default"},
		{text: "pod shop/web to [fd00::7]:8080", want: "pod shop/web to [fd00::7]:8080"},
		{text: "svc shop/db", want: "svc shop/db", target: "svc shop/db", perm: "svc shop"},
		{text: "node worker-1 to node/worker-2:10250", want: "node worker-1 to node/worker-2:10250", target: "node worker-1", perm: "node "},
		{text: "dns default/web kubernetes.default", want: "dns default/web kubernetes.default", target: "pod default/web", perm: "dns default"},
		{text: "capture default/web", want: "capture default/web for 10s", perm: "capture default"},
		{text: `capture default/web for 30s filter "tcp port 80"`, want: `capture default/web for 30s filter "tcp port 80"`},
		{text: "capture default/web filter “udp port 53” payload", want: `capture default/web for 10s filter "udp port 53" payload`, perm: "capture-payload default"},
		{text: "history", want: "history"},
		{text: "history shop/web", want: "history shop/web"},
		{text: "digest", want: "digest"},

		{text: "pods default/web", wantErr: `unknown command "pods"`},
		{text: "pod web", wantErr: "give NAMESPACE/NAME"},
		{text: "pod Default/web", wantErr: "not a namespace name"},
		{text: "pod default/web;rm", wantErr: "not a name"},
		{text: "pod default/$(reboot)", wantErr: "not a name"},
		{text: "pod default/web to", wantErr: "needs a value"},
		{text: "pod default/web via x", wantErr: `unexpected "via"`},
		{text: "pod default/web to a to b", wantErr: "give one `to`"},
		{text: "pod default/web dns bad..name", wantErr: "bad DNS name"},
		{text: "svc shop/db to x:1", wantErr: "accepted after it: nothing more"},
		{text: "node", wantErr: "needs a node name"},
		{text: "node Bad_Node", wantErr: "not a node name"},
		{text: "dns default/web", wantErr: "needs a pod and a name"},
		{text: "capture default/web for 1h", wantErr: "from 1s to 2m0s"},
		{text: "capture default/web for 0s", wantErr: "from 1s"},
		{text: `capture default/web filter "tcp port 80`, wantErr: "quote is not closed"},
		{text: "capture default/web filter \"port 80\x07\"", wantErr: "printable ASCII"},
		{text: "capture default/web sideways", wantErr: `unexpected "sideways"`},
		{text: "digest now", wantErr: "digest takes nothing"},
		{text: "history a/b c/d", wantErr: "at most one"},
		{text: strings.Repeat("x", MaxCommandText+1), wantErr: "at most 1000"},
		{text: "pod default/\xff", wantErr: "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			c, err := ParseCommand(tt.text)
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrCommand) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrCommand containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			// The canonical form parses back to itself: a button repeats it.
			again, err := ParseCommand(c.String())
			if err != nil || again.String() != c.String() {
				t.Errorf("canonical form %q parses to %q, %v", c.String(), again.String(), err)
			}
			if tt.target != "" && c.Target() != tt.target {
				t.Errorf("Target() = %q, want %q", c.Target(), tt.target)
			}
			if tt.perm != "" {
				v, ns := c.Permission()
				if v+" "+ns != tt.perm {
					t.Errorf("Permission() = %q, want %q", v+" "+ns, tt.perm)
				}
			}
		})
	}
	c, _ := ParseCommand("capture a/b for 90s")
	if c.Capture != 90*time.Second {
		t.Errorf("capture for 90s gave %s", c.Capture)
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"pod default/web to svc/default/db:5432", `capture a/b filter "x"`, "dns a/b c.d", "“"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCommand(s)
		if err != nil {
			if !errors.Is(err, ErrCommand) {
				t.Fatalf("error not ErrCommand: %v", err)
			}
			return
		}
		again, err := ParseCommand(c.String())
		if err != nil || again.String() != c.String() {
			t.Fatalf("%q: canonical %q parses to %q, %v", s, c.String(), again.String(), err)
		}
	})
}
