package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"go.etcd.io/bbolt"
)

// Usage is how much room the store takes.
type Usage struct {
	// FileBytes is the file's size. bbolt never gives space back to the
	// file system: the file only shrinks by Compact.
	FileBytes int64 `json:"file_bytes"`
	// LiveBytes is the part of it that holds data (pages in use).
	LiveBytes int64 `json:"live_bytes"`
	Findings  int   `json:"findings"`
	Pcaps     int   `json:"pcaps"`
	Outbox    int   `json:"outbox"`
	Audit     int   `json:"audit"`
}

// Usage measures the store.
func (s *Store) Usage(ctx context.Context) (Usage, error) {
	var u Usage
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		u.LiveBytes = s.liveBytes(tx)
		u.Findings = tx.Bucket(bSummaries).Stats().KeyN
		u.Pcaps = tx.Bucket(bPcaps).Stats().KeyN
		u.Outbox = tx.Bucket(bOutbox).Stats().KeyN
		u.Audit = tx.Bucket(bAudit).Stats().KeyN
		fi, err := s.file.Stat()
		u.FileBytes = fi.Size()
		return err
	})
	return u, err
}

// liveBytes is the file's pages up to its high-water mark less those on
// bbolt's free list (free now or once older readers end).
func (s *Store) liveBytes(tx *bbolt.Tx) int64 {
	st := s.db.Stats()
	return tx.Size() - int64(st.FreePageN+st.PendingPageN)*int64(s.db.Info().PageSize)
}

// SweepReport says what Sweep removed and what it kept.
type SweepReport struct {
	// FindingsByAge and FindingsBySize are the findings removed (with their
	// raw evidence, pcap and index entries) for being older than MaxAge and
	// to bring the live data under MaxBytes.
	FindingsByAge  int `json:"findings_by_age"`
	FindingsBySize int `json:"findings_by_size"`
	Audit          int `json:"audit"`
	Alerts         int `json:"alerts"`
	Threads        int `json:"threads"`
	// StaleOutbox counts the undelivered messages older than MaxAge: they
	// are kept (a message is a promise to a channel, dropped only by Done,
	// which the sender calls when it gives up) and logged as a warning.
	StaleOutbox int   `json:"stale_outbox"`
	LiveBytes   int64 `json:"live_bytes"`
	// OverBytes is true when the live data stays over MaxBytes with no
	// finding left to remove (the audit log, alerts and outbox are kept).
	OverBytes bool `json:"over_bytes,omitempty"`
}

// sweepBatch is how many records one sweep transaction removes, so readers
// and writers get their turn between batches.
const sweepBatch = 500

// Sweep applies the retention: findings, audit entries, alerts and threads
// older than MaxAge go, then the oldest findings until the live data is under
// MaxBytes. Digest states stay (a handful of names) and so does the outbox.
// The file does not shrink: Compact gives the room back.
func (s *Store) Sweep(ctx context.Context) (SweepReport, error) {
	var rep SweepReport
	cutoff := s.opts.Clock().Add(-s.opts.MaxAge)
	ck := timeBytes(cutoff)
	for {
		n, err := s.deleteOldestFindings(ctx, sweepBatch, func(at []byte) bool { return bytes.Compare(at, ck[:]) < 0 })
		rep.FindingsByAge += n
		if err != nil {
			return rep, err
		}
		if n < sweepBatch {
			break
		}
	}
	for {
		n, err := s.deleteAuditBefore(ctx, ck[:])
		rep.Audit += n
		if err != nil {
			return rep, err
		}
		if n < sweepBatch {
			break
		}
	}
	var err error
	if rep.Alerts, rep.Threads, err = s.forgetStale(ctx, cutoff); err != nil {
		return rep, err
	}
	var oldest *Message
	err = s.view(ctx, func(tx *bbolt.Tx) error {
		return tx.Bucket(bOutbox).ForEach(func(_, v []byte) error {
			var m Message
			if json.Unmarshal(v, &m) == nil && m.Created.Before(cutoff) {
				rep.StaleOutbox++
				if oldest == nil || m.Created.Before(oldest.Created) {
					oldest = &m
				}
			}
			return nil
		})
	})
	if err != nil {
		return rep, err
	}
	if oldest != nil {
		s.log.Warn("undelivered messages older than the retention are kept", "count", rep.StaleOutbox,
			"oldest", oldest.ID, "channel", oldest.Channel, "created", oldest.Created, "attempts", oldest.Attempts, "last_error", oldest.LastError)
	}
	if err := s.sweepSize(ctx, &rep); err != nil {
		return rep, err
	}
	s.log.Info("store swept", "findings_by_age", rep.FindingsByAge, "findings_by_size", rep.FindingsBySize,
		"audit", rep.Audit, "alerts", rep.Alerts, "threads", rep.Threads, "live_bytes", rep.LiveBytes)
	return rep, nil
}

// sweepSize removes the oldest findings until the live data is under
// MaxBytes, each round sized by the mean finding.
func (s *Store) sweepSize(ctx context.Context, rep *SweepReport) error {
	for {
		var live int64
		var count int
		err := s.view(ctx, func(tx *bbolt.Tx) error {
			live = s.liveBytes(tx)
			if live > s.opts.MaxBytes {
				count = tx.Bucket(bSummaries).Stats().KeyN
			}
			return nil
		})
		if err != nil {
			return err
		}
		rep.LiveBytes = live
		if live <= s.opts.MaxBytes {
			return nil
		}
		if count == 0 {
			rep.OverBytes = true
			s.log.Warn("the store stays over its size limit with no finding left to remove", "live_bytes", live, "max_bytes", s.opts.MaxBytes)
			return nil
		}
		per := max(live/int64(count), 1)
		batch := int(min(max((live-s.opts.MaxBytes)/per+1, 1), sweepBatch))
		n, err := s.deleteOldestFindings(ctx, batch, func([]byte) bool { return true })
		rep.FindingsBySize += n
		if err != nil {
			return err
		}
		if n == 0 {
			// Summaries without a time index entry: nothing this sweep
			// can find to remove.
			rep.OverBytes = true
			s.log.Warn("the store stays over its size limit: its findings are not in the time index", "live_bytes", live, "findings", count)
			return nil
		}
	}
}

// deleteOldestFindings removes up to limit of the oldest findings whose
// time key (8 bytes) passes keep-going test old.
func (s *Store) deleteOldestFindings(ctx context.Context, limit int, old func(at []byte) bool) (int, error) {
	n := 0
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		var keys [][]byte
		c := tx.Bucket(bByTime).Cursor()
		for k, _ := c.First(); k != nil && len(keys) < limit && len(k) > 8 && old(k[:8]); k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		sums := tx.Bucket(bSummaries)
		for i, k := range keys {
			if err := scanCheck(ctx, i+1); err != nil {
				return err
			}
			id := k[8:]
			var sum FindingSummary
			if sb := sums.Get(id); sb == nil || json.Unmarshal(sb, &sum) != nil {
				// An index entry without its finding: drop the entry alone.
				if err := tx.Bucket(bByTime).Delete(k); err != nil {
					return err
				}
				continue
			}
			if err := deleteFinding(tx, &sum); err != nil {
				return err
			}
		}
		n = len(keys)
		return nil
	})
	return n, err
}

func (s *Store) deleteAuditBefore(ctx context.Context, cutoff []byte) (int, error) {
	n := 0
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		bk := tx.Bucket(bAudit)
		var keys [][]byte
		c := bk.Cursor()
		for k, _ := c.First(); k != nil && len(keys) < sweepBatch && bytes.Compare(k, cutoff) < 0; k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
		n = len(keys)
		return nil
	})
	return n, err
}

// forgetStale removes the alerts and threads not updated since cutoff: an
// alert still firing is re-sent by Alertmanager and updated, so one
// silent for MaxAge is over.
func (s *Store) forgetStale(ctx context.Context, cutoff time.Time) (alerts, threads int, err error) {
	err = s.update(ctx, func(tx *bbolt.Tx) error {
		for _, x := range []struct {
			b     []byte
			count *int
		}{{bAlerts, &alerts}, {bThreads, &threads}} {
			bk := tx.Bucket(x.b)
			var stale [][]byte
			err := bk.ForEach(func(k, v []byte) error {
				var t struct {
					UpdatedAt time.Time `json:"updated_at"`
				}
				if json.Unmarshal(v, &t) == nil && t.UpdatedAt.Before(cutoff) {
					stale = append(stale, bytes.Clone(k))
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, k := range stale {
				if err := bk.Delete(k); err != nil {
					return err
				}
				if bytes.Equal(x.b, bAlerts) {
					if err := tx.Bucket(bAlertsOpen).Delete(k); err != nil {
						return err
					}
				}
			}
			*x.count = len(stale)
		}
		return nil
	})
	return alerts, threads, err
}

// CompactResult is the file's size before and after a compaction.
type CompactResult struct {
	Before, After int64
	// Skipped is true when the file was not much larger than its data.
	Skipped bool
}

// worthCompacting is the rule: the file at least twice its live data, and
// at least 1 MiB to gain.
func worthCompacting(file, live int64) bool {
	return file >= 2*live && file-live >= 1<<20
}

// Compact gives the file's free pages back to the file system when the file
// is at least twice its live data: it copies the data into a new file beside
// it and renames that over the old one. Other calls wait meanwhile; the new
// file is locked before it takes the path, so another process never opens
// a file that is about to be replaced. It needs free disk room for the copy.
func (s *Store) Compact(ctx context.Context) (CompactResult, error) {
	return s.compact(ctx, false)
}

func (s *Store) compact(ctx context.Context, force bool) (res CompactResult, err error) {
	if err := ctx.Err(); err != nil {
		return res, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return res, ErrClosed
	}
	fi, err := s.file.Stat()
	if err != nil {
		return res, fmt.Errorf("store: %w", err)
	}
	res.Before, res.After = fi.Size(), fi.Size()
	var live int64
	if err := s.db.View(func(tx *bbolt.Tx) error { live = s.liveBytes(tx); return nil }); err != nil {
		return res, err
	}
	if !force && !worthCompacting(res.Before, live) {
		res.Skipped = true
		return res, nil
	}
	start := time.Now()
	dir, base := filepath.Split(s.path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".compact-*")
	if err != nil {
		return res, fmt.Errorf("store: compact %s: %w", s.path, err)
	}
	tmpPath := tmp.Name()
	if err := lockFile(ctx, tmp, time.Now().Add(time.Second)); err != nil {
		tmp.Close()
		os.Remove(tmpPath)
		return res, fmt.Errorf("store: compact %s: lock the copy: %w", s.path, err)
	}
	dst, err := bbolt.Open(tmpPath, 0o600, boltOptions(tmp))
	if err != nil {
		tmp.Close()
		os.Remove(tmpPath)
		return res, fmt.Errorf("store: compact %s: %w", s.path, err)
	}
	fail := func(err error) (CompactResult, error) {
		dst.Close()
		os.Remove(tmpPath)
		if errors.Is(err, syscall.ENOSPC) {
			err = fmt.Errorf("%w (the copy needs about %d bytes free beside the store)", err, live)
		}
		return res, fmt.Errorf("store: compact %s: %w", s.path, err)
	}
	if err := s.copyInto(ctx, dst); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmpPath, s.path); err != nil {
		return fail(err)
	}
	if err := syncDir(dir); err != nil {
		s.log.Warn("compacted store renamed but its directory not synced", "err", err)
	}
	if err := s.db.Close(); err != nil {
		s.log.Warn("closing the store file replaced by its compacted copy", "err", err)
	}
	s.db, s.file = dst, tmp
	if fi, err := tmp.Stat(); err == nil {
		res.After = fi.Size()
	}
	s.log.Info("store compacted", "before", res.Before, "after", res.After, "took", time.Since(start).Round(time.Millisecond))
	return res, nil
}

// copyTxBytes is how much one transaction of the copy writes.
const copyTxBytes = 64 << 20

// copyInto copies every bucket into dst, pages filled: the store's buckets
// are flat, so a nested one means damage.
func (s *Store) copyInto(ctx context.Context, dst *bbolt.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &DamagedError{Path: s.path, Reason: fmt.Sprintf("bbolt failed reading it: %v", r)}
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return s.db.View(func(stx *bbolt.Tx) error {
		dtx, err := dst.Begin(true)
		if err != nil {
			return err
		}
		defer func() { dtx.Rollback() }()
		size, n := 0, 0
		err = stx.ForEach(func(name []byte, src *bbolt.Bucket) error {
			b, err := dtx.CreateBucket(name)
			if err != nil {
				return err
			}
			if err := b.SetSequence(src.Sequence()); err != nil {
				return err
			}
			b.FillPercent = 1
			c := src.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				n++
				if err := scanCheck(ctx, n); err != nil {
					return err
				}
				if v == nil {
					return &DamagedError{Path: s.path, Reason: fmt.Sprintf("bucket %s holds a bucket %q", name, k)}
				}
				if size += len(k) + len(v); size > copyTxBytes {
					if err := dtx.Commit(); err != nil {
						return err
					}
					if dtx, err = dst.Begin(true); err != nil {
						return err
					}
					b = dtx.Bucket(name)
					b.FillPercent = 1
					size = 0
				}
				if err := b.Put(k, v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		return dtx.Commit()
	})
}
