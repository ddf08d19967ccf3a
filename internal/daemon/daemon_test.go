package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a child that ignores SIGTERM.
func TestMain(m *testing.M) {
	if os.Getenv("DAEMON_TEST_CHILD") == "stubborn" {
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestStop(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name    string
		cmd     func() *exec.Cmd
		wantErr string // in Stop's error; "" for none
	}{
		{"ends on SIGTERM", func() *exec.Cmd { return exec.Command("sleep", "60") }, ""},
		{"killed after the grace period", func() *exec.Cmd {
			c := exec.Command(os.Args[0])
			c.Env = append(os.Environ(), "DAEMON_TEST_CHILD=stubborn")
			return c
		}, "ignored SIGTERM for 300ms and was killed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			log := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".log")
			p, err := Start(tc.name, tc.cmd(), log)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" {
				// Until it has said so, it may not ignore SIGTERM yet.
				for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.Tail(1), "ignoring") && time.Now().Before(deadline); {
					time.Sleep(10 * time.Millisecond)
				}
			}
			start := time.Now()
			err = p.Stop(300 * time.Millisecond)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Stop: %v, want %q", err, tc.wantErr)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Stop took %s", took)
			}
			select {
			case <-p.Done():
			default:
				t.Fatal("not done after Stop")
			}
			if p.Err() == nil {
				t.Error("Err is nil for a process ended by a signal")
			}
			if err2 := p.Stop(300 * time.Millisecond); fmt.Sprint(err2) != fmt.Sprint(err) {
				t.Errorf("second Stop: %v, first %v", err2, err)
			}
		})
	}
}

func TestTailFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("a\nb\nc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[int]string{1: "c", 2: "b\nc", 5: "a\nb\nc"} {
		if got := TailFile(path, n); got != want {
			t.Errorf("TailFile(%d) = %q, want %q", n, got, want)
		}
	}
	if got := TailFile(path+".missing", 3); got != "" {
		t.Errorf("missing file: %q", got)
	}
}
