package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

const maxAuthorityDisplay = 128

// serveConnect handles "CONNECT host:port".
func (p *Proxy) serveConnect(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Connection", "close")
	d := Decision{Method: http.MethodConnect, Authority: truncate(r.RequestURI, maxAuthorityDisplay)}
	status := http.StatusBadRequest
	if host, port, err := ParseAuthority(r.RequestURI, 443); err != nil {
		d.Reason = err.Error()
	} else {
		d.Host, d.Port = host, port
		status = p.decide(r.Context(), &d)
	}
	if !p.commit(w, &d, status) {
		return
	}
	upstream, err := p.dialVetted(r.Context(), d.Addrs)
	if err != nil {
		p.log.Warn("egress upstream dial failed", "host", d.Host, "port", d.Port, "err", err)
		upstreamFailure(w, err)
		return
	}
	client, buffered, err := http.NewResponseController(w).Hijack()
	if err != nil {
		upstream.Close()
		p.log.Error("egress hijack failed", "err", err)
		writeText(w, http.StatusInternalServerError, "warrant egress: cannot open tunnel")
		return
	}
	t := &tunnel{client: client, upstream: upstream}
	// The server may have left deadlines on the connection; the idle watch
	// takes over.
	if err := client.SetDeadline(time.Time{}); err != nil {
		t.close()
		return
	}
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		t.close()
		return
	}
	// Bytes the client sent after the CONNECT header (a TLS ClientHello,
	// typically) may already sit in the server's read buffer.
	if n := buffered.Reader.Buffered(); n > 0 {
		early, _ := buffered.Reader.Peek(n)
		if _, err := upstream.Write(early); err != nil {
			t.close()
			return
		}
	}
	p.relay(t)
}

// hopHeaders are meaningful only for one hop and are not forwarded.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// vettedKey carries a request's vetted addresses to dialForward.
type vettedKey struct{}

type vetted struct {
	hostport string // the URL authority the transport will dial
	addrs    []netip.AddrPort
}

// serveForward handles an absolute-form request ("GET http://host/path").
func (p *Proxy) serveForward(w http.ResponseWriter, r *http.Request) {
	if r.URL.Host == "" || r.URL.Scheme == "" {
		writeText(w, http.StatusBadRequest, "warrant egress proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port")
		return
	}
	d := Decision{Method: r.Method, Authority: truncate(r.URL.Host, maxAuthorityDisplay)}
	status := http.StatusBadRequest
	host, port, err := ParseAuthority(r.URL.Host, 80)
	switch {
	case err != nil:
		d.Reason = err.Error()
	case r.URL.Scheme != "http":
		d.Host, d.Port = host, port
		d.Reason = fmt.Sprintf("scheme %q cannot be proxied; use CONNECT for https", truncate(r.URL.Scheme, 16))
	case r.URL.User != nil:
		d.Host, d.Port = host, port
		d.Reason = "userinfo is not allowed in proxied URLs"
	default:
		d.Host, d.Port = host, port
		status = p.decide(r.Context(), &d)
	}
	if !p.commit(w, &d, status) {
		return
	}

	// The upstream sees the normalised authority in the URL and Host.
	authority := host
	if strings.Contains(host, ":") {
		authority = "[" + host + "]"
	}
	if port != 80 {
		authority = net.JoinHostPort(host, strconv.Itoa(int(port)))
	}
	ctx := context.WithValue(r.Context(), vettedKey{}, vetted{
		hostport: net.JoinHostPort(host, strconv.Itoa(int(port))),
		addrs:    d.Addrs,
	})
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.URL.Host = authority
	out.Host = ""
	out.Close = false
	if r.ContentLength == 0 {
		out.Body = nil
	}
	removeHopHeaders(out.Header)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // do not add Go's
	}

	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away, or the proxy is shutting down
		}
		p.log.Warn("egress upstream request failed", "host", d.Host, "port", d.Port, "err", err)
		upstreamFailure(w, err)
		return
	}
	defer resp.Body.Close()
	removeHopHeaders(resp.Header)
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			// Flush each chunk: streamed responses (server-sent events)
			// must not wait in a buffer.
			if err := rc.Flush(); err != nil {
				return
			}
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				p.log.Warn("egress upstream response cut short", "host", d.Host, "port", d.Port, "err", rerr)
				// Abort the client connection so the truncation shows.
				panic(http.ErrAbortHandler)
			}
			return
		}
	}
}

// dialForward is the transport's dialer: it connects only to the addresses
// vetted for this request, never to the name in address.
func (p *Proxy) dialForward(ctx context.Context, network, address string) (net.Conn, error) {
	v, ok := ctx.Value(vettedKey{}).(vetted)
	if !ok || v.hostport != address {
		return nil, fmt.Errorf("egress: refusing unvetted dial to %q", address)
	}
	// The transport detaches dials from request cancellation; shutdown
	// must still stop them.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(p.baseCtx, cancel)
	defer stop()
	c, err := p.dialVetted(ctx, v.addrs)
	if err != nil {
		return nil, err
	}
	return newWatchedConn(c, p.idleTO), nil
}
