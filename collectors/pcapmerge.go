package collectors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// PcapPart is one capture to merge: its file and what the merged file calls
// it (Wireshark's "Interface name" and "description" columns).
type PcapPart struct {
	Name        string // e.g. "source"
	Description string // e.g. "pod default/client eth0"
	Path        string
}

// MergePcaps writes, at out, one pcapng file with the packets of several
// classic pcap captures in time order, each capture an interface of its
// own: both ends of a flow side by side, and for each packet which end saw
// it. A part whose file is missing is left out; an unreadable one is an
// error. out may be one of the parts: the file is replaced only once the
// merge is written.
func MergePcaps(out string, parts []PcapPart) error {
	type packet struct {
		at    int64 // ns since the epoch, for the order
		iface int
		ts    uint64 // in the interface's resolution
		wire  uint32
		data  []byte
	}
	type iface struct {
		part    PcapPart
		link    uint32
		snaplen uint32
		nano    bool
	}
	var ifaces []iface
	var pkts []packet
	for _, p := range parts {
		b, err := os.ReadFile(p.Path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("merge pcaps: %w", err)
		}
		h, recs, err := readClassicPcap(b)
		if err != nil {
			return fmt.Errorf("merge pcaps: %s: %w", p.Path, err)
		}
		id := len(ifaces)
		ifaces = append(ifaces, iface{part: p, link: h.link, snaplen: h.snaplen, nano: h.nano})
		for _, r := range recs {
			at := int64(r.sec) * 1e9
			ts := uint64(r.sec)*1e6 + uint64(r.frac)
			if h.nano {
				at += int64(r.frac)
				ts = uint64(r.sec)*1e9 + uint64(r.frac)
			} else {
				at += int64(r.frac) * 1e3
			}
			pkts = append(pkts, packet{at: at, iface: id, ts: ts, wire: r.wire, data: r.data})
		}
	}
	if len(ifaces) == 0 {
		return errors.New("merge pcaps: none of the captures exists")
	}
	sort.SliceStable(pkts, func(i, j int) bool { return pkts[i].at < pkts[j].at })

	var w bytes.Buffer
	le := binary.LittleEndian
	block := func(typ uint32, body []byte) {
		n := uint32(12 + len(body))
		w.Write(le.AppendUint32(nil, typ))
		w.Write(le.AppendUint32(nil, n))
		w.Write(body)
		w.Write(le.AppendUint32(nil, n))
	}
	// Section header: byte-order magic, version 1.0, length unknown.
	shb := le.AppendUint32(nil, 0x1A2B3C4D)
	shb = le.AppendUint16(shb, 1)
	shb = le.AppendUint16(shb, 0)
	shb = le.AppendUint64(shb, ^uint64(0))
	block(0x0A0D0D0A, shb)
	for _, f := range ifaces {
		idb := le.AppendUint16(nil, uint16(f.link))
		idb = le.AppendUint16(idb, 0)
		idb = le.AppendUint32(idb, f.snaplen)
		idb = pcapngOption(idb, 2, []byte(f.part.Name))
		if f.part.Description != "" {
			idb = pcapngOption(idb, 3, []byte(f.part.Description))
		}
		res := byte(6)
		if f.nano {
			res = 9
		}
		idb = pcapngOption(idb, 9, []byte{res})
		idb = le.AppendUint32(idb, 0) // opt_endofopt
		block(1, idb)
	}
	for _, p := range pkts {
		epb := le.AppendUint32(nil, uint32(p.iface))
		epb = le.AppendUint32(epb, uint32(p.ts>>32))
		epb = le.AppendUint32(epb, uint32(p.ts))
		epb = le.AppendUint32(epb, uint32(len(p.data)))
		epb = le.AppendUint32(epb, p.wire)
		epb = append(epb, p.data...)
		epb = append(epb, make([]byte, pad4(len(p.data)))...)
		block(6, epb)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".netdiag-merge-*")
	if err != nil {
		return fmt.Errorf("merge pcaps: %w", err)
	}
	_, err = tmp.Write(w.Bytes())
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), out)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("merge pcaps: %w", err)
	}
	return nil
}

func pcapngOption(b []byte, code uint16, v []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, code)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	b = append(b, v...)
	return append(b, make([]byte, pad4(len(v)))...)
}

func pad4(n int) int { return (4 - n%4) % 4 }

type classicHeader struct {
	order   binary.ByteOrder
	nano    bool
	snaplen uint32
	link    uint32
}

type classicRecord struct {
	sec, frac, wire uint32
	data            []byte
}

// maxPcapRecord bounds one record: more than any snap length we set, less
// than what a corrupt length field would make us take.
const maxPcapRecord = 1 << 18

// readClassicPcap reads a classic pcap file of either byte order and
// resolution. A last record cut short (a capture stopped mid-write) is
// left out, not an error.
func readClassicPcap(b []byte) (classicHeader, []classicRecord, error) {
	var h classicHeader
	if len(b) < 24 {
		return h, nil, errors.New("not a pcap file: shorter than its header")
	}
	switch {
	case binary.LittleEndian.Uint32(b) == 0xa1b2c3d4:
		h.order = binary.LittleEndian
	case binary.LittleEndian.Uint32(b) == 0xa1b23c4d:
		h.order, h.nano = binary.LittleEndian, true
	case binary.BigEndian.Uint32(b) == 0xa1b2c3d4:
		h.order = binary.BigEndian
	case binary.BigEndian.Uint32(b) == 0xa1b23c4d:
		h.order, h.nano = binary.BigEndian, true
	default:
		return h, nil, fmt.Errorf("not a classic pcap file (magic %#x)", binary.LittleEndian.Uint32(b))
	}
	h.snaplen, h.link = h.order.Uint32(b[16:]), h.order.Uint32(b[20:])&0xffff
	var recs []classicRecord
	for p := 24; len(b)-p >= 16; {
		n := h.order.Uint32(b[p+8:])
		if n > maxPcapRecord {
			return h, nil, fmt.Errorf("record at byte %d claims %d bytes", p, n)
		}
		if len(b)-p-16 < int(n) {
			break
		}
		recs = append(recs, classicRecord{sec: h.order.Uint32(b[p:]), frac: h.order.Uint32(b[p+4:]), wire: h.order.Uint32(b[p+12:]), data: b[p+16 : p+16+int(n)]})
		p += 16 + int(n)
	}
	return h, recs, nil
}

// PcapPackets counts the packets of a capture file, classic pcap or pcapng.
func PcapPackets(b []byte) (int, error) {
	if len(b) >= 4 && binary.LittleEndian.Uint32(b) == 0x0A0D0D0A {
		return pcapngPackets(b)
	}
	_, recs, err := readClassicPcap(b)
	return len(recs), err
}

func pcapngPackets(b []byte) (int, error) {
	if len(b) < 12 {
		return 0, errors.New("pcapng: shorter than a section header")
	}
	var order binary.ByteOrder = binary.LittleEndian
	switch binary.LittleEndian.Uint32(b[8:]) {
	case 0x1A2B3C4D:
	case 0x4D3C2B1A:
		order = binary.BigEndian
	default:
		return 0, errors.New("pcapng: bad byte-order magic")
	}
	n := 0
	for p := 0; p < len(b); {
		if len(b)-p < 12 {
			return n, fmt.Errorf("pcapng: a block cut short at byte %d", p)
		}
		typ, size := order.Uint32(b[p:]), order.Uint32(b[p+4:])
		if size < 12 || size%4 != 0 || int(size) > len(b)-p {
			return n, fmt.Errorf("pcapng: block at byte %d has a bad length %d", p, size)
		}
		if typ == 6 || typ == 3 { // enhanced and simple packet blocks
			n++
		}
		p += int(size)
	}
	return n, nil
}
