package egress

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"
)

// Benchmarks compare a loopback echo exchange made directly with the same
// exchange through the proxy, and report p50 and p99 latencies.
//
//	go test -run '^$' -bench . ./internal/runner/egress/

func benchEcho(b *testing.B) (echoAddr, proxyAddr string) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	p, addr, err := Start(context.Background(), Config{
		AllowHosts: []string{"127.0.0.1"}, DefaultDeny: true,
		Record: func(Decision) error { return nil },
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Shutdown(context.Background()) })
	return ln.Addr().String(), addr
}

func reportPercentiles(b *testing.B, d []time.Duration) {
	slices.Sort(d)
	at := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))].Microseconds()) }
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

func exchange(b *testing.B, rw io.ReadWriter, msg, buf []byte) {
	if _, err := rw.Write(msg); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(rw, buf); err != nil {
		b.Fatal(err)
	}
}

// openTunnel dials the proxy and performs the CONNECT exchange.
func openTunnel(b *testing.B, proxyAddr, target string) (net.Conn, *bufio.Reader) {
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("CONNECT: %v %v", resp, err)
	}
	return c, br
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// BenchmarkConnectSetup: a new connection, one 1-byte echo, close.
func BenchmarkConnectSetup(b *testing.B) {
	echo, proxy := benchEcho(b)
	msg, buf := []byte{'x'}, make([]byte, 1)
	b.Run("direct", func(b *testing.B) {
		var d []time.Duration
		for b.Loop() {
			start := time.Now()
			c, err := net.Dial("tcp", echo)
			if err != nil {
				b.Fatal(err)
			}
			exchange(b, c, msg, buf)
			d = append(d, time.Since(start))
			c.Close()
		}
		reportPercentiles(b, d)
	})
	b.Run("proxy", func(b *testing.B) {
		var d []time.Duration
		for b.Loop() {
			start := time.Now()
			c, br := openTunnel(b, proxy, echo)
			exchange(b, bufConn{c, br}, msg, buf)
			d = append(d, time.Since(start))
			c.Close()
		}
		reportPercentiles(b, d)
	})
}

// BenchmarkTunnelRoundTrip: one 64-byte echo over an open connection.
func BenchmarkTunnelRoundTrip(b *testing.B) {
	echo, proxy := benchEcho(b)
	msg, buf := make([]byte, 64), make([]byte, 64)
	b.Run("direct", func(b *testing.B) {
		c, err := net.Dial("tcp", echo)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		var d []time.Duration
		for b.Loop() {
			start := time.Now()
			exchange(b, c, msg, buf)
			d = append(d, time.Since(start))
		}
		reportPercentiles(b, d)
	})
	b.Run("proxy", func(b *testing.B) {
		c, br := openTunnel(b, proxy, echo)
		defer c.Close()
		var d []time.Duration
		for b.Loop() {
			start := time.Now()
			exchange(b, bufConn{c, br}, msg, buf)
			d = append(d, time.Since(start))
		}
		reportPercentiles(b, d)
	})
}
