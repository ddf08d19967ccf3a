package collectors

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"
)

// ReadFileLimit reads a file named in a question (a resolv.conf, a file of
// a plan) with bounds an agent can live with: it must be a regular file
// (not a device such as /dev/zero, a FIFO or a socket, which could stream
// without end or block), of at most max bytes, read before ctx ends.
func ReadFileLimit(ctx context.Context, path string, max int64) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := readLimited(path, max)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		return r.b, r.err
	case <-ctx.Done():
		// A read stuck in the kernel (a hung network filesystem) is left
		// behind; the caller is not.
		return nil, fmt.Errorf("read %s: %w", path, ctx.Err())
	}
}

func readLimited(path string, max int64) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, badInput(fmt.Errorf("%s is not a regular file (%s)", path, fileKind(st.Mode())))
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: %w (at most %d bytes)", path, errTooLarge, max)
	}
	return b, nil
}

func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return m.Type().String()
}
