// Package daemon runs the servers the tests and the lab start beside them
// (etcd, kube-apiserver, the controllers): each a child with its output in a
// log file, dying with its parent, and ended by its own PID with a grace
// period, so that nothing outlives the test that started it.
package daemon

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a running child.
type Process struct {
	Name    string
	Log     string
	Cmd     *exec.Cmd
	Started time.Time

	done    chan struct{}
	err     error // of Wait, once done is closed
	stopped sync.Once
	stopErr error
}

// Start runs cmd (its Stdout and Stderr are set to the log file at logPath)
// under name. A parent killed without cleanup (a test binary at its
// timeout) takes the child with it: the kernel sends it SIGKILL.
func Start(name string, cmd *exec.Cmd, logPath string) (*Process, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	p := &Process{Name: name, Log: logPath, Cmd: cmd, done: make(chan struct{}), Started: time.Now()}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited; Err is then Wait's error.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the process exited, once Done is closed.
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// PID is the child's process ID.
func (p *Process) PID() int { return p.Cmd.Process.Pid }

// Stop sends SIGTERM, then SIGKILL after grace, and waits. It may be called
// more than once.
func (p *Process) Stop(grace time.Duration) error {
	p.stopped.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			p.stopErr = fmt.Errorf("stop %s (pid %d): %w", p.Name, p.PID(), err)
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
			p.Cmd.Process.Kill()
			<-p.done
			p.stopErr = fmt.Errorf("%s (pid %d) ignored SIGTERM for %s and was killed", p.Name, p.PID(), grace)
		}
	})
	return p.stopErr
}

// Tail is the last n lines of the log.
func (p *Process) Tail(n int) string { return TailFile(p.Log, n) }

// TailFile is the last n lines of a log file; "" when it cannot be read.
func TailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
