package digest

import (
	"strings"
	"testing"
)

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		// want are substrings of the error, none for a valid spec.
		want []string
	}{
		{name: "the issue's example", spec: Spec{Schedule: "0 9 * * 1-5", TZ: "Europe/Berlin", Channel: "#netops", Sweep: true}},
		{name: "channel ID, UTC by default", spec: Spec{Schedule: "*/30 8-18 * * *", Channel: "C0123456789"}},
		{name: "month and weekday names", spec: Spec{Schedule: "0 7 1 JAN-DEC MON", TZ: "UTC", Channel: "#x"}},
		{
			name: "four fields",
			spec: Spec{Schedule: "0 9 * *", TZ: "Europe/Berlin", Channel: "#netops"},
			want: []string{`schedule "0 9 * *": expected exactly 5 fields, found 4`, "accepted: five cron fields"},
		},
		{
			name: "hour out of range",
			spec: Spec{Schedule: "0 25 * * *", Channel: "#netops"},
			want: []string{`schedule "0 25 * * *"`, "above maximum", "e.g. \"0 9 * * 1-5\""},
		},
		{
			name: "empty schedule",
			spec: Spec{Channel: "#netops"},
			want: []string{"schedule: empty; accepted"},
		},
		{
			name: "descriptor",
			spec: Spec{Schedule: "@daily", Channel: "#netops"},
			want: []string{`schedule "@daily": descriptors`},
		},
		{
			name: "time zone inside the schedule",
			spec: Spec{Schedule: "CRON_TZ=Europe/Berlin 0 9 * * *", Channel: "#netops"},
			want: []string{"give it in tz"},
		},
		{
			name: "never fires",
			spec: Spec{Schedule: "0 0 30 2 *", Channel: "#netops"},
			want: []string{`schedule "0 0 30 2 *": never fires`},
		},
		{
			name: "unknown time zone",
			spec: Spec{Schedule: "0 9 * * 1-5", TZ: "Europe/Berlim", Channel: "#netops"},
			want: []string{`tz "Europe/Berlim": unknown time zone; accepted: an IANA time zone name`},
		},
		{
			name: "Local",
			spec: Spec{Schedule: "0 9 * * 1-5", TZ: "Local", Channel: "#netops"},
			want: []string{`tz "Local": the machine's local zone is not accepted`},
		},
		{
			name: "empty channel",
			spec: Spec{Schedule: "0 9 * * 1-5", TZ: "Europe/Berlin"},
			want: []string{`channel: empty; accepted: a Slack channel name such as "#netops"`},
		},
		{
			name: "every field wrong: all reported",
			spec: Spec{Schedule: "61 * * * *", TZ: "Mars/Olympus", Channel: "#net ops"},
			want: []string{`schedule "61 * * * *"`, `tz "Mars/Olympus"`, `channel "#net ops": contains white space`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error with %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, missing %q", err, w)
				}
			}
		})
	}
}

func TestSpecKey(t *testing.T) {
	if got := (Spec{Name: "netops-daily", Schedule: "0 9 * * *", Channel: "#netops"}).Key(); got != "netops-daily" {
		t.Errorf("Key() = %q", got)
	}
	if got := (Spec{Schedule: "0 9 * * *", Channel: "#netops"}).Key(); got != "#netops 0 9 * * *" {
		t.Errorf("Key() = %q", got)
	}
}
