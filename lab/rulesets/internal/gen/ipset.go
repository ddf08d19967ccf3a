package gen

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
)

// ipset is one set as `ipset save` prints it.
type ipset struct {
	name, kind string
	maxelem    int
	members    []string
}

type ipsets struct {
	sets  []*ipset
	index map[string]*ipset
}

func newIpsets() *ipsets { return &ipsets{index: map[string]*ipset{}} }

// set returns the named set, creating it on first use.
func (s *ipsets) set(name, kind string, maxelem int) *ipset {
	if x := s.index[name]; x != nil {
		return x
	}
	if len(name) > 31 {
		panic("ipset name longer than the kernel's 31 characters: " + name)
	}
	x := &ipset{name: name, kind: kind, maxelem: maxelem}
	s.sets = append(s.sets, x)
	s.index[name] = x
	return x
}

func (x *ipset) add(members ...string) {
	for _, m := range members {
		dup := false
		for _, have := range x.members {
			if have == m {
				dup = true
				break
			}
		}
		if !dup {
			x.members = append(x.members, m)
		}
	}
}

// save renders `ipset save` output. initval is the hash seed ipset prints;
// it is derived from the set name so the file is stable.
func (s *ipsets) save() string {
	if len(s.sets) == 0 {
		return ""
	}
	var b strings.Builder
	for _, x := range s.sets {
		h := sha256.Sum256([]byte(x.name))
		fmt.Fprintf(&b, "create %s %s family inet hashsize 1024 maxelem %d bucketsize 12 initval 0x%08x\n",
			x.name, x.kind, x.maxelem, binary.BigEndian.Uint32(h[:4]))
		for _, m := range x.members {
			fmt.Fprintf(&b, "add %s %s\n", x.name, m)
		}
	}
	return b.String()
}

func (s *ipsets) memberCount() int {
	n := 0
	for _, x := range s.sets {
		n += len(x.members)
	}
	return n
}
