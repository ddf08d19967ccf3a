package procfs

import (
	"os"
	"os/exec"
	"testing"
)

func TestSelfAndAChild(t *testing.T) {
	pid := os.Getpid()
	if !Alive(pid) || Zombie(pid) {
		t.Fatal("this process is not alive")
	}
	m, err := ReadMemory(pid)
	if err != nil || m.RSS <= 0 || m.Anon <= 0 || m.Anon+m.File > m.RSS+4096 {
		t.Fatalf("memory %+v, %v", m, err)
	}
	if _, err := CPU(pid); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child := cmd.Process.Pid
	// Not yet reaped: a zombie once it exits; gone after Wait.
	for range 1000 {
		if Zombie(child) {
			break
		}
	}
	cmd.Wait()
	if Alive(child) {
		t.Errorf("pid %d still alive after it exited", child)
	}
	if Alive(1 << 30) {
		t.Error("a pid that cannot exist is alive")
	}
}
