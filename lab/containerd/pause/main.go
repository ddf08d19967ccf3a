// Command pause is the lab's pod sandbox process: the "pause" container that
// holds a pod's namespaces open while the pod's containers come and go. It is
// built as a static binary and packed into the lab's pause image, because the
// lab cannot pull registry.k8s.io/pause.
//
// As PID 1 of the pod it has two duties: end when the runtime asks (SIGTERM or
// SIGINT; the kernel drops signals a PID 1 has no handler for, so without one
// every stop would wait for SIGKILL), and reap orphans re-parented to it, so
// that none stays a zombie for the pod's life.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "pause: %v, exiting\n", sig)
		return
	}
}

// reap collects every child that has exited. Signals coalesce, so one SIGCHLD
// may stand for several exits: loop until none is left.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
