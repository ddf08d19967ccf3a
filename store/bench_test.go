package store

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/netdiag/netdiag/store/storetest"
)

// The benchmark's store: 100,000 findings about 1,000 targets, built once
// for every run of the benchmark and removed by TestMain.
const (
	benchFindings = 100_000
	benchTargets  = 1000
)

var bench struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func benchFixture(b *testing.B) string {
	bench.once.Do(func() {
		if bench.dir, bench.err = os.MkdirTemp("", "netdiag-store-bench-"); bench.err != nil {
			return
		}
		bench.path = filepath.Join(bench.dir, "netdiag.db")
		start := time.Now()
		bench.err = fillBench(bench.path)
		b.Logf("built %d findings about %d targets in %s", benchFindings, benchTargets, time.Since(start).Round(time.Millisecond))
	})
	if bench.err != nil {
		b.Fatal(bench.err)
	}
	return bench.path
}

// fillBench writes the findings a minute apart, the targets in turn, a
// thousand to a transaction.
func fillBench(path string) error {
	ctx := context.Background()
	s, err := Open(ctx, path, Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	start := time.Now().Add(-benchFindings * time.Minute)
	var batch []*FindingRecord
	for i := range benchFindings {
		batch = append(batch, record(i%benchTargets, start.Add(time.Duration(i)*time.Minute)))
		if len(batch) == 1000 {
			if err := s.PutFindings(ctx, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}

func cleanupBenchFixture() {
	if bench.dir != "" {
		os.RemoveAll(bench.dir)
	}
}

// BenchmarkHistoryOneTarget reads the whole history of one target (100
// findings, newest first) in a store of 100,000: the target is under 10 ms
// an op. It also reports the file's bytes per stored finding.
func BenchmarkHistoryOneTarget(b *testing.B) {
	path := benchFixture(b)
	ctx := context.Background()
	s, err := Open(ctx, path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	u, err := s.Usage(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		target, _, _ := storetest.Target(i * 7919 % benchTargets)
		h, err := s.History(ctx, HistoryQuery{Target: target, Limit: 100})
		if err != nil || len(h) != benchFindings/benchTargets {
			b.Fatalf("history of %s: %d findings, %v", target, len(h), err)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
	b.ReportMetric(float64(u.FileBytes)/float64(u.Findings), "file-B/finding")
	b.ReportMetric(float64(u.LiveBytes)/float64(u.Findings), "live-B/finding")
}
