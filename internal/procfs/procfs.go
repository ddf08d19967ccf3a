// Package procfs reads what netdiag needs of a process from /proc: whether
// it still runs, its resident memory and its CPU time. The lab and the
// container runtime it drives stop processes by PID and must tell a
// zombie from a live one; the benches measure the agent.
package procfs

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"time"
)

// stat returns the fields of /proc/PID/stat after the command name (which
// is in parentheses and may hold spaces): the state is the first.
func stat(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return nil, errors.New("procfs: unreadable stat of pid " + strconv.Itoa(pid))
	}
	return strings.Fields(string(b[i+2:])), nil
}

// Zombie reports whether the process has exited (a zombie, dead, or gone).
func Zombie(pid int) bool {
	f, err := stat(pid)
	if err != nil {
		return true
	}
	return f[0] == "Z" || f[0] == "X"
}

// Alive reports whether the process exists and has not exited.
func Alive(pid int) bool { return !Zombie(pid) }

// CPU is the process's user and system time so far.
func CPU(pid int) (time.Duration, error) {
	f, err := stat(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, errors.New("procfs: short stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	// Clock ticks: USER_HZ, which Linux fixes at 100 for user space.
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// Memory is a process's resident memory: its own (anonymous) and the
// pages of files it maps (its binary), which other processes may share.
type Memory struct {
	RSS, Anon, File int64 // bytes
}

// ReadMemory reads /proc/PID/status.
func ReadMemory(pid int) (Memory, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			m.RSS = kb << 10
		case "RssAnon":
			m.Anon = kb << 10
		case "RssFile":
			m.File = kb << 10
		}
	}
	if m.RSS == 0 {
		return m, errors.New("procfs: no VmRSS for pid " + strconv.Itoa(pid))
	}
	return m, nil
}
