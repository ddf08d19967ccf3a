package kubelet

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/netdiag/netdiag/lab/labtest"
)

// A thread that left the process's mount namespace never is the main
// thread, whose namespace /proc/self shows everyone: after many rounds of
// unsharing in offMainThread, /proc/self/ns/mnt is still the process's.
func TestOffMainThread(t *testing.T) {
	labtest.RequireRoot(t)
	before, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		res := make(chan error, 1)
		onMain := make(chan bool, 1)
		offMainThread(func() {
			onMain <- unix.Gettid() == unix.Getpid()
			res <- unix.Unshare(unix.CLONE_NEWNS)
		})
		if <-onMain {
			t.Fatal("fn ran on the main thread")
		}
		if err := <-res; err != nil {
			t.Fatal(err)
		}
	}
	if after, _ := os.Readlink("/proc/self/ns/mnt"); after != before {
		t.Errorf("/proc/self/ns/mnt is %s, was %s", after, before)
	}
}
