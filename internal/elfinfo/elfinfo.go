// Package elfinfo says whether an executable is statically linked: netdiag's
// binaries must run on any node image and in an image with no C library, so
// the tests check what the release build produced, not what it was asked for.
package elfinfo

import (
	"debug/elf"
	"fmt"
	"strings"
)

// Static returns nil when path is an ELF executable that needs no dynamic
// loader and no shared library, else an error that names what it needs.
func Static(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: not an ELF executable: %w", path, err)
	}
	defer f.Close()
	var why []string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err == nil {
				why = append(why, "the loader "+strings.TrimRight(string(b), "\x00"))
			} else {
				why = append(why, "a loader")
			}
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: reading its dynamic section: %w", path, err)
	}
	for _, l := range libs {
		why = append(why, "the library "+l)
	}
	if len(why) > 0 {
		return fmt.Errorf("%s is dynamically linked: it needs %s", path, strings.Join(why, ", "))
	}
	return nil
}
