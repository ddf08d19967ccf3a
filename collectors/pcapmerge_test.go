package collectors

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type testRecord struct {
	sec, frac uint32
	data      string
}

// classicPcap writes a classic pcap file as other tools do: either byte
// order, microsecond or nanosecond stamps, Ethernet.
func classicPcap(order binary.AppendByteOrder, nano bool, recs []testRecord, tail []byte) []byte {
	magic := uint32(0xa1b2c3d4)
	if nano {
		magic = 0xa1b23c4d
	}
	b := order.AppendUint32(nil, magic)
	b = order.AppendUint16(b, 2)
	b = order.AppendUint16(b, 4)
	b = append(b, make([]byte, 8)...)
	b = order.AppendUint32(b, 262144)
	b = order.AppendUint32(b, 1)
	for _, r := range recs {
		b = order.AppendUint32(b, r.sec)
		b = order.AppendUint32(b, r.frac)
		b = order.AppendUint32(b, uint32(len(r.data)))
		b = order.AppendUint32(b, uint32(len(r.data))+100)
		b = append(b, r.data...)
	}
	return append(b, tail...)
}

type ngBlock struct {
	typ  uint32
	body []byte
}

func readNg(t *testing.T, b []byte) []ngBlock {
	t.Helper()
	var out []ngBlock
	le := binary.LittleEndian
	for p := 0; p < len(b); {
		typ, n := le.Uint32(b[p:]), int(le.Uint32(b[p+4:]))
		if n%4 != 0 || p+n > len(b) || int(le.Uint32(b[p+n-4:])) != n {
			t.Fatalf("block at %d: bad length %d", p, n)
		}
		out = append(out, ngBlock{typ, b[p+8 : p+n-4]})
		p += n
	}
	return out
}

func ngOptions(b []byte) map[uint16][]byte {
	opts := map[uint16][]byte{}
	for len(b) >= 4 {
		code, n := binary.LittleEndian.Uint16(b), int(binary.LittleEndian.Uint16(b[2:]))
		if code == 0 {
			break
		}
		opts[code] = b[4 : 4+n]
		b = b[4+n+pad4(n):]
	}
	return opts
}

func TestMergePcaps(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "netdiag-1.pcap")
	peer := filepath.Join(dir, "netdiag-1-peer.pcap")
	// The source: little-endian, ns, with a last record cut short. The
	// peer: big-endian, µs. In time: src 100 ns, peer 2 µs, src 3 µs.
	os.WriteFile(src, classicPcap(binary.LittleEndian, true, []testRecord{{1, 100, "syn"}, {1, 3000, "retransmitted syn"}}, []byte{1, 0, 0, 0, 9}), 0o600)
	os.WriteFile(peer, classicPcap(binary.BigEndian, false, []testRecord{{1, 2, "syn at the peer"}}, nil), 0o600)
	if n, err := PcapPackets(mustRead(t, src)); n != 2 || err != nil {
		t.Fatalf("source has %d packets (%v), want 2 (the cut record left out)", n, err)
	}

	// Merged in place of the source, as the bot does.
	err := MergePcaps(src, []PcapPart{{"source", "pod default/client eth0", src}, {"peer", "pod default/web eth0", peer}, {"node", "", filepath.Join(dir, "absent.pcap")}})
	if err != nil {
		t.Fatal(err)
	}
	out := mustRead(t, src)
	blocks := readNg(t, out)
	if len(blocks) != 6 || blocks[0].typ != 0x0A0D0D0A || blocks[1].typ != 1 || blocks[2].typ != 1 {
		t.Fatalf("blocks %v, want a section header, two interfaces, three packets", blocks)
	}
	for i, want := range []struct {
		name, desc string
		res        byte
	}{{"source", "pod default/client eth0", 9}, {"peer", "pod default/web eth0", 6}} {
		b := blocks[1+i].body
		opts := ngOptions(b[8:])
		if binary.LittleEndian.Uint16(b) != 1 || string(opts[2]) != want.name || string(opts[3]) != want.desc || !bytes.Equal(opts[9], []byte{want.res}) {
			t.Errorf("interface %d: link %d, options %v", i, binary.LittleEndian.Uint16(b), opts)
		}
	}
	for i, want := range []struct {
		iface uint32
		ts    uint64
		data  string
	}{{0, 1e9 + 100, "syn"}, {1, 1e6 + 2, "syn at the peer"}, {0, 1e9 + 3000, "retransmitted syn"}} {
		b := blocks[3+i].body
		le := binary.LittleEndian
		ts := uint64(le.Uint32(b[4:]))<<32 | uint64(le.Uint32(b[8:]))
		n := le.Uint32(b[12:])
		if blocks[3+i].typ != 6 || le.Uint32(b) != want.iface || ts != want.ts || string(b[20:20+n]) != want.data || le.Uint32(b[16:]) != n+100 {
			t.Errorf("packet %d: iface %d ts %d %q, want %+v", i, le.Uint32(b), ts, b[20:20+n], want)
		}
	}
	if n, err := PcapPackets(out); n != 3 || err != nil {
		t.Errorf("merged file has %d packets (%v), want 3", n, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".netdiag-merge-*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}

	// What cannot be merged says why, and leaves the out file alone.
	bad := filepath.Join(dir, "bad.pcap")
	os.WriteFile(bad, []byte("not a capture at all, just text"), 0o600)
	for _, tc := range []struct {
		parts []PcapPart
		want  string
	}{
		{[]PcapPart{{"a", "", filepath.Join(dir, "none1")}, {"b", "", filepath.Join(dir, "none2")}}, "none of the captures exists"},
		{[]PcapPart{{"peer", "", peer}, {"bad", "", bad}}, "bad.pcap: not a classic pcap file"},
		{[]PcapPart{{"huge", "", writeFile(t, dir, "huge.pcap", classicPcap(binary.LittleEndian, true, nil, append(binary.LittleEndian.AppendUint32(make([]byte, 8), 1<<30), 0, 0, 0, 0)))}}, "claims"},
	} {
		if err := MergePcaps(src, tc.parts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("merge %v: %v, want %q", tc.parts, err, tc.want)
		}
	}
	if !bytes.Equal(mustRead(t, src), out) {
		t.Error("a failed merge changed the out file")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
