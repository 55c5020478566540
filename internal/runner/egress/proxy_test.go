package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestConnectTunnelsToAllowlistedIPLiteral(t *testing.T) {
	echo := startEcho(t, "tcp", "127.0.0.1:0")
	rec := &recorder{}
	proxy := startProxy(t, Config{AllowHosts: []string{"127.0.0.1"}, DefaultDeny: true}, rec)

	target := echo.addrPort().String()
	// "early" is sent in the same write as the CONNECT header, as TLS
	// clients do with their ClientHello: it must reach the upstream too.
	resp, body, tun := connect(t, "tcp", proxy, target, []byte("early-"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT status %d body %q, want 200", resp.StatusCode, body)
	}
	buf := make([]byte, len("early-"))
	if _, err := io.ReadFull(tun, buf); err != nil || string(buf) != "early-" {
		t.Fatalf("early bytes echoed as %q, %v", buf, err)
	}
	for _, msg := range []string{"ping", strings.Repeat("x", 100<<10), "pong"} {
		if got := roundTrip(t, tun, msg); got != msg {
			t.Fatalf("echo of %d bytes came back different", len(msg))
		}
	}
	want := Decision{
		Method: "CONNECT", Authority: target, Host: "127.0.0.1", Port: echo.addrPort().Port(),
		Allowed: true, Reason: `allowlist entry "127.0.0.1"`, Addrs: []netip.AddrPort{echo.addrPort()},
	}
	if got := rec.only(t); !reflect.DeepEqual(got, want) {
		t.Errorf("decision\n got %+v\nwant %+v", got, want)
	}
	if got := rec.only(t).Protocol(); got != "allowed" {
		t.Errorf("Protocol() = %q, want allowed", got)
	}
}

func TestForwardAbsoluteFormRequest(t *testing.T) {
	type seen struct {
		method, uri, host, body string
		header                  http.Header
	}
	got := make(chan seen, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.RequestURI, r.Host, string(b), r.Header.Clone()}
		w.Header().Set("X-Upstream", "yes")
		w.Header().Set("Keep-Alive", "timeout=5") // hop-by-hop: must not reach the client
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "hello from upstream")
	}))
	t.Cleanup(upstream.Close)
	upAddr := netip.MustParseAddrPort(strings.TrimPrefix(upstream.URL, "http://"))

	rec := &recorder{}
	proxy := startProxy(t, Config{AllowHosts: []string{"127.0.0.1"}, DefaultDeny: true}, rec)
	client := proxyClient(t, proxy)

	req, _ := http.NewRequest(http.MethodPost, upstream.URL+"/v1/items?q=1", strings.NewReader("payload"))
	req.Header.Set("X-Hop", "drop me")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("Proxy-Authorization", "Basic c2VjcmV0")
	req.Header.Set("X-Keep", "kept")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot || string(body) != "hello from upstream" || resp.Header.Get("X-Upstream") != "yes" {
		t.Fatalf("response %d %q %v; want upstream's 418", resp.StatusCode, body, resp.Header)
	}
	if resp.Header.Get("Keep-Alive") != "" {
		t.Errorf("hop-by-hop response header Keep-Alive was forwarded")
	}
	s := <-got
	if s.method != "POST" || s.uri != "/v1/items?q=1" || s.host != upAddr.String() || s.body != "payload" {
		t.Errorf("upstream saw %s %s host %q body %q", s.method, s.uri, s.host, s.body)
	}
	for _, h := range []string{"X-Hop", "Proxy-Authorization", "Proxy-Connection"} {
		if v := s.header.Get(h); v != "" {
			t.Errorf("hop-by-hop header %s forwarded as %q", h, v)
		}
	}
	if s.header.Get("X-Keep") != "kept" {
		t.Errorf("end-to-end header X-Keep lost")
	}
	want := Decision{
		Method: "POST", Authority: upAddr.String(), Host: "127.0.0.1", Port: upAddr.Port(),
		Allowed: true, Reason: `allowlist entry "127.0.0.1"`, Addrs: []netip.AddrPort{upAddr},
	}
	if d := rec.only(t); !reflect.DeepEqual(d, want) {
		t.Errorf("decision\n got %+v\nwant %+v", d, want)
	}
}

func TestForwardStreamsResponse(t *testing.T) {
	release := make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "event: one\n\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "event: two\n\n")
	}))
	t.Cleanup(upstream.Close)
	proxy := startProxy(t, Config{AllowHosts: []string{"127.0.0.1"}, DefaultDeny: true}, &recorder{})
	resp, err := proxyClient(t, proxy).Get(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The first event must arrive while the upstream still holds the
	// second: the proxy must not buffer a streamed response.
	buf := make([]byte, len("event: one\n\n"))
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "event: one\n\n" {
		t.Fatalf("first event %q, %v", buf, err)
	}
	close(release)
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "event: two\n\n" {
		t.Errorf("second event %q", rest)
	}
}

func TestRefusals(t *testing.T) {
	echo := startEcho(t, "tcp", "127.0.0.1:0")
	echoPort := strconv.Itoa(int(echo.addrPort().Port()))
	resolver := fakeResolver{t: t, addrs: map[string][]string{
		"private.test":   {"10.0.0.1"},
		"metadata.test":  {"169.254.169.254"},
		"metadata6.test": {"fd00:ec2::254"},
		"mapped.test":    {"::ffff:127.0.0.1"},
		"mixed.test":     {"8.8.8.8", "10.0.0.1"},
		"cgnat.test":     {"100.64.1.1"},
		"nat64.test":     {"64:ff9b::7f00:1"},
		"linklocal.test": {"fe80::1"},
		"api.example":    {"8.8.8.8"},
	}}
	dialled := make(chan string, 100)
	cfg := Config{
		AllowHosts: []string{
			"private.test", "metadata.test", "metadata6.test", "mapped.test", "mixed.test",
			"cgnat.test", "nat64.test", "linklocal.test", "api.example:8443", "localhost",
		},
		DefaultDeny: true,
		Resolver:    resolver,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialled <- addr
			return nil, errors.New("test dialer: no upstream expected")
		},
	}
	rec := &recorder{}
	proxy := startProxy(t, cfg, rec)

	tests := []struct {
		authority string
		status    int
		want      Decision
	}{
		{"evil.example:443", 403, Decision{Host: "evil.example", Port: 443, Reason: "host not in allowlist"}},
		{"api.example:443", 403, Decision{Host: "api.example", Port: 443, Reason: "port 443 not in allowlist for host"}},
		{"127.0.0.1:" + echoPort, 403, Decision{Host: "127.0.0.1", Port: echo.addrPort().Port(), Reason: "host not in allowlist"}},
		{"private.test:443", 403, Decision{Host: "private.test", Port: 443, Reason: "resolves to private address 10.0.0.1"}},
		{"metadata.test", 403, Decision{Host: "metadata.test", Port: 443, Reason: "resolves to cloud metadata address 169.254.169.254"}},
		{"metadata6.test:80", 403, Decision{Host: "metadata6.test", Port: 80, Reason: "resolves to cloud metadata address fd00:ec2::254"}},
		{"mapped.test:443", 403, Decision{Host: "mapped.test", Port: 443, Reason: "resolves to loopback address 127.0.0.1"}},
		{"mixed.test:443", 403, Decision{Host: "mixed.test", Port: 443, Reason: "resolves to private address 10.0.0.1"}},
		{"cgnat.test:443", 403, Decision{Host: "cgnat.test", Port: 443, Reason: "resolves to carrier-grade NAT address 100.64.1.1"}},
		{"nat64.test:443", 403, Decision{Host: "nat64.test", Port: 443, Reason: "resolves to loopback (embedded in 64:ff9b::7f00:1) address 64:ff9b::7f00:1"}},
		{"linklocal.test:443", 403, Decision{Host: "linklocal.test", Port: 443, Reason: "resolves to link-local address fe80::1"}},
		{"Private.TEST.:443", 403, Decision{Host: "private.test", Port: 443, Reason: "resolves to private address 10.0.0.1"}},
		{"host:0", 400, Decision{Reason: `bad authority "host:0": port must be a decimal number from 1 to 65535`}},
		{"host:99999", 400, Decision{Reason: `bad authority "host:99999": port must be a decimal number from 1 to 65535`}},
		{"user@private.test:443", 400, Decision{Reason: `bad authority "user@private.test:443": userinfo is not allowed`}},
		{"[fe80::1%25eth0]:443", 400, Decision{Reason: `bad authority "[fe80::1%25eth0]:443": IPv6 zones are not allowed`}},
		{"127.1:443", 400, Decision{Reason: `bad authority "127.1:443": numeric last label: not a host name, and not a canonical IPv4 address`}},
	}
	for _, tt := range tests {
		t.Run(tt.authority, func(t *testing.T) {
			before := len(rec.all())
			resp, body, _ := connect(t, "tcp", proxy, tt.authority, nil)
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d (body %q)", resp.StatusCode, tt.status, body)
			}
			tt.want.Method, tt.want.Authority = "CONNECT", tt.authority
			if wantBody := "blocked by warrant egress policy: " + tt.want.Reason + "\n"; body != wantBody {
				t.Errorf("body %q, want %q", body, wantBody)
			}
			ds := rec.all()[before:]
			if len(ds) != 1 {
				t.Fatalf("%d decisions recorded, want 1", len(ds))
			}
			if !reflect.DeepEqual(ds[0], tt.want) {
				t.Errorf("decision\n got %+v\nwant %+v", ds[0], tt.want)
			}
			if ds[0].Protocol() != "blocked" {
				t.Errorf("Protocol() = %q, want blocked", ds[0].Protocol())
			}
		})
	}
	// Request lines that are not valid HTTP never reach the policy:
	// net/http answers 400 itself. They name no parseable destination, so
	// there is nothing to record, and nothing is dialled.
	for _, authority := range []string{"::1:443", "2001:db8::1", "[::1", "host:port"} {
		before := len(rec.all())
		resp, _, _ := connect(t, "tcp", proxy, authority, nil)
		if resp.StatusCode != 400 || len(rec.all()) != before {
			t.Errorf("%q: status %d, %d decisions; want 400 from net/http and none", authority, resp.StatusCode, len(rec.all())-before)
		}
	}
	t.Run("localhost by name", func(t *testing.T) {
		// Uses the real resolver: an allowlisted name that resolves to
		// loopback must not reach a loopback service.
		p2 := startProxy(t, Config{AllowHosts: []string{"localhost"}, DefaultDeny: true}, rec)
		before := len(rec.all())
		resp, body, _ := connect(t, "tcp", p2, "localhost:"+echoPort, nil)
		if resp.StatusCode != 403 || !strings.Contains(body, "resolves to loopback address") {
			t.Errorf("status %d body %q, want 403 naming the loopback address", resp.StatusCode, body)
		}
		if ds := rec.all()[before:]; len(ds) != 1 || ds[0].Allowed || ds[0].Host != "localhost" {
			t.Errorf("decisions %+v, want one blocked decision for localhost", ds)
		}
	})
	if n := echo.count(); n != 0 {
		t.Errorf("the loopback echo server accepted %d connections, want 0", n)
	}
	select {
	case addr := <-dialled:
		t.Errorf("a refused request was dialled: %s", addr)
	default:
	}
}

func TestDialsVettedAddressNotName(t *testing.T) {
	echo := startEcho(t, "tcp", "127.0.0.1:0")
	var mu sync.Mutex
	var dialled []string
	cfg := Config{
		AllowHosts:  []string{"*.example.com"},
		DefaultDeny: true,
		Resolver: fakeResolver{t: t, addrs: map[string][]string{
			"api.example.com": {"8.8.8.8", "2606:4700::1111"},
		}},
		// The test dialer records what the proxy asks for and connects to
		// the loopback echo server instead, keeping all traffic local.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dialled = append(dialled, addr)
			mu.Unlock()
			if _, ok := ctx.Deadline(); !ok {
				t.Error("dial context has no deadline")
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", echo.addrPort().String())
		},
	}
	rec := &recorder{}
	proxy := startProxy(t, cfg, rec)
	resp, body, tun := connect(t, "tcp", proxy, "API.example.com:443", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if got := roundTrip(t, tun, "hi"); got != "hi" {
		t.Fatalf("echo %q", got)
	}
	mu.Lock()
	if !reflect.DeepEqual(dialled, []string{"8.8.8.8:443"}) {
		t.Errorf("dialled %v, want only the vetted address 8.8.8.8:443", dialled)
	}
	mu.Unlock()
	want := Decision{
		Method: "CONNECT", Authority: "API.example.com:443", Host: "api.example.com", Port: 443,
		Allowed: true, Reason: `allowlist entry "*.example.com"`,
		Addrs: []netip.AddrPort{netip.MustParseAddrPort("8.8.8.8:443"), netip.MustParseAddrPort("[2606:4700::1111]:443")},
	}
	if d := rec.only(t); !reflect.DeepEqual(d, want) {
		t.Errorf("decision\n got %+v\nwant %+v", d, want)
	}

	// The apex is not covered by the wildcard, and is not resolved.
	resp, body, _ = connect(t, "tcp", proxy, "example.com:443", nil)
	if resp.StatusCode != 403 || body != "blocked by warrant egress policy: host not in allowlist\n" {
		t.Errorf("apex: status %d body %q", resp.StatusCode, body)
	}
}

func TestFallsBackToNextVettedAddress(t *testing.T) {
	echo := startEcho(t, "tcp", "127.0.0.1:0")
	var dialled []string
	cfg := Config{
		AllowHosts:  []string{"api.example"},
		DefaultDeny: true,
		Resolver:    fakeResolver{t: t, addrs: map[string][]string{"api.example": {"2606:4700::1111", "8.8.8.8"}}},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialled = append(dialled, addr)
			if addr != "8.8.8.8:443" {
				return nil, errors.New("network unreachable")
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", echo.addrPort().String())
		},
	}
	proxy := startProxy(t, cfg, &recorder{})
	resp, _, tun := connect(t, "tcp", proxy, "api.example:443", nil)
	if resp.StatusCode != 200 || roundTrip(t, tun, "x") != "x" {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if !reflect.DeepEqual(dialled, []string{"[2606:4700::1111]:443", "8.8.8.8:443"}) {
		t.Errorf("dialled %v", dialled)
	}
}

func TestAllowPrefixesAndDefaultAllow(t *testing.T) {
	echo := startEcho(t, "tcp", "127.0.0.1:0")
	var dialled []string
	cfg := Config{
		DefaultDeny:   false,
		AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
		Resolver: fakeResolver{t: t, addrs: map[string][]string{
			"registry.corp": {"10.1.2.3"},
			"other.corp":    {"10.2.0.1"},
			"anything.test": {"8.8.4.4"},
		}},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialled = append(dialled, addr)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", echo.addrPort().String())
		},
	}
	rec := &recorder{}
	proxy := startProxy(t, cfg, rec)
	for _, tt := range []struct {
		authority string
		status    int
		reason    string
	}{
		{"registry.corp:5000", 200, "allowed by default (defaultDeny is false)"},
		{"anything.test:443", 200, "allowed by default (defaultDeny is false)"},
		{"other.corp:443", 403, "resolves to private address 10.2.0.1"},
		{"127.0.0.1:" + strconv.Itoa(int(echo.addrPort().Port())), 403, "loopback address 127.0.0.1"},
	} {
		before := len(rec.all())
		resp, _, _ := connect(t, "tcp", proxy, tt.authority, nil)
		ds := rec.all()[before:]
		if resp.StatusCode != tt.status || len(ds) != 1 || ds[0].Reason != tt.reason {
			t.Errorf("%s: status %d decisions %+v; want %d %q", tt.authority, resp.StatusCode, ds, tt.status, tt.reason)
		}
	}
	if !reflect.DeepEqual(dialled, []string{"10.1.2.3:5000", "8.8.4.4:443"}) {
		t.Errorf("dialled %v", dialled)
	}
}

func TestIPv6Authorities(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	ln.Close()
	echo := startEcho(t, "tcp", "[::1]:0")
	port := echo.addrPort().Port()
	upstream := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "v6 "+r.Host)
	}))
	upstream.Listener.Close()
	upstream.Listener, _ = net.Listen("tcp", "[::1]:0")
	upstream.Start()
	t.Cleanup(upstream.Close)
	httpPort := upstream.Listener.Addr().(*net.TCPAddr).Port

	rec := &recorder{}
	proxy := startProxy(t, Config{AllowHosts: []string{fmt.Sprintf("[::1]:%d", port), fmt.Sprintf("[0::1]:%d", httpPort)}, DefaultDeny: true}, rec)

	resp, body, tun := connect(t, "tcp", proxy, fmt.Sprintf("[::1]:%d", port), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT [::1]: status %d %q", resp.StatusCode, body)
	}
	if roundTrip(t, tun, "six") != "six" {
		t.Fatal("echo over IPv6 failed")
	}
	d := rec.all()[0]
	if d.Host != "::1" || d.Port != port || !d.Allowed || d.Addrs[0] != netip.AddrPortFrom(netip.IPv6Loopback(), port) {
		t.Errorf("decision %+v", d)
	}

	r2, err := proxyClient(t, proxy).Get(fmt.Sprintf("http://[0:0::1]:%d/x", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	if r2.StatusCode != 200 || string(b) != fmt.Sprintf("v6 [::1]:%d", httpPort) {
		t.Errorf("GET over IPv6: %d %q", r2.StatusCode, b)
	}

	// A different port on the same literal is not allowed, and a bare
	// bracketed literal defaults to port 443.
	resp, body, _ = connect(t, "tcp", proxy, "[::1]", nil)
	if resp.StatusCode != 403 || !strings.Contains(body, "port 443 not in allowlist") {
		t.Errorf("[::1] without port: %d %q", resp.StatusCode, body)
	}
}

func TestRecordFailureRefusesAndDialsNothing(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("upstream reached although the decision was not recorded")
	}))
	t.Cleanup(upstream.Close)
	echo := startEcho(t, "tcp", "127.0.0.1:0")
	rec := &recorder{fail: errRecordFailed}
	proxy := startProxy(t, Config{AllowHosts: []string{"127.0.0.1"}, DefaultDeny: true}, rec)

	resp, body, _ := connect(t, "tcp", proxy, echo.addrPort().String(), nil)
	if resp.StatusCode != 403 || body != "blocked by warrant egress policy: decision could not be recorded\n" {
		t.Errorf("CONNECT: status %d body %q", resp.StatusCode, body)
	}
	r2, err := proxyClient(t, proxy).Get(upstream.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	if r2.StatusCode != 403 || string(b) != "blocked by warrant egress policy: decision could not be recorded\n" {
		t.Errorf("GET: status %d body %q", r2.StatusCode, b)
	}
	if ds := rec.all(); len(ds) != 2 || !ds[0].Allowed || !ds[1].Allowed {
		t.Errorf("decisions %+v, want two (allowed, unrecorded) attempts", ds)
	}
	// The proxy dials before it answers, so had it dialled, the echo server
	// would have accepted before the 403 arrived.
	if n := echo.count(); n != 0 {
		t.Errorf("upstream accepted %d connections, want 0", n)
	}
}

func TestConnectTimeout(t *testing.T) {
	cfg := Config{
		AllowHosts:     []string{"127.0.0.1"},
		DefaultDeny:    true,
		ConnectTimeout: 50 * time.Millisecond,
		// A blackhole: the dial never completes until its deadline.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if _, ok := ctx.Deadline(); !ok {
				return nil, errors.New("dial without a deadline")
			}
			<-ctx.Done()
			return nil, ctx.Err()
		},
	}
	rec := &recorder{}
	proxy := startProxy(t, cfg, rec)
	resp, body, _ := connect(t, "tcp", proxy, "127.0.0.1:9", nil)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("CONNECT status %d %q, want 504", resp.StatusCode, body)
	}
	r2, err := proxyClient(t, proxy).Get("http://127.0.0.1:9/")
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("GET status %d, want 504", r2.StatusCode)
	}
	if ds := rec.all(); len(ds) != 2 || !ds[0].Allowed {
		t.Errorf("decisions %+v: the policy allowed both before the dial timed out", ds)
	}
}

func TestIdleTimeoutClosesTunnel(t *testing.T) {
	echo := startEcho(t, "tcp", "127.0.0.1:0")
	proxy := startProxy(t, Config{AllowHosts: []string{"127.0.0.1"}, DefaultDeny: true, IdleTimeout: 500 * time.Millisecond}, &recorder{})
	resp, _, tun := connect(t, "tcp", proxy, echo.addrPort().String(), nil)
	if resp.StatusCode != 200 || roundTrip(t, tun, "a") != "a" {
		t.Fatal("tunnel did not work")
	}
	// Nothing moves now; the proxy must close the tunnel on its own (the
	// connection's 10 s deadline is only a backstop).
	n, err := tun.Read(make([]byte, 1))
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read on idle tunnel = %d, %v; want EOF from the proxy closing it", n, err)
	}
}

func TestIdleTimeoutClosesProxiedRequest(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // then silence until the proxy hangs up
	}))
	t.Cleanup(upstream.Close)
	proxy := startProxy(t, Config{AllowHosts: []string{"127.0.0.1"}, DefaultDeny: true, IdleTimeout: 500 * time.Millisecond}, &recorder{})
	resp, err := proxyClient(t, proxy).Get(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if string(b) != "partial" || err == nil {
		t.Errorf("body %q, err %v; want the partial body then an error from the cut", b, err)
	}
}

func TestIdleWatchResetsOnActivity(t *testing.T) {
	now := time.Unix(1000, 0)
	idle := 0
	w := newIdleWatch(time.Hour, func() { idle++ })
	defer w.stop()
	w.now = func() time.Time { return now }
	w.touch()
	now = now.Add(40 * time.Minute)
	w.touch() // activity 40 minutes in
	now = now.Add(30 * time.Minute)
	w.fire() // 70 minutes after start, 30 after the last activity
	if idle != 0 {
		t.Fatal("watch fired although there was activity within the timeout")
	}
	now = now.Add(31 * time.Minute)
	w.fire()
	if idle != 1 {
		t.Fatal("watch did not fire after a full timeout without activity")
	}
	w.fire()
	if idle != 1 {
		t.Fatal("watch fired twice")
	}
}

func TestRequestHeaderCap(t *testing.T) {
	rec := &recorder{}
	proxy := startProxy(t, Config{AllowHosts: []string{"127.0.0.1"}, DefaultDeny: true, MaxHeaderBytes: 1024}, rec)
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 16<<10))
	resp, err := http.ReadResponse(newReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", resp.StatusCode)
	}
	if n := len(rec.all()); n != 0 {
		t.Errorf("%d decisions for an unread request", n)
	}
}

func TestNotAbsoluteForm(t *testing.T) {
	rec := &recorder{}
	proxy := startProxy(t, Config{AllowHosts: []string{"127.0.0.1"}, DefaultDeny: true}, rec)
	resp, err := http.Get("http://" + proxy + "/some/path")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "absolute-form") {
		t.Errorf("origin-form request: %d %q", resp.StatusCode, b)
	}
	if n := len(rec.all()); n != 0 {
		t.Errorf("origin-form request recorded %d decisions; it names no destination", n)
	}

	// An https:// URL in absolute form names a host, so it is recorded, and
	// refused: the proxy does not originate TLS.
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET https://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n")
	r2, err := http.ReadResponse(newReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(r2.Body)
	if r2.StatusCode != 400 || !strings.Contains(string(b), `scheme "https" cannot be proxied`) {
		t.Errorf("https absolute-form: %d %q", r2.StatusCode, b)
	}
	if d := rec.only(t); d.Allowed || d.Host != "127.0.0.1" || d.Port != 9 || d.Method != "GET" {
		t.Errorf("decision %+v", d)
	}
}

func TestServeOnUnixListener(t *testing.T) {
	echo := startEcho(t, "tcp", "127.0.0.1:0")
	rec := &recorder{}
	p, err := New(Config{AllowHosts: []string{"127.0.0.1"}, DefaultDeny: true, Record: rec.record, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "egress.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()

	resp, _, tun := connect(t, "unix", sock, echo.addrPort().String(), nil)
	if resp.StatusCode != 200 || roundTrip(t, tun, "over unix") != "over unix" {
		t.Fatalf("tunnel over a Unix socket failed: %d", resp.StatusCode)
	}
	// Half-close from the client: the upstream sees EOF, closes, and the
	// client sees EOF in turn.
	if err := tun.Conn.(*net.UnixConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(tun); err != nil || len(b) != 0 {
		t.Errorf("after half-close read %q, %v; want clean EOF", b, err)
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, ErrClosed) {
		t.Errorf("Serve returned %v, want ErrClosed", err)
	}
	if err := p.Serve(ln); !errors.Is(err, ErrClosed) {
		t.Errorf("Serve after Shutdown = %v, want ErrClosed", err)
	}
}

func TestShutdownClosesTunnelsAndLeavesNoGoroutines(t *testing.T) {
	echo := startEcho(t, "tcp", "127.0.0.1:0")
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // hold the request open until the proxy goes
	}))
	t.Cleanup(upstream.Close)
	baseline := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{}
	p, addr, err := Start(ctx, Config{AllowHosts: []string{"127.0.0.1"}, DefaultDeny: true, Record: rec.record, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	// An open tunnel, an in-flight proxied request and an idle client.
	resp, _, tun := connect(t, "tcp", addr, echo.addrPort().String(), nil)
	if resp.StatusCode != 200 || roundTrip(t, tun, "x") != "x" {
		t.Fatal("tunnel failed")
	}
	tr := &http.Transport{Proxy: func(*http.Request) (*url.URL, error) { return url.Parse("http://" + addr) }}
	r2, err := (&http.Client{Transport: tr}).Get(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 5)
	io.ReadFull(r2.Body, first)
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n, err := tun.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("tunnel still open after Shutdown: %d, %v", n, err)
	}
	if _, err := io.ReadAll(r2.Body); err == nil {
		t.Error("in-flight proxied response ended cleanly; want it cut by Shutdown")
	}
	r2.Body.Close()
	tr.CloseIdleConnections()
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("proxy still accepts after Shutdown")
	}
	tun.Close()
	idle.Close()
	if err := p.Shutdown(t.Context()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	waitForGoroutines(t, baseline)
}

func TestStartStopsWhenContextEnds(t *testing.T) {
	baseline := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	_, addr, err := Start(ctx, Config{DefaultDeny: true, Record: (&recorder{}).record})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("proxy still accepting after its context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitForGoroutines(t, baseline)
}

func TestNewValidates(t *testing.T) {
	rec := (&recorder{}).record
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no recorder", Config{}, "Record is required"},
		{"bad entry", Config{Record: rec, AllowHosts: []string{"https://x"}}, `allowlist entry "https://x"`},
		{"negative timeout", Config{Record: rec, IdleTimeout: -1}, "must not be negative"},
		{"zero prefix", Config{Record: rec, AllowPrefixes: []netip.Prefix{{}}}, "invalid allowed prefix"},
	}
	for _, tt := range tests {
		if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: New error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

func TestForwardRefusals(t *testing.T) {
	var logs strings.Builder
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	rec := &recorder{}
	proxy := startProxy(t, Config{AllowHosts: []string{"api.example"}, DefaultDeny: true, Logger: logger,
		Resolver: fakeResolver{t: t, addrs: map[string][]string{"api.example": {"192.168.0.10"}}}}, rec)

	tests := []struct {
		requestLine string
		status      int
		want        Decision
	}{
		{"GET http://evil.example/path?token=secret-token HTTP/1.1", 403,
			Decision{Method: "GET", Authority: "evil.example", Host: "evil.example", Port: 80, Reason: "host not in allowlist"}},
		{"DELETE http://API.example:8080/x HTTP/1.1", 403,
			Decision{Method: "DELETE", Authority: "API.example:8080", Host: "api.example", Port: 8080, Reason: "resolves to private address 192.168.0.10"}},
		{"GET http://user:secret-token@api.example/ HTTP/1.1", 400,
			Decision{Method: "GET", Authority: "api.example", Host: "api.example", Port: 80, Reason: "userinfo is not allowed in proxied URLs"}},
		{"GET http://api.example:0/ HTTP/1.1", 400,
			Decision{Method: "GET", Authority: "api.example:0", Reason: `bad authority "api.example:0": port must be a decimal number from 1 to 65535`}},
	}
	for _, tt := range tests {
		before := len(rec.all())
		c, err := net.Dial("tcp", proxy)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "%s\r\nHost: api.example\r\n\r\n", tt.requestLine)
		resp, err := http.ReadResponse(newReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		c.Close()
		if resp.StatusCode != tt.status || string(body) != "blocked by warrant egress policy: "+tt.want.Reason+"\n" {
			t.Errorf("%s: %d %q", tt.requestLine, resp.StatusCode, body)
		}
		ds := rec.all()[before:]
		if len(ds) != 1 || !reflect.DeepEqual(ds[0], tt.want) {
			t.Errorf("%s: decisions %+v, want [%+v]", tt.requestLine, ds, tt.want)
		}
	}
	logMu.Lock()
	defer logMu.Unlock()
	if strings.Contains(logs.String(), "secret-token") || strings.Contains(logs.String(), "/path") {
		t.Errorf("logs contain a URL path, query or userinfo:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "evil.example") {
		t.Errorf("logs lack the decision for evil.example:\n%s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
