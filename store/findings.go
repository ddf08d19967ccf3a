package store

import (
	"bytes"
	"compress/flate"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/netdiag/netdiag/diagnose"
)

// Sources of a finding: what asked for it.
const (
	SourceSlack  = "slack"
	SourceAlert  = "alert"
	SourceCLI    = "cli"
	SourceDigest = "digest"
)

// FindingRecord is a stored finding: its summary (what a list shows: when,
// about what, the verdict, who asked and where the answer went) and the
// diagnosis itself.
type FindingRecord struct {
	FindingSummary
	Finding *diagnose.Finding `json:"finding,omitempty"`
}

// FindingSummary is a finding as a list shows it, read without the finding's
// evidence.
type FindingSummary struct {
	// ID is made by PutFinding (from At) when empty.
	ID string `json:"id"`
	// At is when the finding was made: Finding.At, else the store's clock.
	At time.Time `json:"at"`
	// Target is what was diagnosed: "pod NS/NAME", "svc NS/NAME",
	// "node NAME" or "netns NAME".
	Target string `json:"target"`
	// Namespace is the target's Kubernetes namespace (from a pod or svc
	// target when empty); Node the node it ran on.
	Namespace string `json:"namespace,omitempty"`
	Node      string `json:"node,omitempty"`
	// Class to Question repeat the finding's, filled from it when empty.
	Class      string  `json:"class"`
	Cause      string  `json:"cause"`
	Confidence float64 `json:"confidence"`
	Summary    string  `json:"summary"`
	Question   string  `json:"question,omitempty"`
	// Source is slack, alert, cli or digest; Requester who asked (a Slack
	// user, "alertmanager", a token's name); Channel and Thread where the
	// answer went.
	Source    string `json:"source,omitempty"`
	Requester string `json:"requester,omitempty"`
	Channel   string `json:"channel,omitempty"`
	Thread    string `json:"thread,omitempty"`
	// PcapBytes is the size of the stored pcap; PcapNote says why a pcap
	// was not stored. The store sets both.
	PcapBytes int64  `json:"pcap_bytes,omitempty"`
	PcapNote  string `json:"pcap_note,omitempty"`
}

func (r *FindingRecord) summary() FindingSummary { return r.FindingSummary }

func (s *FindingSummary) record(f *diagnose.Finding) *FindingRecord {
	return &FindingRecord{FindingSummary: *s, Finding: f}
}

// maxKeyText bounds the strings that become index keys.
const maxKeyText = 512

// ValidateTarget checks a finding's target and returns the namespace a pod
// or svc target names.
func ValidateTarget(t string) (namespace string, err error) {
	kind, name, ok := strings.Cut(t, " ")
	accepted := `accepted: "pod NS/NAME", "svc NS/NAME", "node NAME" or "netns NAME"`
	if !ok || name == "" || strings.ContainsAny(name, " \x00\n") || len(t) > maxKeyText {
		return "", fmt.Errorf("target %q: %s", t, accepted)
	}
	switch kind {
	case "pod", "svc":
		ns, n, ok := strings.Cut(name, "/")
		if !ok || ns == "" || n == "" || strings.Contains(n, "/") {
			return "", fmt.Errorf("target %q: a %s is NS/NAME: %s", t, kind, accepted)
		}
		return ns, nil
	case "node", "netns":
		return "", nil
	}
	return "", fmt.Errorf("target %q: unknown kind %q: %s", t, kind, accepted)
}

func validKeyText(what, v string) error {
	if len(v) > maxKeyText || strings.ContainsRune(v, 0) {
		return fmt.Errorf("%s %q: accepted: up to %d bytes without a NUL", what, v, maxKeyText)
	}
	return nil
}

// complete validates a record and fills what the store derives.
func (s *Store) complete(r *FindingRecord) error {
	if r == nil || r.Finding == nil {
		return errors.New("store: a finding record needs its Finding")
	}
	ns, err := ValidateTarget(r.Target)
	if err != nil {
		return fmt.Errorf("store: finding: %w", err)
	}
	if r.Namespace == "" {
		r.Namespace = ns
	}
	if err := validKeyText("namespace", r.Namespace); err != nil {
		return fmt.Errorf("store: finding: %w", err)
	}
	if err := validKeyText("node", r.Node); err != nil {
		return fmt.Errorf("store: finding: %w", err)
	}
	switch r.Source {
	case "", SourceSlack, SourceAlert, SourceCLI, SourceDigest:
	default:
		return fmt.Errorf("store: finding source %q: accepted: slack, alert, cli, digest", r.Source)
	}
	f := r.Finding
	if r.At.IsZero() {
		r.At = f.At
	}
	if r.At.IsZero() {
		r.At = s.opts.Clock()
	}
	r.At = r.At.UTC()
	if r.ID == "" {
		r.ID = NewID(r.At)
	} else if r.ID, err = ParseID(r.ID); err != nil {
		return fmt.Errorf("store: finding: %w", err)
	}
	if r.Class == "" && r.Cause == "" {
		r.Class, r.Cause, r.Confidence = f.Class, f.Cause, f.Confidence
	}
	if r.Summary == "" {
		r.Summary = f.Summary
	}
	if r.Question == "" {
		r.Question = f.Question
	}
	return nil
}

// PutFinding stores a finding and returns its ID, filling the record's ID,
// At and the fields derived from its Finding. A record with an ID already
// stored replaces it (its pcap stays).
func (s *Store) PutFinding(ctx context.Context, r *FindingRecord) (string, error) {
	if err := s.PutFindings(ctx, []*FindingRecord{r}); err != nil {
		return "", err
	}
	return r.ID, nil
}

// PutFindings stores several findings in one transaction: all or none.
func (s *Store) PutFindings(ctx context.Context, recs []*FindingRecord) error {
	for _, r := range recs {
		if err := s.complete(r); err != nil {
			return err
		}
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		for i, r := range recs {
			if err := scanCheck(ctx, i+1); err != nil {
				return err
			}
			if err := putFinding(tx, r); err != nil {
				return fmt.Errorf("store: put finding %s: %w", r.ID, err)
			}
		}
		return nil
	})
}

// putFinding writes a completed record: its summary, its finding without
// the raw evidence, the raw evidence compressed, and the index entries,
// replacing those of a record stored under the same ID.
func putFinding(tx *bbolt.Tx, r *FindingRecord) error {
	id := []byte(r.ID)
	sums := appending(tx, bSummaries)
	if old := sums.Get(id); old != nil {
		var o FindingSummary
		if err := json.Unmarshal(old, &o); err != nil {
			return fmt.Errorf("the record it replaces: %w", err)
		}
		if err := deleteIndexes(tx, &o); err != nil {
			return err
		}
		if r.PcapBytes == 0 && r.PcapNote == "" {
			r.PcapBytes, r.PcapNote = o.PcapBytes, o.PcapNote
		}
	}
	f := *r.Finding
	raw := f.Raw
	f.Raw = nil
	fb, err := pack(&f)
	if err != nil {
		return err
	}
	sum := r.summary()
	sb, err := json.Marshal(&sum)
	if err != nil {
		return err
	}
	if err := sums.Put(id, sb); err != nil {
		return err
	}
	if err := appending(tx, bFindings).Put(id, fb); err != nil {
		return err
	}
	if len(raw) > 0 {
		zb, err := pack(raw)
		if err != nil {
			return fmt.Errorf("encode raw evidence: %w", err)
		}
		if err := appending(tx, bRaw).Put(id, zb); err != nil {
			return err
		}
	} else if err := tx.Bucket(bRaw).Delete(id); err != nil {
		return err
	}
	for _, ix := range indexesOf(&sum) {
		b := tx.Bucket(ix.bucket)
		if bytes.Equal(ix.bucket, bByTime) {
			b = appending(tx, bByTime)
		}
		if err := b.Put(ix.key, []byte{}); err != nil {
			return err
		}
	}
	return nil
}

// appending returns a bucket whose keys mostly come in order (IDs and times
// of new records): its pages are split fuller than bbolt's half, which suits
// keys inserted in the middle.
func appending(tx *bbolt.Tx, name []byte) *bbolt.Bucket {
	b := tx.Bucket(name)
	b.FillPercent = 0.9
	return b
}

type indexEntry struct {
	bucket []byte
	key    []byte
}

func indexesOf(s *FindingSummary) []indexEntry {
	out := []indexEntry{
		{bByTime, timeIDKey(nil, s.At, s.ID)},
		{bByTarget, timeIDKey(indexPrefix(s.Target), s.At, s.ID)},
	}
	if s.Namespace != "" {
		out = append(out, indexEntry{bByNS, timeIDKey(indexPrefix(s.Namespace), s.At, s.ID)})
	}
	if s.Node != "" {
		out = append(out, indexEntry{bByNode, timeIDKey(indexPrefix(s.Node), s.At, s.ID)})
	}
	return out
}

func deleteIndexes(tx *bbolt.Tx, s *FindingSummary) error {
	for _, ix := range indexesOf(s) {
		if err := tx.Bucket(ix.bucket).Delete(ix.key); err != nil {
			return err
		}
	}
	return nil
}

// deleteFinding removes a finding and all that hangs on it.
func deleteFinding(tx *bbolt.Tx, s *FindingSummary) error {
	id := []byte(s.ID)
	for _, b := range [][]byte{bSummaries, bFindings, bRaw, bPcaps} {
		if err := tx.Bucket(b).Delete(id); err != nil {
			return err
		}
	}
	return deleteIndexes(tx, s)
}

// packedFormat marks a value as DEFLATE-compressed JSON; the byte leaves
// room for another encoding later.
const packedFormat = 'z'

var flateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.DefaultCompression)
	return w
}}

// pack encodes v as JSON and compresses it: a finding's JSON is mostly
// repeated names, a third of its size deflated.
func pack(v any) ([]byte, error) {
	js, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(len(js)/3 + 64)
	buf.WriteByte(packedFormat)
	w := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(w)
	w.Reset(&buf)
	if _, err := w.Write(js); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// maxUnpacked bounds inflating a value, so a damaged one cannot take the
// memory.
const maxUnpacked = 256 << 20

// unpack decodes a value written by pack, or plain JSON.
func unpack(b []byte, v any) error {
	if len(b) > 0 && b[0] == '{' || len(b) > 0 && b[0] == '[' {
		return json.Unmarshal(b, v)
	}
	if len(b) == 0 || b[0] != packedFormat {
		return errors.New("a value in an unknown format")
	}
	r := flate.NewReader(bytes.NewReader(b[1:]))
	defer r.Close()
	js, err := io.ReadAll(io.LimitReader(r, maxUnpacked+1))
	if err != nil {
		return fmt.Errorf("inflate: %w", err)
	}
	if len(js) > maxUnpacked {
		return fmt.Errorf("a value inflates past %d bytes", maxUnpacked)
	}
	return json.Unmarshal(js, v)
}

// Finding returns a stored finding; its raw evidence, which can be large,
// only when withRaw.
func (s *Store) Finding(ctx context.Context, id string, withRaw bool) (*FindingRecord, error) {
	id, err := ParseID(id)
	if err != nil {
		return nil, fmt.Errorf("store: finding: %w", err)
	}
	var rec *FindingRecord
	err = s.view(ctx, func(tx *bbolt.Tx) error {
		sb := tx.Bucket(bSummaries).Get([]byte(id))
		if sb == nil {
			return fmt.Errorf("store: finding %s: %w", id, ErrNotFound)
		}
		var sum FindingSummary
		if err := json.Unmarshal(sb, &sum); err != nil {
			return fmt.Errorf("store: finding %s: %w", id, err)
		}
		f := new(diagnose.Finding)
		if err := unpack(tx.Bucket(bFindings).Get([]byte(id)), f); err != nil {
			return fmt.Errorf("store: finding %s: %w", id, err)
		}
		if withRaw {
			if zb := tx.Bucket(bRaw).Get([]byte(id)); zb != nil {
				if err := unpack(zb, &f.Raw); err != nil {
					return fmt.Errorf("store: raw evidence of finding %s: %w", id, err)
				}
			}
		}
		rec = sum.record(f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// HistoryQuery selects findings: of one Target, of targets starting with
// TargetPrefix (e.g. "pod shop/web-"), of a Namespace, of a Node, or all
// of them when none is given; made at Since or later and before Until
// (either zero: no bound).
type HistoryQuery struct {
	Target       string
	TargetPrefix string
	Namespace    string
	Node         string
	Since, Until time.Time
	// Limit is at most how many to return, newest first (default 50, at
	// most MaxHistory).
	Limit int
}

// DefaultHistory and MaxHistory bound a history's length.
const (
	DefaultHistory = 50
	MaxHistory     = 10000
)

// History lists findings newest first, from the indexes and the summaries
// alone: no finding or raw evidence is decoded.
func (s *Store) History(ctx context.Context, q HistoryQuery) ([]FindingSummary, error) {
	var (
		bucket []byte
		prefix []byte
		given  int
	)
	for _, x := range []struct {
		v string
		b []byte
	}{{q.Target, bByTarget}, {q.Namespace, bByNS}, {q.Node, bByNode}} {
		if x.v != "" {
			given++
			bucket, prefix = x.b, indexPrefix(x.v)
		}
	}
	if q.TargetPrefix != "" {
		given++
		bucket, prefix = bByTarget, []byte(q.TargetPrefix)
		if err := validKeyText("target prefix", q.TargetPrefix); err != nil {
			return nil, fmt.Errorf("store: history: %w", err)
		}
	}
	if given > 1 {
		return nil, errors.New("store: history: give one of Target, TargetPrefix, Namespace or Node (or none for all)")
	}
	if bucket == nil {
		bucket = bByTime
	}
	if q.Limit < 0 || q.Limit > MaxHistory {
		return nil, fmt.Errorf("store: history: limit %d: accepted: 1 to %d (0 for %d)", q.Limit, MaxHistory, DefaultHistory)
	}
	if q.Limit == 0 {
		q.Limit = DefaultHistory
	}
	since, until := int64(0), int64(math.MaxInt64) // until is exclusive
	if !q.Since.IsZero() {
		since = q.Since.UnixNano()
	}
	if !q.Until.IsZero() {
		until = q.Until.UnixNano()
	}
	var out []FindingSummary
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		var ids [][]byte
		var err error
		if q.TargetPrefix != "" {
			ids, err = newestByPrefix(ctx, tx.Bucket(bucket).Cursor(), prefix, since, until, q.Limit)
		} else {
			ids, err = newestInRange(ctx, tx.Bucket(bucket).Cursor(), prefix, since, until, q.Limit)
		}
		if err != nil {
			return err
		}
		sums := tx.Bucket(bSummaries)
		out = make([]FindingSummary, len(ids))
		for i, id := range ids {
			if err := json.Unmarshal(sums.Get(id), &out[i]); err != nil {
				return fmt.Errorf("store: summary of finding %s: %w", id, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// newestInRange walks the keys prefix | at | id with since <= at < until
// backwards from until, returning up to limit IDs.
func newestInRange(ctx context.Context, c *bbolt.Cursor, prefix []byte, since, until int64, limit int) ([][]byte, error) {
	seek := timeIDKey(prefix, time.Unix(0, until), "")
	k, _ := c.Seek(seek)
	if k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	var ids [][]byte
	for n := 1; k != nil && bytes.HasPrefix(k, prefix) && len(ids) < limit; n++ {
		if err := scanCheck(ctx, n); err != nil {
			return nil, err
		}
		at, id, ok := splitTimeKey(k, len(prefix))
		if !ok || at < since {
			break
		}
		ids = append(ids, id)
		k, _ = c.Prev()
	}
	return ids, nil
}

// newestByPrefix collects, over every target starting with prefix, the
// limit newest entries in the time range.
func newestByPrefix(ctx context.Context, c *bbolt.Cursor, prefix []byte, since, until int64, limit int) ([][]byte, error) {
	h := &entryHeap{}
	n := 0
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		n++
		if err := scanCheck(ctx, n); err != nil {
			return nil, err
		}
		sep := bytes.IndexByte(k, 0)
		if sep < 0 {
			continue
		}
		at, id, ok := splitTimeKey(k, sep+1)
		if !ok || at < since || at >= until {
			continue
		}
		e := entry{at, string(id)}
		if h.Len() < limit {
			heap.Push(h, e)
		} else if (*h)[0].less(e) {
			(*h)[0] = e
			heap.Fix(h, 0)
		}
	}
	es := []entry(*h)
	slices.SortFunc(es, func(a, b entry) int {
		if a.less(b) {
			return 1
		}
		if b.less(a) {
			return -1
		}
		return 0
	})
	ids := make([][]byte, len(es))
	for i, e := range es {
		ids[i] = []byte(e.id)
	}
	return ids, nil
}

type entry struct {
	at int64
	id string
}

func (a entry) less(b entry) bool { return a.at < b.at || a.at == b.at && a.id < b.id }

// entryHeap keeps the oldest of the newest entries on top.
type entryHeap []entry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].less(h[j]) }
func (h entryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *entryHeap) Push(x any)        { *h = append(*h, x.(entry)) }
func (h *entryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// pcapMagics are the first bytes of a pcap (both byte orders, micro- and
// nanosecond) and of a pcapng file.
var pcapMagics = [][]byte{
	{0xd4, 0xc3, 0xb2, 0xa1}, {0xa1, 0xb2, 0xc3, 0xd4},
	{0x4d, 0x3c, 0xb2, 0xa1}, {0xa1, 0xb2, 0x3c, 0x4d},
	{0x0a, 0x0d, 0x0d, 0x0a},
}

// PutPcap stores the capture of a finding, read from r. One larger than
// Options.MaxPcapBytes is not stored: the record's PcapNote says so and
// where the file was (the finding's Pcap path), and the error wraps
// ErrPcapTooLarge.
func (s *Store) PutPcap(ctx context.Context, findingID string, r io.Reader) error {
	return s.putPcap(ctx, findingID, r, -1)
}

// PutPcapFile stores the capture file at path with a finding; a file over
// the limit is refused without reading it (see PutPcap).
func (s *Store) PutPcapFile(ctx context.Context, findingID, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("store: pcap of finding %s: %w", findingID, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("store: pcap of finding %s: %w", findingID, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("store: pcap of finding %s: %s is not a regular file", findingID, path)
	}
	return s.putPcap(ctx, findingID, f, fi.Size())
}

func (s *Store) putPcap(ctx context.Context, findingID string, r io.Reader, size int64) error {
	id, err := ParseID(findingID)
	if err != nil {
		return fmt.Errorf("store: pcap: %w", err)
	}
	p, err := s.readPcap(id, r, size)
	if err != nil {
		return err
	}
	var note string
	err = s.update(ctx, func(tx *bbolt.Tx) error {
		var err error
		note, err = p.put(tx, id)
		return err
	})
	if err != nil {
		return err
	}
	if p.tooLarge {
		return fmt.Errorf("store: finding %s: %s: %w", id, note, ErrPcapTooLarge)
	}
	return nil
}

// pcapData is a capture read for storing: its bytes, or, over the limit,
// only that it is too large (and its size when known).
type pcapData struct {
	data     []byte
	tooLarge bool
	size     int64
	limit    int64
}

func (s *Store) readPcap(id string, r io.Reader, size int64) (*pcapData, error) {
	p := &pcapData{size: size, limit: s.opts.MaxPcapBytes}
	p.tooLarge = size > p.limit
	if !p.tooLarge {
		var err error
		if p.data, err = io.ReadAll(io.LimitReader(r, p.limit+1)); err != nil {
			return nil, fmt.Errorf("store: pcap of finding %s: read: %w", id, err)
		}
		if int64(len(p.data)) > p.limit {
			p.tooLarge, p.size, p.data = true, -1, nil // only known to be over
		}
	}
	if !p.tooLarge && !slices.ContainsFunc(pcapMagics, func(m []byte) bool { return bytes.HasPrefix(p.data, m) }) {
		return nil, fmt.Errorf("store: pcap of finding %s: not a capture file: accepted: pcap or pcapng as tcpdump writes them", id)
	}
	return p, nil
}

func (p *pcapData) put(tx *bbolt.Tx, id string) (string, error) {
	return putPcapTx(tx, id, p.data, p.tooLarge, p.size, p.limit)
}

func sizeText(n int64) string {
	if n >= 0 {
		return fmt.Sprintf("its %d bytes are", n)
	}
	return "it is"
}

// Pcap returns the capture stored with a finding; ErrNotFound (with the
// record's note, if it was refused) when there is none.
func (s *Store) Pcap(ctx context.Context, findingID string) ([]byte, error) {
	id, err := ParseID(findingID)
	if err != nil {
		return nil, fmt.Errorf("store: pcap: %w", err)
	}
	var out []byte
	err = s.view(ctx, func(tx *bbolt.Tx) error {
		if p := tx.Bucket(bPcaps).Get([]byte(id)); p != nil {
			out = bytes.Clone(p)
			return nil
		}
		sb := tx.Bucket(bSummaries).Get([]byte(id))
		if sb == nil {
			return fmt.Errorf("store: pcap of finding %s: no such finding: %w", id, ErrNotFound)
		}
		var sum FindingSummary
		if err := json.Unmarshal(sb, &sum); err == nil && sum.PcapNote != "" {
			return fmt.Errorf("store: finding %s: %s: %w", id, sum.PcapNote, ErrNotFound)
		}
		return fmt.Errorf("store: finding %s has no pcap: %w", id, ErrNotFound)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// putPcapTx stores data as the pcap of finding id, or, when tooLarge, a note
// on its summary saying why it was not kept.
func putPcapTx(tx *bbolt.Tx, id string, data []byte, tooLarge bool, size, limit int64) (note string, err error) {
	sums := tx.Bucket(bSummaries)
	sb := sums.Get([]byte(id))
	if sb == nil {
		return "", fmt.Errorf("store: pcap of finding %s: %w (store the finding first)", id, ErrNotFound)
	}
	var sum FindingSummary
	if err := json.Unmarshal(sb, &sum); err != nil {
		return "", err
	}
	pcaps := tx.Bucket(bPcaps)
	if tooLarge {
		where := "its file"
		var f diagnose.Finding
		if unpack(tx.Bucket(bFindings).Get([]byte(id)), &f) == nil && f.Pcap != nil {
			where = *f.Pcap
		}
		note = fmt.Sprintf("pcap not stored: %s over the store's limit of %d bytes (Options.MaxPcapBytes); it was at %s", sizeText(size), limit, where)
		sum.PcapBytes, sum.PcapNote = 0, note
		if err := pcaps.Delete([]byte(id)); err != nil {
			return "", err
		}
	} else {
		sum.PcapBytes, sum.PcapNote = int64(len(data)), ""
		if err := pcaps.Put([]byte(id), data); err != nil {
			return "", err
		}
	}
	nb, err := json.Marshal(&sum)
	if err != nil {
		return "", err
	}
	return note, sums.Put([]byte(id), nb)
}
