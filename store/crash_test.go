package store

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childEnv switches this test binary into a child: "lock:PATH" holds the
// store until killed, "crash:PATH" writes until killed.
const childEnv = "NETDIAG_STORE_TEST_CHILD"

func maybeChild() {
	v, ok := os.LookupEnv(childEnv)
	if !ok {
		return
	}
	mode, path, _ := strings.Cut(v, ":")
	err := runChild(mode, path)
	fmt.Fprintln(os.Stderr, "child:", err)
	os.Exit(1)
}

func runChild(mode, path string) error {
	ctx := context.Background()
	s, err := Open(ctx, path, Options{})
	if err != nil {
		return err
	}
	switch mode {
	case "lock":
		fmt.Println("locked")
		for {
			time.Sleep(time.Hour) // until killed
		}
	case "crash":
		// Each line is printed after the write it names returned: the
		// parent holds the store to every line it read whole.
		for i := 0; ; i++ {
			id, err := s.PutFinding(ctx, record(i, time.Now()))
			if err != nil {
				return err
			}
			fmt.Printf("F %s\n", id)
			if i%3 == 0 {
				if err := s.PutPcap(ctx, id, bytes.NewReader(crashPcap(id))); err != nil {
					return err
				}
				fmt.Printf("P %s\n", id)
			}
			mid, err := s.Enqueue(ctx, Message{Channel: "C1", Kind: "finding", Payload: []byte(id)})
			if err != nil {
				return err
			}
			fmt.Printf("M %s\n", mid)
			if err := s.Audit(ctx, AuditEntry{Who: "crash", What: id, Result: "ok"}); err != nil {
				return err
			}
			fmt.Printf("A %s\n", id)
		}
	}
	return fmt.Errorf("unknown child mode %q", mode)
}

// crashPcap is the pcap the crash child stores with a finding.
func crashPcap(id string) []byte {
	return append([]byte{0xd4, 0xc3, 0xb2, 0xa1}, bytes.Repeat([]byte(id), 300)...)
}

// TestCrash kills a writing process at a random moment, again and again:
// each time the file opens and holds every write the child saw succeed.
func TestCrash(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "netdiag.db")
	acked := map[string][]string{}
	for round := range 6 {
		cmd, out := startChild(t, "crash", path)
		lines := make(chan []string, 1)
		go func() {
			var got []string
			for {
				line, err := out.ReadString('\n')
				if err != nil {
					break // a line cut by the kill is not acknowledged
				}
				got = append(got, strings.TrimSuffix(line, "\n"))
			}
			lines <- got
		}()
		wait := 50*time.Millisecond + rand.N(450*time.Millisecond)
		time.Sleep(wait)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		got := <-lines
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: the child ended before the kill: %v", round, err)
		}
		for _, l := range got {
			kind, id, _ := strings.Cut(l, " ")
			acked[kind] = append(acked[kind], id)
		}
		s, err := Open(ctx, path, Options{Logger: quietLogger(t)})
		if err != nil {
			t.Fatalf("round %d: reopening after SIGKILL: %v", round, err)
		}
		if err := s.check(ctx); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, id := range acked["F"] {
			if _, err := s.Finding(ctx, id, true); err != nil {
				t.Fatalf("round %d: acknowledged finding lost: %v", round, err)
			}
		}
		for _, id := range acked["P"] {
			if p, err := s.Pcap(ctx, id); err != nil || !bytes.Equal(p, crashPcap(id)) {
				t.Fatalf("round %d: acknowledged pcap of %s: %d bytes, %v", round, id, len(p), err)
			}
		}
		due, err := s.Due(ctx, time.Now().Add(time.Hour), MaxHistory)
		if err != nil {
			t.Fatal(err)
		}
		inOutbox := map[string]bool{}
		for _, m := range due {
			inOutbox[m.ID] = true
		}
		for _, id := range acked["M"] {
			if !inOutbox[id] {
				t.Fatalf("round %d: acknowledged message %s lost", round, id)
			}
		}
		audit, err := s.AuditLog(ctx, time.Time{}, MaxHistory)
		if err != nil {
			t.Fatal(err)
		}
		if len(audit) < len(acked["A"]) {
			t.Fatalf("round %d: %d audit entries, %d acknowledged", round, len(audit), len(acked["A"]))
		}
		u, _ := s.Usage(ctx)
		t.Logf("round %d: killed after %s, %d lines acknowledged; store holds %d findings, %d pcaps, %d messages", round, wait.Round(time.Millisecond), len(got), u.Findings, u.Pcaps, u.Outbox)
		s.Close()
	}
	if len(acked["F"]) == 0 {
		t.Fatal("the child never acknowledged a write")
	}
	// No temporary file of a creation is left where a kill came first.
	entries, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range entries {
		if e.Name() != "netdiag.db" {
			t.Logf("left beside the store: %s", e.Name())
		}
	}
}
