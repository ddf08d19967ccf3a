package lab

import (
	"context"
	"io"
	"net"
	"sync"
	"time"
)

// Forward accepts connections on ln and joins each to a connection that
// dial makes (typically inside a lab namespace, or on this machine's
// loopback from one), copying both ways: how a program on one side of the
// lab reaches a server on the other without a route or address added
// anywhere. It serves until ctx ends, then closes ln and every connection
// it holds.
func Forward(ctx context.Context, ln net.Listener, dial func(ctx context.Context) (net.Conn, error)) {
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	closed := false
	// track holds c until the copies end; false once Forward is ending.
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return false
		}
		conns[c] = true
		return true
	}
	untrack := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		delete(conns, c)
	}
	go func() {
		<-ctx.Done()
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		closed = true
		for c := range conns {
			c.Close()
		}
	}()
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				if !track(in) {
					return
				}
				defer untrack(in)
				dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				out, err := dial(dctx)
				cancel()
				if err != nil {
					return
				}
				defer out.Close()
				if !track(out) {
					return
				}
				defer untrack(out)
				done := make(chan struct{}, 2)
				go func() { io.Copy(out, in); done <- struct{}{} }()
				go func() { io.Copy(in, out); done <- struct{}{} }()
				<-done
			}()
		}
	}()
}
