package collectors

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"golang.org/x/sys/unix"
)

// nftTable is a table as nfnetlink names it.
type nftTable struct{ family, name string }

// nftFamilies maps NFPROTO_* to the names nft uses.
var nftFamilies = map[byte]string{1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}

// listNftTables asks the kernel for the namespace's nftables tables over
// nfnetlink (NFT_MSG_GETTABLE). `nft list tables` would do, but nft loads
// every rule of every table first: on a node whose iptables-nft holds 20,000
// rules that takes seconds, for a list of a few names.
func listNftTables(ns *netns.NS) ([]nftTable, error) {
	fd, err := ns.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval((2 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, err
	}
	const nftMsgGetTable = 1
	req := make([]byte, unix.NLMSG_HDRLEN+4)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], 10<<8|nftMsgGetTable) // NFNL_SUBSYS_NFTABLES
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], 1)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("nfnetlink: %w", err)
	}
	var out []nftTable
	buf := make([]byte, 64<<10)
	for range 1000 { // a dump of tables is a few messages; never loop without end
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("nfnetlink: %w", err)
		}
		tables, done, err := parseNftTableDump(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("nfnetlink: %w", err)
		}
		out = append(out, tables...)
		if done {
			return out, nil
		}
	}
	return nil, fmt.Errorf("nfnetlink: the table dump did not end")
}

// parseNftTableDump reads one datagram of an NFT_MSG_GETTABLE dump: netlink
// messages of nfgenmsg and attributes. done is set by NLMSG_DONE.
func parseNftTableDump(b []byte) (tables []nftTable, done bool, err error) {
	const (
		nfnlSubsysNftables = 10
		nftMsgNewTable     = 0
		nftaTableName      = 1
	)
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:]))
		typ := binary.NativeEndian.Uint16(b[4:])
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return tables, false, fmt.Errorf("bad message length %d", l)
		}
		data := b[unix.NLMSG_HDRLEN:l]
		b = b[min(len(b), nlAlign(l)):]
		switch typ {
		case unix.NLMSG_DONE:
			return tables, true, nil
		case unix.NLMSG_ERROR:
			if len(data) >= 4 {
				if e := int32(binary.NativeEndian.Uint32(data)); e != 0 {
					return tables, true, unix.Errno(-e)
				}
			}
			return tables, true, nil
		case nfnlSubsysNftables<<8 | nftMsgNewTable:
			if len(data) < 4 {
				continue
			}
			fam := nftFamilies[data[0]]
			for attrs := data[4:]; len(attrs) >= 4; {
				al := int(binary.NativeEndian.Uint16(attrs[0:]))
				at := binary.NativeEndian.Uint16(attrs[2:]) &^ unix.NLA_F_NESTED
				if al < 4 || al > len(attrs) {
					break
				}
				if at == nftaTableName {
					name := strings.TrimRight(string(attrs[4:al]), "\x00")
					if fam != "" && name != "" {
						tables = append(tables, nftTable{fam, name})
					}
				}
				attrs = attrs[min(len(attrs), nlAlign(al)):]
			}
		}
	}
	return tables, false, nil
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

// mergeNftListings joins `nft -j list table` outputs into one document, as
// `nft -j list ruleset` would print it.
func mergeNftListings(listings [][]byte) ([]byte, error) {
	var all []json.RawMessage
	for _, l := range listings {
		var doc struct {
			Nftables []json.RawMessage `json:"nftables"`
		}
		if err := json.Unmarshal(l, &doc); err != nil {
			return nil, fmt.Errorf("parse nft -j output: %w", err)
		}
		all = append(all, doc.Nftables...)
	}
	return json.Marshal(map[string][]json.RawMessage{"nftables": all})
}
