package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder collects decisions; fail makes Record return an error.
type recorder struct {
	mu        sync.Mutex
	decisions []Decision
	fail      error
}

func (r *recorder) record(d Decision) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.decisions = append(r.decisions, d)
	return r.fail
}

func (r *recorder) all() []Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Decision(nil), r.decisions...)
}

// only returns the single recorded decision, failing the test otherwise.
func (r *recorder) only(t *testing.T) Decision {
	t.Helper()
	ds := r.all()
	if len(ds) != 1 {
		t.Fatalf("recorded %d decisions, want exactly 1: %+v", len(ds), ds)
	}
	return ds[0]
}

type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startProxy starts a proxy on loopback with rec as its recorder and shuts
// it down when the test ends.
func startProxy(t *testing.T, cfg Config, rec *recorder) string {
	t.Helper()
	cfg.Record = rec.record
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	p, addr, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return addr
}

// fakeResolver answers from a map and fails the test for names it lacks.
type fakeResolver struct {
	t     *testing.T
	addrs map[string][]string
}

func (f fakeResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	ss, ok := f.addrs[host]
	if !ok {
		f.t.Errorf("unexpected resolution of %q", host)
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out, nil
}

// echoServer accepts connections on loopback and echoes each one. It
// counts accepted connections.
type echoServer struct {
	ln       net.Listener
	mu       sync.Mutex
	accepted int
	wg       sync.WaitGroup
}

func startEcho(t *testing.T, network, addr string) *echoServer {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	e := &echoServer{ln: ln}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.accepted++
			e.mu.Unlock()
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		e.wg.Wait()
	})
	return e
}

func (e *echoServer) addrPort() netip.AddrPort {
	return e.ln.Addr().(*net.TCPAddr).AddrPort()
}

func (e *echoServer) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.accepted
}

// tunnelConn is a client connection after a CONNECT exchange.
type tunnelConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *tunnelConn) Read(p []byte) (int, error) { return c.br.Read(p) }

// connect sends "CONNECT authority" (plus early bytes after the header)
// through the proxy at proxyAddr and returns the response and, on 200, the
// tunnel. The connection is closed when the test ends.
func connect(t *testing.T, network, proxyAddr, authority string, early []byte) (*http.Response, string, *tunnelConn) {
	t.Helper()
	c, err := net.Dial(network, proxyAddr)
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// The Host header of a CONNECT is ignored; the request line decides.
	req := fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: ignored.example\r\n\r\n", authority)
	if _, err := c.Write(append([]byte(req), early...)); err != nil {
		t.Fatalf("write CONNECT: %v", err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("read CONNECT response: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body), nil
	}
	return resp, "", &tunnelConn{Conn: c, br: br}
}

// roundTrip writes msg into the tunnel and reads the same number of bytes.
func roundTrip(t *testing.T, c io.ReadWriter, msg string) string {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write through tunnel: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read through tunnel: %v", err)
	}
	return string(buf)
}

// proxyClient is an HTTP client that sends everything through the proxy.
func proxyClient(t *testing.T, proxyAddr string) *http.Client {
	tr := &http.Transport{
		Proxy:             func(*http.Request) (*url.URL, error) { return url.Parse("http://" + proxyAddr) },
		DisableKeepAlives: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// waitForGoroutines waits (bounded) until the goroutine count is back to at
// most want, and reports the stacks if it is not.
func waitForGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines remain, want at most %d:\n%s", n, want, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var errRecordFailed = errors.New("event store unavailable")

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }
