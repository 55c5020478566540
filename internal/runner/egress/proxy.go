package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Defaults for zero Config fields.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultIdleTimeout    = 5 * time.Minute
	DefaultMaxHeaderBytes = 32 << 10
)

// maxResponseHeaderBytes caps the header of a proxied HTTP response.
const maxResponseHeaderBytes = 1 << 20

// ErrClosed is returned by Serve once the proxy has been shut down.
var ErrClosed = errors.New("egress: proxy closed")

// Resolver looks up a host name's addresses. *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Config configures a Proxy. Record is required; zero values elsewhere
// take the documented defaults.
type Config struct {
	// AllowHosts is the contract's network.allowHosts (see ParseAllowlist).
	AllowHosts []string
	// DefaultDeny refuses hosts the allowlist does not match. When false,
	// every name is allowed, but the address checks still apply.
	DefaultDeny bool
	// AllowPrefixes are address ranges the proxy may reach even though they
	// are special (for example a company registry at 10.1.2.0/24). They do
	// not bypass the allowlist.
	AllowPrefixes []netip.Prefix
	// Resolver resolves names; nil means net.DefaultResolver.
	Resolver Resolver
	// DialContext opens upstream connections; nil means a net.Dialer. It is
	// only ever given a vetted "ip:port", never a name.
	DialContext func(ctx context.Context, network, address string) (net.Conn, error)
	// ConnectTimeout bounds name resolution and, separately, the TCP
	// connect to the vetted addresses.
	ConnectTimeout time.Duration
	// IdleTimeout closes a tunnel or proxied request after this long with no
	// bytes moving in either direction. It also bounds reading a request
	// header and an idle keep-alive connection from the client.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps the size of a request header from the client.
	MaxHeaderBytes int
	// Record receives exactly one Decision per connection attempt, before
	// anything is dialled. If it returns an error the attempt is refused.
	// Calls are serialised.
	Record func(Decision) error
	// Logger receives one line per decision and operational errors. Nil
	// discards. Headers, paths and bodies are never logged.
	Logger *slog.Logger
}

// Proxy is a running (or ready to run) egress proxy.
type Proxy struct {
	allow         *Allowlist
	defaultDeny   bool
	allowPrefixes []netip.Prefix
	resolver      Resolver
	dial          func(ctx context.Context, network, address string) (net.Conn, error)
	connectTO     time.Duration
	idleTO        time.Duration
	record        func(Decision) error
	log           *slog.Logger

	srv       *http.Server
	transport *http.Transport
	baseCtx   context.Context
	cancel    context.CancelFunc
	recordMu  sync.Mutex

	mu        sync.Mutex
	closing   bool
	tunnels   map[*tunnel]struct{}
	wg        sync.WaitGroup // handlers in flight, and Start's Serve loop
	stopOnCtx func() bool    // set by Start
}

// New validates cfg and returns a Proxy ready to Serve.
func New(cfg Config) (*Proxy, error) {
	if cfg.Record == nil {
		return nil, errors.New("egress: Config.Record is required: every decision must be recorded")
	}
	if cfg.ConnectTimeout < 0 || cfg.IdleTimeout < 0 || cfg.MaxHeaderBytes < 0 {
		return nil, errors.New("egress: timeouts and MaxHeaderBytes must not be negative")
	}
	allow, err := ParseAllowlist(cfg.AllowHosts)
	if err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	for _, pfx := range cfg.AllowPrefixes {
		if !pfx.IsValid() {
			return nil, fmt.Errorf("egress: invalid allowed prefix %v", pfx)
		}
	}
	p := &Proxy{
		allow:         allow,
		defaultDeny:   cfg.DefaultDeny,
		allowPrefixes: cfg.AllowPrefixes,
		resolver:      cfg.Resolver,
		dial:          cfg.DialContext,
		connectTO:     orDefault(cfg.ConnectTimeout, DefaultConnectTimeout),
		idleTO:        orDefault(cfg.IdleTimeout, DefaultIdleTimeout),
		record:        cfg.Record,
		log:           cfg.Logger,
		tunnels:       make(map[*tunnel]struct{}),
	}
	if p.resolver == nil {
		p.resolver = net.DefaultResolver
	}
	if p.dial == nil {
		p.dial = (&net.Dialer{}).DialContext
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.baseCtx, p.cancel = context.WithCancel(context.Background())
	p.transport = &http.Transport{
		Proxy:                  nil, // never chain to another proxy
		DialContext:            p.dialForward,
		DisableKeepAlives:      true, // one vetted connection per decision
		DisableCompression:     true, // relay bodies as they are
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
	}
	p.srv = &http.Server{
		Handler:           http.HandlerFunc(p.handle),
		ReadHeaderTimeout: p.idleTO,
		IdleTimeout:       p.idleTO,
		MaxHeaderBytes:    orDefault(cfg.MaxHeaderBytes, DefaultMaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return p.baseCtx },
	}
	return p, nil
}

func orDefault[T time.Duration | int](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Start creates a Proxy listening on 127.0.0.1 on a free port and serves it
// until ctx is done or Shutdown is called. addr is "127.0.0.1:port".
func Start(ctx context.Context, cfg Config) (p *Proxy, addr string, err error) {
	p, err = New(cfg)
	if err != nil {
		return nil, "", err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		p.cancel()
		return nil, "", fmt.Errorf("egress: listen: %w", err)
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := p.Serve(ln); err != nil && !errors.Is(err, ErrClosed) {
			p.log.Error("egress proxy stopped serving", "err", err)
		}
	}()
	p.mu.Lock()
	p.stopOnCtx = context.AfterFunc(ctx, func() {
		if err := p.Shutdown(context.Background()); err != nil {
			p.log.Error("egress proxy shutdown", "err", err)
		}
	})
	p.mu.Unlock()
	return p, ln.Addr().String(), nil
}

// Serve accepts connections on ln (TCP or Unix) until Shutdown. It returns
// ErrClosed after Shutdown, or the listener's error.
func (p *Proxy) Serve(ln net.Listener) error {
	p.mu.Lock()
	closing := p.closing
	p.mu.Unlock()
	if closing {
		ln.Close()
		return ErrClosed
	}
	err := p.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return ErrClosed
	}
	return fmt.Errorf("egress: serve: %w", err)
}

// Shutdown stops accepting, cancels every resolution, dial and proxied
// request, closes every tunnel and connection, and waits until all the
// proxy's goroutines are done or ctx ends. It is safe to call more than
// once.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	stop := p.stopOnCtx
	tunnels := make([]*tunnel, 0, len(p.tunnels))
	for t := range p.tunnels {
		tunnels = append(tunnels, t)
	}
	p.mu.Unlock()
	if stop != nil {
		stop()
	}
	p.cancel()
	for _, t := range tunnels {
		t.close()
	}
	closeErr := p.srv.Close()
	p.transport.CloseIdleConnections()
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("egress: shutdown: %w", ctx.Err())
	}
	if closeErr != nil {
		return fmt.Errorf("egress: shutdown: %w", closeErr)
	}
	return nil
}

// enter registers a handler; it reports false once shutdown has begun.
func (p *Proxy) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.wg.Add(1)
	return true
}

func (p *Proxy) handle(w http.ResponseWriter, r *http.Request) {
	if !p.enter() {
		writeText(w, http.StatusServiceUnavailable, "warrant egress: proxy shutting down")
		return
	}
	defer p.wg.Done()
	if r.Method == http.MethodConnect {
		p.serveConnect(w, r)
		return
	}
	p.serveForward(w, r)
}

// decide applies the policy to d (Host and Port set) and fills Allowed,
// Reason and Addrs. It returns the HTTP status for a refusal.
func (p *Proxy) decide(ctx context.Context, d *Decision) int {
	entry, explicitIP, ok := p.allow.Match(d.Host, d.Port)
	if !ok && p.defaultDeny {
		if _, _, anyPort := p.allow.matchIgnoringPort(d.Host); anyPort {
			d.Reason = fmt.Sprintf("port %d not in allowlist for host", d.Port)
		} else {
			d.Reason = "host not in allowlist"
		}
		return http.StatusForbidden
	}
	var addrs []netip.Addr
	literal, err := netip.ParseAddr(d.Host)
	viaName := err != nil
	if viaName {
		addrs, err = p.resolve(ctx, d.Host)
		if err != nil {
			d.Reason = err.Error()
			return http.StatusBadGateway
		}
	} else {
		addrs = []netip.Addr{literal}
	}
	// An IP literal named by the allowlist is reached whatever it is; a
	// name, even an allowlisted one, never leads to a special address.
	if !explicitIP {
		if reason := vetAddrs(addrs, p.allowPrefixes, viaName); reason != "" {
			d.Reason = reason
			return http.StatusForbidden
		}
	}
	d.Allowed = true
	if ok {
		d.Reason = fmt.Sprintf("allowlist entry %q", entry)
	} else {
		d.Reason = "allowed by default (defaultDeny is false)"
	}
	d.Addrs = make([]netip.AddrPort, len(addrs))
	for i, a := range addrs {
		d.Addrs[i] = netip.AddrPortFrom(a.Unmap(), d.Port)
	}
	return 0
}

// maxAddrs caps how many resolved addresses are vetted and tried.
const maxAddrs = 16

func (p *Proxy) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, p.connectTO)
	defer cancel()
	addrs, err := p.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		var dnsErr *net.DNSError
		switch {
		case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
			return nil, errors.New("cannot resolve host: no such host")
		case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &dnsErr) && dnsErr.IsTimeout:
			return nil, errors.New("cannot resolve host: timed out")
		default:
			return nil, errors.New("cannot resolve host: lookup failed")
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("cannot resolve host: no addresses")
	}
	if len(addrs) > maxAddrs {
		addrs = addrs[:maxAddrs]
	}
	// Go's resolver reports IPv4 answers as IPv4-mapped IPv6 addresses;
	// judge and record them as the IPv4 addresses they are.
	out := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		out[i] = a.Unmap()
	}
	return out, nil
}

// commit records d (fail-closed), logs it, and writes the refusal when d is
// blocked or could not be recorded. It reports whether to proceed.
func (p *Proxy) commit(w http.ResponseWriter, d *Decision, status int) bool {
	p.recordMu.Lock()
	err := p.record(*d)
	p.recordMu.Unlock()
	if err != nil {
		p.log.Error("egress decision not recorded; refusing", "decision", *d, "err", err)
		writeBlocked(w, http.StatusForbidden, "decision could not be recorded")
		return false
	}
	p.log.Info("egress decision", "decision", *d)
	if !d.Allowed {
		writeBlocked(w, status, d.Reason)
		return false
	}
	return true
}

// dialVetted connects to the first of addrs that answers within the
// connect timeout.
func (p *Proxy) dialVetted(ctx context.Context, addrs []netip.AddrPort) (net.Conn, error) {
	if len(addrs) == 0 {
		return nil, errors.New("no vetted address")
	}
	ctx, cancel := context.WithTimeout(ctx, p.connectTO)
	defer cancel()
	var errs []error
	for _, a := range addrs {
		c, err := p.dial(ctx, "tcp", a.String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("dial %s: %w", a, err))
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
	}
	return nil, errors.Join(errs...)
}

// upstreamFailure writes the response for a failed dial or request.
func upstreamFailure(w http.ResponseWriter, err error) {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		writeText(w, http.StatusGatewayTimeout, "warrant egress: upstream connect timed out")
		return
	}
	writeText(w, http.StatusBadGateway, "warrant egress: upstream connection failed")
}

func writeBlocked(w http.ResponseWriter, status int, reason string) {
	writeText(w, status, "blocked by warrant egress policy: "+reason)
}

func writeText(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(msg)+1))
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}
