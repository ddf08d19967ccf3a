package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"go.etcd.io/bbolt"
)

// The file's layout (schema version 2). Every bucket is flat; times in keys
// are 8-byte big-endian Unix nanoseconds, so byte order is time order.
//
//	meta          "schema" -> decimal version, "created" -> RFC 3339 time
//	summaries     finding ID -> FindingSummary (JSON): all that listing needs
//	findings      finding ID -> 'z' + DEFLATE(JSON of diagnose.Finding without Raw)
//	raw           finding ID -> 'z' + DEFLATE(JSON of Finding.Raw)
//	pcaps         finding ID -> the pcap file's bytes
//	by_time       at | ID -> ""
//	by_target     target 0x00 at | ID -> ""
//	by_namespace  namespace 0x00 at | ID -> ""
//	by_node       node 0x00 at | ID -> ""
//	alerts        fingerprint -> AlertSeen (JSON)
//	alerts_open   fingerprint -> "" for the firing ones
//	threads       group key -> ThreadRef (JSON)
//	audit         at | sequence -> AuditEntry (JSON)
//	outbox        message ID -> Message (JSON)
//	outbox_due    next attempt | message ID -> ""
//	digest        digest name -> DigestState (JSON)
var (
	bMeta       = []byte("meta")
	bSummaries  = []byte("summaries")
	bFindings   = []byte("findings")
	bRaw        = []byte("raw")
	bPcaps      = []byte("pcaps")
	bByTime     = []byte("by_time")
	bByTarget   = []byte("by_target")
	bByNS       = []byte("by_namespace")
	bByNode     = []byte("by_node")
	bAlerts     = []byte("alerts")
	bAlertsOpen = []byte("alerts_open")
	bThreads    = []byte("threads")
	bAudit      = []byte("audit")
	bOutbox     = []byte("outbox")
	bOutboxDue  = []byte("outbox_due")
	bDigest     = []byte("digest")

	kSchema  = []byte("schema")
	kCreated = []byte("created")
)

// SchemaVersion is the layout this code reads and writes.
const SchemaVersion = 2

var currentBuckets = [][]byte{bMeta, bSummaries, bFindings, bRaw, bPcaps, bByTime, bByTarget, bByNS, bByNode,
	bAlerts, bAlertsOpen, bThreads, bAudit, bOutbox, bOutboxDue, bDigest}

// migrations[i] brings a store from schema version i+1 to i+2. They run in
// order in Open's first transaction, so a store is never half migrated.
var migrations = []func(context.Context, *bbolt.Tx) error{
	migrateV1toV2,
}

func createSchema(tx *bbolt.Tx, now time.Time) error {
	for _, name := range currentBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bMeta)
	if err := meta.Put(kSchema, []byte(strconv.Itoa(SchemaVersion))); err != nil {
		return err
	}
	return meta.Put(kCreated, []byte(now.UTC().Format(time.RFC3339)))
}

// migrate checks the store's schema version and migrates it to the current.
func (s *Store) migrate(ctx context.Context, tx *bbolt.Tx) error {
	meta := tx.Bucket(bMeta)
	if meta == nil {
		return &DamagedError{Path: s.path, Reason: "it is a bbolt file without netdiag's meta bucket"}
	}
	raw := meta.Get(kSchema)
	v, err := strconv.Atoi(string(raw))
	if err != nil || v < 1 {
		return &DamagedError{Path: s.path, Reason: fmt.Sprintf("its schema version %q is not a version", raw)}
	}
	if v > SchemaVersion {
		return fmt.Errorf("store: %s has schema version %d but this netdiag knows versions up to %d: run a newer netdiag, or move the file aside to start a new store", s.path, v, SchemaVersion)
	}
	for ; v < SchemaVersion; v++ {
		start := time.Now()
		if err := migrations[v-1](ctx, tx); err != nil {
			return fmt.Errorf("store: %s: migrating schema version %d to %d: %w (the file is unchanged)", s.path, v, v+1, err)
		}
		if err := meta.Put(kSchema, []byte(strconv.Itoa(v+1))); err != nil {
			return err
		}
		s.log.Info("store schema migrated", "from", v, "to", v+1, "took", time.Since(start).Round(time.Millisecond))
	}
	for _, name := range currentBuckets {
		if tx.Bucket(name) == nil {
			return &DamagedError{Path: s.path, Reason: fmt.Sprintf("its bucket %q is missing", name)}
		}
	}
	return nil
}

// Schema version 1 kept each finding whole in one record: the
// FindingRecord's fields and the finding with its raw evidence inline, keyed
// by ID, with no index, so listing a target's history decoded every record.
// Its buckets were meta, findings, pcaps, alerts, threads, audit, outbox and
// digest, with the values version 2 keeps in them (but findings).
//
// migrateV1toV2 splits each record into its summary, its finding and its
// compressed raw evidence, builds the indexes, and indexes the firing alerts
// and the outbox's due times.
func migrateV1toV2(ctx context.Context, tx *bbolt.Tx) error {
	for _, name := range currentBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	// The findings bucket is rewritten in place: its keys are collected
	// first, as a bucket must not be written while a cursor walks it, and
	// each record is decoded in turn, so a large store is not held in
	// memory whole.
	findings, pcaps := tx.Bucket(bFindings), tx.Bucket(bPcaps)
	var ids [][]byte
	n := 0
	err := findings.ForEach(func(k, _ []byte) error {
		n++
		ids = append(ids, bytes.Clone(k))
		return scanCheck(ctx, n)
	})
	if err != nil {
		return err
	}
	for i, id := range ids {
		if err := scanCheck(ctx, i+1); err != nil {
			return err
		}
		var r FindingRecord
		if err := json.Unmarshal(findings.Get(id), &r); err != nil {
			return fmt.Errorf("finding %s: %w", id, err)
		}
		if r.ID == "" {
			r.ID = string(id)
		}
		if r.Finding == nil {
			return fmt.Errorf("finding %s: no finding in the record", id)
		}
		r.PcapBytes = int64(len(pcaps.Get(id)))
		if err := putFinding(tx, &r); err != nil {
			return fmt.Errorf("finding %s: %w", id, err)
		}
	}
	open := tx.Bucket(bAlertsOpen)
	err = tx.Bucket(bAlerts).ForEach(func(k, v []byte) error {
		var a AlertSeen
		if err := json.Unmarshal(v, &a); err != nil {
			return fmt.Errorf("alert %s: %w", k, err)
		}
		if a.Status == AlertFiring {
			return open.Put(k, []byte{})
		}
		return nil
	})
	if err != nil {
		return err
	}
	due := tx.Bucket(bOutboxDue)
	return tx.Bucket(bOutbox).ForEach(func(k, v []byte) error {
		var m Message
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("outbox message %s: %w", k, err)
		}
		return due.Put(timeIDKey(nil, m.NextAttempt, string(k)), []byte{})
	})
}
