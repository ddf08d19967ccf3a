package lab

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// helperEnv marks a process started by the lab to play a role (an HTTP server,
// a load generator) instead of running the program's normal main.
const helperEnv = "NETDIAG_LAB_HELPER"

// MaybeRunHelper runs the helper role this process was started for and exits;
// otherwise it returns at once. The netdiag binary calls it first thing in
// main, and so must TestMain in any test package that brings a lab up, because
// the lab starts its servers by re-executing the running binary.
func MaybeRunHelper() {
	if os.Getenv(helperEnv) == "" {
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "lab helper: no role given")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch role, args := os.Args[1], os.Args[2:]; role {
	case "http":
		err = helperHTTP(ctx, args)
	case "hold":
		err = helperHold(ctx, args)
	case "flood":
		err = helperFlood(ctx, args)
	case "traffic":
		err = helperTraffic(ctx, args)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "lab helper %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	os.Exit(0)
}

// HelperCommand returns a command that runs one of the lab's helper roles
// (http, hold, flood, traffic) from this binary; start it inside a namespace
// with netns.NS.Start.
func HelperCommand(role string, args ...string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{role}, args...)...)
	cmd.Env = append(cleanEnv(), helperEnv+"=1")
	return cmd, nil
}

// helperHTTP is the lab's application: it answers GET with its name and POST
// with the number of bytes it received (large POSTs show MTU faults).
func helperHTTP(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("http", flag.ContinueOnError)
	listen := fs.String("listen", "0.0.0.0:8080", "address to listen on")
	name := fs.String("name", "server", "name to answer with")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := net.Listen(listenNetwork(*listen), *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				fmt.Fprintf(w, "%s ok\n", *name)
				return
			}
			n, err := io.Copy(io.Discard, io.LimitReader(r.Body, 64<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			fmt.Fprintf(w, "%s received %d bytes\n", *name, n)
		}),
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Printf("%s listening on %s\n", *name, *listen)
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// listenNetwork makes the helper bind as a C program would. Go's "tcp" turns
// an 0.0.0.0 listener into a dual-stack [::] socket; an application that
// binds 0.0.0.0 takes IPv4 only, and that is the not-listening-v6 fault, so
// an IPv4 address gets "tcp4". "[::]:PORT" stays "tcp": one socket for both
// families, as Linux gives with bindv6only=0.
func listenNetwork(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "tcp"
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		return "tcp4"
	}
	return "tcp"
}

// helperHold opens connections and keeps them open, taking local ports (the
// port-exhaustion fault).
func helperHold(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	to := fs.String("to", "", "TCP address to connect to")
	count := fs.Int("count", 2, "connections to hold")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for len(conns) < *count {
		c, err := net.DialTimeout("tcp", *to, 2*time.Second)
		if err != nil {
			if errors.Is(err, syscall.EADDRNOTAVAIL) {
				break // every port is taken: that is the point
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		conns = append(conns, c)
	}
	fmt.Printf("holding %d connections to %s\n", len(conns), *to)
	<-ctx.Done()
	return nil
}

// helperFlood sends UDP datagrams at a steady rate (the overload fault fills a
// NIC queue with it).
func helperFlood(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("flood", flag.ContinueOnError)
	to := fs.String("to", "", "UDP address to send to")
	pps := fs.Int("pps", 2000, "packets per second")
	size := fs.Int("size", 1000, "payload bytes")
	total := fs.Int("count", 0, "stop after this many packets (0: run until stopped)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := net.Dial("udp", *to)
	if err != nil {
		return err
	}
	defer c.Close()
	payload := make([]byte, *size)
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	sent := 0
	if *total == 0 {
		// Fill the queue before saying so: the lab waits for this line.
		for i := 0; i < 100; i++ {
			c.Write(payload)
		}
		fmt.Printf("flooding %s at %d packets/s\n", *to, *pps)
	}
	// Catch up when a tick is late, so the rate holds on a busy machine.
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			due := int(time.Since(start).Seconds() * float64(*pps))
			for sent < due {
				if *total > 0 && sent >= *total {
					fmt.Printf("sent %d packets to %s in %.2fs\n", sent, *to, time.Since(start).Seconds())
					return nil
				}
				c.Write(payload) // ENOBUFS and refusals are expected under load
				sent++
			}
		}
	}
}

// helperTraffic is background load for tests: HTTP requests and DNS lookups in
// a loop, the way a busy pod would make them.
func helperTraffic(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("traffic", flag.ContinueOnError)
	urls := fs.String("http", "", "comma-separated URLs to GET")
	dnsServer := fs.String("dns", "", "DNS server address (IP:53)")
	names := fs.String("names", "", "comma-separated names to resolve")
	every := fs.Duration("every", 50*time.Millisecond, "pause between rounds")
	if err := fs.Parse(args); err != nil {
		return err
	}
	client := &http.Client{Timeout: time.Second}
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, *dnsServer)
	}}
	for {
		for _, u := range splitList(*urls) {
			if resp, err := client.Get(u); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
		if *dnsServer != "" {
			for _, n := range splitList(*names) {
				lctx, cancel := context.WithTimeout(ctx, time.Second)
				res.LookupHost(lctx, n)
				cancel()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*every):
		}
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
