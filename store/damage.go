package store

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// bbolt's file format: two meta pages lead the file, each a 16-byte page
// header and then magic, version, page size, flags, the root bucket (page,
// sequence), the free list's page, the high-water mark (pages), the
// transaction ID and an FNV-64a checksum of the fields before it, all in
// the machine's byte order.
const (
	boltMagic   = 0xED0CDAED
	boltVersion = 2
	metaOffset  = 16
	metaSumLen  = 56
)

type boltMeta struct {
	pageSize, pgid, txid uint64
}

// readMeta reads and checks the meta page at off.
func readMeta(f io.ReaderAt, off int64) (boltMeta, bool) {
	var b [metaOffset + metaSumLen + 8]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		return boltMeta{}, false
	}
	m := b[metaOffset:]
	ne := binary.NativeEndian
	if ne.Uint32(m[0:]) != boltMagic || ne.Uint32(m[4:]) != boltVersion {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	h.Write(m[:metaSumLen])
	if h.Sum64() != ne.Uint64(m[metaSumLen:]) {
		return boltMeta{}, false
	}
	return boltMeta{pageSize: uint64(ne.Uint32(m[8:])), pgid: ne.Uint64(m[40:]), txid: ne.Uint64(m[48:])}, true
}

// truncated reads the meta pages as bbolt does and says whether the file is
// shorter than the data they describe, which bbolt would fault reading; ""
// when it is long enough or no meta page is whole (bbolt then says so).
func truncated(f *os.File, size int64) string {
	best, ok := readMeta(f, 0)
	second := int64(os.Getpagesize())
	if ok {
		second = int64(best.pageSize)
	}
	if m, ok1 := readMeta(f, second); ok1 && (!ok || m.txid > best.txid) {
		best, ok = m, true
	}
	if hwm := int64(best.pgid * best.pageSize); ok && hwm > size {
		return fmt.Sprintf("truncated: its data reaches byte %d but the file has %d", hwm, size)
	}
	return ""
}

// unmapFile unmaps every map of f's file in this process: after bbolt
// panicked in Open, nothing else maps it (the lock kept any other store of
// this file out of the process).
func unmapFile(f *os.File) {
	fi, err := f.Stat()
	if err != nil {
		return
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return
	}
	maps, err := os.Open("/proc/self/maps")
	if err != nil {
		return
	}
	defer maps.Close()
	var ranges [][2]uintptr
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		// start-end perms offset major:minor inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || fields[4] != strconv.FormatUint(st.Ino, 10) {
			continue
		}
		major, minor, ok := strings.Cut(fields[3], ":")
		ma, err1 := strconv.ParseUint(major, 16, 32)
		mi, err2 := strconv.ParseUint(minor, 16, 32)
		if !ok || err1 != nil || err2 != nil || uint32(ma) != unix.Major(st.Dev) || uint32(mi) != unix.Minor(st.Dev) {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		a, err1 := strconv.ParseUint(lo, 16, 64)
		b, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 == nil && err2 == nil {
			ranges = append(ranges, [2]uintptr{uintptr(a), uintptr(b)})
		}
	}
	for _, r := range ranges {
		unix.Syscall(unix.SYS_MUNMAP, r[0], r[1]-r[0], 0)
	}
}
