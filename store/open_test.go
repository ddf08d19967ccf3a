package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// check runs bbolt's consistency check over the whole file. bbolt checks
// in a goroutine of its own, where a fault on a damaged page is not turned
// into a panic: only for files expected whole.
func (s *Store) check(ctx context.Context) error {
	return s.view(ctx, func(tx *bbolt.Tx) error {
		var problems []string
		for err := range tx.Check() {
			problems = append(problems, err.Error())
		}
		if len(problems) > 0 {
			return fmt.Errorf("bbolt check of %s: %d problems: %s", s.path, len(problems), strings.Join(problems[:min(5, len(problems))], "; "))
		}
		return nil
	})
}

// filledStore writes a store of n findings at path and closes it; it
// returns the bytes its data reaches (bbolt's high-water mark).
func filledStore(t *testing.T, path string, n int) int64 {
	t.Helper()
	s, err := Open(context.Background(), path, Options{Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var recs []*FindingRecord
	for i := range n {
		recs = append(recs, record(i, t0.Add(time.Duration(i)*time.Second)))
	}
	if err := s.PutFindings(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	var hwm int64
	s.view(context.Background(), func(tx *bbolt.Tx) error { hwm = tx.Size(); return nil })
	s.Close()
	return hwm
}

func TestDamagedFile(t *testing.T) {
	dir := t.TempDir()
	valid := filepath.Join(dir, "valid.db")
	hwm := filledStore(t, valid, 500)
	validBytes, err := os.ReadFile(valid)
	if err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 64<<10)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rnd.Uint32())
	}
	metaGarbled := append([]byte(nil), validBytes...)
	copy(metaGarbled[:8192], random)
	// The free list's page, which bbolt reads while opening: the newest
	// meta page names it.
	freelistGarbled := append([]byte(nil), validBytes...)
	var best boltMeta
	var freelist uint64
	for _, off := range []int{0, 4096} {
		if m, ok := readMeta(bytes.NewReader(validBytes), int64(off)); ok && m.txid >= best.txid {
			best = m
			freelist = binary.NativeEndian.Uint64(validBytes[off+metaOffset+32:])
		}
	}
	if freelist < 2 || int64(freelist+1)*4096 > hwm {
		t.Fatalf("free list page %d of %d bytes", freelist, hwm)
	}
	copy(freelistGarbled[freelist*4096:], random[:4096])

	tests := []struct {
		name    string
		content func(path string) []byte // nil: make the file itself
		want    string
	}{
		{"empty", func(string) []byte { return []byte{} }, "the file is empty"},
		{"random bytes", func(string) []byte { return random }, "invalid database"},
		{"zeros", func(string) []byte { return make([]byte, 64<<10) }, "invalid"},
		{"a text file", func(string) []byte { return []byte("nameserver 10.96.0.10\nsearch default.svc.cluster.local\n") }, ""},
		{"truncated to the meta pages", func(string) []byte { return validBytes[:8192] }, ""},
		{"truncated to half", func(string) []byte { return validBytes[:hwm/2] }, ""},
		{"truncated by one page", func(string) []byte { return validBytes[:hwm-4096] }, ""},
		{"meta pages garbled", func(string) []byte { return metaGarbled }, "invalid database"},
		{"free list page garbled", func(string) []byte { return freelistGarbled }, "bbolt failed reading it"},
		{"bbolt file of something else", func(path string) []byte {
			db, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("etcd")); return err })
			db.Close()
			return nil
		}, "without netdiag's meta bucket"},
		{"a bucket missing", func(path string) []byte {
			writeV1(t, path, &v1Fixture{}, "2")
			return nil
		}, `its bucket "summaries" is missing`},
		{"schema version not a number", func(path string) []byte {
			writeV1(t, path, &v1Fixture{}, "two")
			return nil
		}, `its schema version "two" is not a version`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "netdiag.db")
			if b := tt.content(path); b != nil {
				if err := os.WriteFile(path, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			s, err := Open(context.Background(), path, Options{Logger: quietLogger(t)})
			took := time.Since(start)
			if err == nil {
				s.Close()
				t.Fatal("opened a damaged file")
			}
			t.Logf("%s (%s)", err, took.Round(time.Millisecond))
			var de *DamagedError
			if !errors.As(err, &de) || !errors.Is(err, ErrDamaged) {
				t.Fatalf("got %T %v, want a DamagedError", err, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "store: "+path+" is not a netdiag store or is damaged: ") || !strings.HasSuffix(msg, "(move it aside; netdiag starts a new one)") || !strings.Contains(msg, tt.want) {
				t.Fatalf("message %q does not name the path, say what to do and why (%q)", msg, tt.want)
			}
			if took > time.Second {
				t.Fatalf("took %s to say so", took)
			}
			// The failed open let go of the file: moved aside, a new
			// store starts at the path, and the damaged file can be
			// opened (and refused) again.
			if _, err := Open(context.Background(), path, Options{Logger: quietLogger(t), OpenTimeout: 200 * time.Millisecond}); errors.Is(err, ErrLocked) {
				t.Fatalf("a failed open kept the lock: %v", err)
			}
			if err := os.Rename(path, path+".damaged"); err != nil {
				t.Fatal(err)
			}
			s = openAt(t, path, Options{})
			if _, err := s.PutFinding(context.Background(), record(1, t0)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDamagedPages garbles pages inside a valid file: whatever bbolt makes
// of them, the store answers with errors, never a panic or a hang.
func TestDamagedPages(t *testing.T) {
	dir := t.TempDir()
	valid := filepath.Join(dir, "valid.db")
	hwm := filledStore(t, valid, 400)
	validBytes, err := os.ReadFile(valid)
	if err != nil {
		t.Fatal(err)
	}
	pages := int(hwm / 4096)
	for seed := range uint64(12) {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 7))
			b := append([]byte(nil), validBytes...)
			// Garble 3 pages past the meta pages, the header or all of it.
			for range 3 {
				p := 2 + rnd.IntN(pages-2)
				n := 4096
				if rnd.IntN(2) == 0 {
					n = 16
				}
				for i := range n {
					b[p*4096+i] = byte(rnd.Uint32())
				}
			}
			path := filepath.Join(t.TempDir(), "netdiag.db")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			done := make(chan string, 1)
			go func() {
				var log []string
				note := func(what string, err error) {
					if err != nil {
						if !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrNotFound) {
							log = append(log, fmt.Sprintf("%s: %v", what, err))
							return
						}
						log = append(log, what+": damaged")
					}
				}
				ctx := context.Background()
				s, err := Open(ctx, path, Options{Logger: quietLogger(t)})
				note("open", err)
				if err == nil {
					h, err := s.History(ctx, HistoryQuery{Limit: MaxHistory})
					note("history", err)
					for _, x := range h {
						_, err := s.Finding(ctx, x.ID, true)
						note("finding", err)
					}
					_, err = s.PutFinding(ctx, record(1, t0))
					note("put", err)
					_, err = s.Sweep(ctx)
					note("sweep", err)
					_, err = s.Usage(ctx)
					note("usage", err)
					s.Close()
				}
				done <- strings.Join(log, "; ")
			}()
			select {
			case log := <-done:
				t.Logf("%s", log)
			case <-time.After(30 * time.Second):
				t.Fatal("the store hung on a damaged file")
			}
		})
	}
}

// TestLocked opens a store held by another open file in this process and
// by another process: both give up after the timeout, naming the path.
func TestLocked(t *testing.T) {
	ctx := context.Background()
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name string
		hold func(t *testing.T, path string) (release func())
	}{
		{"in this process", func(t *testing.T, path string) func() {
			s, err := Open(ctx, path, Options{Logger: quietLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			return func() { s.Close() }
		}},
		{"in another process", func(t *testing.T, path string) func() {
			cmd, out := startChild(t, "lock", path)
			if line, err := out.ReadString('\n'); err != nil || line != "locked\n" {
				t.Fatalf("child: %q, %v", line, err)
			}
			return func() { cmd.Process.Kill(); cmd.Wait() }
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "netdiag.db")
			release := tt.hold(t, path)
			start := time.Now()
			_, err := Open(ctx, path, Options{OpenTimeout: timeout, Logger: quietLogger(t)})
			took := time.Since(start)
			t.Logf("%v (%s)", err, took.Round(time.Millisecond))
			var le *LockedError
			if !errors.As(err, &le) || !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "another netdiag may be using it") {
				t.Fatalf("got %v, want a LockedError naming %s", err, path)
			}
			if took < timeout || took > timeout+500*time.Millisecond {
				t.Fatalf("gave up after %s, want %s", took, timeout)
			}
			// A cancelled context ends the wait before the timeout.
			cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			start = time.Now()
			if _, err := Open(cctx, path, Options{OpenTimeout: 10 * time.Second}); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
				t.Fatalf("cancelled wait: %v after %s", err, time.Since(start))
			}
			release()
			s := openAt(t, path, Options{OpenTimeout: timeout})
			if _, err := s.PutFinding(ctx, record(1, t0)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// startChild runs this test binary again as a child (see maybeChild),
// killed when the test ends; out reads its standard output.
func startChild(t *testing.T, mode, path string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+mode+":"+path)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, bufio.NewReader(stdout)
}
