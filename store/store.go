package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Defaults of Options.
const (
	DefaultOpenTimeout  = 2 * time.Second
	DefaultMaxAge       = 90 * 24 * time.Hour
	DefaultMaxBytes     = 1 << 30
	DefaultMaxPcapBytes = 8 << 20
)

// Options tune a store; the zero value takes every default.
type Options struct {
	// OpenTimeout bounds the wait for the file's lock: another process that
	// holds it (another netdiag) makes Open fail after it (default 2s).
	OpenTimeout time.Duration
	// MaxAge is how long Sweep keeps findings, audit entries, alerts and
	// threads (default 90 days).
	MaxAge time.Duration
	// MaxBytes is the live data Sweep keeps the file under, dropping the
	// oldest findings first (default 1 GiB).
	MaxBytes int64
	// MaxPcapBytes is the largest pcap kept with a finding (default 8 MiB);
	// a larger one is refused and the record says so and where it was.
	MaxPcapBytes int64
	// Clock is the time source (time.Now); tests move it.
	Clock func() time.Time
	// Logger receives what the store does on its own (migrations, sweeps,
	// compactions); slog.Default() when nil.
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	for _, x := range []struct {
		name string
		v    int64
	}{{"OpenTimeout", int64(o.OpenTimeout)}, {"MaxAge", int64(o.MaxAge)}, {"MaxBytes", o.MaxBytes}, {"MaxPcapBytes", o.MaxPcapBytes}} {
		if x.v < 0 {
			return o, fmt.Errorf("store: Options.%s is negative (%d): give 0 for the default or a positive value", x.name, x.v)
		}
	}
	if o.OpenTimeout == 0 {
		o.OpenTimeout = DefaultOpenTimeout
	}
	if o.MaxAge == 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxPcapBytes == 0 {
		o.MaxPcapBytes = DefaultMaxPcapBytes
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// Errors a caller tells apart with errors.Is.
var (
	// ErrNotFound: no record under that key.
	ErrNotFound = errors.New("not found")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrDamaged: the file is not a netdiag store or is damaged (see
	// DamagedError).
	ErrDamaged = errors.New("store damaged")
	// ErrLocked: another process holds the file (see LockedError).
	ErrLocked = errors.New("store locked")
	// ErrPcapTooLarge: a pcap over Options.MaxPcapBytes was refused.
	ErrPcapTooLarge = errors.New("pcap too large")
)

// DamagedError says the file cannot be used as a store and what to do.
type DamagedError struct {
	Path   string
	Reason string
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("store: %s is not a netdiag store or is damaged: %s (move it aside; netdiag starts a new one)", e.Path, e.Reason)
}

// Is makes errors.Is(err, ErrDamaged) true.
func (e *DamagedError) Is(target error) bool { return target == ErrDamaged }

// LockedError says the file's lock is held: by another process, or by
// another open of it in this one.
type LockedError struct {
	Path   string
	Waited time.Duration
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("store: %s is locked: another netdiag may be using it (or this one has it open already); gave up after %s (Options.OpenTimeout)", e.Path, e.Waited.Round(time.Millisecond))
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Store is an open store file. Its methods are safe for concurrent use:
// readers run in parallel, writers one at a time, each write durable on
// disk when its method returns.
type Store struct {
	path string
	opts Options
	log  *slog.Logger

	// mu is held shared by every operation and exclusively by Close and
	// Compact, which replace db.
	mu   sync.RWMutex
	db   *bbolt.DB
	file *os.File // the locked file under db, for its size
}

// Open opens the store at path, creating it when it does not exist. A new
// file is built under a temporary name and linked into place complete, so a
// crash never leaves a half-made store at path. A file that is not a store
// or is damaged gives a DamagedError, one locked by another process a
// LockedError after Options.OpenTimeout; an older schema is migrated in one
// transaction.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if path == "" {
		return nil, errors.New("store: no path: give the store file's path, e.g. /var/lib/netdiag/netdiag.db")
	}
	path = filepath.Clean(path)
	start := time.Now()
	deadline := start.Add(opts.OpenTimeout)
	for attempt := 0; ; attempt++ {
		if attempt == 10 {
			return nil, fmt.Errorf("store: %s is replaced again and again while opening it: is another program rewriting it?", path)
		}
		f, err := openOrCreate(ctx, path, opts)
		if err != nil {
			return nil, err
		}
		if err := lockFile(ctx, f, deadline); err != nil {
			f.Close()
			if errors.Is(err, ErrLocked) {
				return nil, &LockedError{Path: path, Waited: time.Since(start)}
			}
			return nil, fmt.Errorf("store: lock %s: %w", path, err)
		}
		// A compaction in another process may have renamed a new file over
		// the one we waited on: the lock must be on the file at path.
		same, err := isFileAt(f, path)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("store: %w", err)
		}
		if !same {
			f.Close()
			continue
		}
		s := &Store{path: path, opts: opts, log: opts.Logger.With("store", path)}
		if err := s.attach(f); err != nil {
			return nil, err
		}
		if err := s.prepare(ctx); err != nil {
			s.db.Close()
			return nil, err
		}
		return s, nil
	}
}

// openOrCreate opens path for reading and writing, first creating a new
// store there if nothing is.
func openOrCreate(ctx context.Context, path string, opts Options) (*os.File, error) {
	for range 3 {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		switch {
		case err == nil:
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("store: %w", err)
			}
			if !fi.Mode().IsRegular() {
				f.Close()
				return nil, fmt.Errorf("store: %s is not a regular file (%s): give the path of a file, e.g. /var/lib/netdiag/netdiag.db", path, fi.Mode().Type())
			}
			return f, nil
		case errors.Is(err, syscall.EISDIR):
			return nil, fmt.Errorf("store: %s is a directory: give the path of a file in it, e.g. %s", path, filepath.Join(path, "netdiag.db"))
		case errors.Is(err, os.ErrNotExist):
			if err := create(ctx, path, opts); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	return nil, fmt.Errorf("store: %s disappears as soon as it is created: is something removing it?", path)
}

// create builds an empty store of the current schema beside path and links
// it into place unless another process did first.
func create(ctx context.Context, path string, opts Options) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".new-*")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("store: cannot create %s: its directory %s does not exist", path, dir)
		}
		return fmt.Errorf("store: cannot create %s: %w", path, err)
	}
	tmpPath := tmp.Name()
	defer os.Remove(tmpPath)
	db, err := bbolt.Open(tmpPath, 0o600, boltOptions(tmp))
	if err != nil {
		tmp.Close()
		return fmt.Errorf("store: create %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error { return createSchema(tx, opts.Clock()) })
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("store: create %s: %w", path, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// A link puts the file in place only if none is there yet; a rename
	// would replace a store another process made meanwhile.
	if err := os.Link(tmpPath, path); err != nil && !errors.Is(err, os.ErrExist) {
		// Some file systems have no hard links: rename, if still nothing
		// is there (a small window a link does not have).
		if _, serr := os.Lstat(path); !errors.Is(serr, os.ErrNotExist) {
			return fmt.Errorf("store: create %s: %w", path, err)
		}
		if err := os.Rename(tmpPath, path); err != nil {
			return fmt.Errorf("store: create %s: %w", path, err)
		}
	}
	return syncDir(dir)
}

func boltOptions(f *os.File) *bbolt.Options {
	return &bbolt.Options{
		// The file is opened and locked before bbolt sees it: our lock
		// honours the context and tells a replaced file from ours.
		OpenFile:     func(string, int, os.FileMode) (*os.File, error) { return f, nil },
		Timeout:      time.Second,
		FreelistType: bbolt.FreelistMapType,
	}
}

// lockFile takes the exclusive lock bbolt would take (flock, so a second
// open file in this process is kept out as well as another process), retrying
// until the deadline.
func lockFile(ctx context.Context, f *os.File, deadline time.Time) error {
	fd := int(f.Fd())
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return err
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return ErrLocked
		}
		t := time.NewTimer(min(wait, 25*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func isFileAt(f *os.File, path string) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	pi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(fi, pi), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: sync %s: %w", dir, err)
	}
	return nil
}

// attach opens bbolt on the locked file f. bbolt can panic or fault on a
// damaged file: both become a DamagedError, and f is closed on every failure.
func (s *Store) attach(f *os.File) (err error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("store: %w", err)
	}
	if fi.Size() == 0 {
		f.Close()
		return &DamagedError{Path: s.path, Reason: "the file is empty"}
	}
	if reason := truncated(f, fi.Size()); reason != "" {
		f.Close()
		return &DamagedError{Path: s.path, Reason: reason}
	}
	defer func() {
		if r := recover(); r != nil {
			// bbolt's map of the file holds the file open, and with it
			// the lock, past f.Close: unmap it.
			unmapFile(f)
			f.Close()
			err = &DamagedError{Path: s.path, Reason: fmt.Sprintf("bbolt failed reading it: %v", r)}
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err := bbolt.Open(s.path, 0o600, boltOptions(f))
	if err != nil {
		f.Close() // bbolt closed it on most failures; a second close is harmless
		// The system's errors (I/O, memory) are not the file's fault; what
		// bbolt finds wrong in the content is.
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return fmt.Errorf("store: open %s: %w", s.path, err)
		}
		return &DamagedError{Path: s.path, Reason: err.Error()}
	}
	s.db, s.file = db, f
	return nil
}

// prepare is the first transaction: it checks the file is a whole netdiag
// store and brings its schema to the current version.
func (s *Store) prepare(ctx context.Context) error {
	fi, err := s.file.Stat()
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		if tx.Size() > fi.Size() {
			return &DamagedError{Path: s.path, Reason: fmt.Sprintf("truncated: its data reaches byte %d but the file has %d", tx.Size(), fi.Size())}
		}
		return s.migrate(ctx, tx)
	})
}

// Path is the store file's path.
func (s *Store) Path() string { return s.path }

// Close waits for running operations and closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db, s.file = nil, nil
	if err != nil {
		return fmt.Errorf("store: close %s: %w", s.path, err)
	}
	return nil
}

// view runs fn in a read transaction; update in a write transaction that is
// on disk when update returns nil. Both turn a bbolt panic or memory fault
// on damaged pages into a DamagedError.
func (s *Store) view(ctx context.Context, fn func(*bbolt.Tx) error) error {
	return s.tx(ctx, false, fn)
}

func (s *Store) update(ctx context.Context, fn func(*bbolt.Tx) error) error {
	return s.tx(ctx, true, fn)
}

func (s *Store) tx(ctx context.Context, write bool, fn func(*bbolt.Tx) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return ErrClosed
	}
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("bbolt failed on a damaged page", "panic", r)
			err = &DamagedError{Path: s.path, Reason: fmt.Sprintf("bbolt failed reading it: %v", r)}
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if write {
		return s.db.Update(fn)
	}
	return s.db.View(fn)
}

// checkEvery is how many records a scan reads between looks at its context.
const checkEvery = 256

func scanCheck(ctx context.Context, n int) error {
	if n%checkEvery == 0 {
		return ctx.Err()
	}
	return nil
}
