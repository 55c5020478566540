package reliability_test

import (
	"context"
	"io"
	"net"
	"regexp"
	"sync"
	"testing"
	"time"
)

// relay is a TCP relay on loopback between clients (runners, requesters)
// and a plane. It reconnects to the target for every new connection, so
// a plane restarted on the same port is found again. The test can:
//
//   - tap the client→plane byte stream: a regexp seen there (an HTTP
//     request line, a blob frame header) calls a function, after the
//     bytes that complete it were forwarded;
//   - throttle the client→plane direction (bytes per second, per
//     connection), which widens upload windows;
//   - sever: close every connection and refuse new ones (a crashed
//     link: clients see resets);
//   - blackhole: stop forwarding in both directions and hold new
//     connections (a partition: requests hang until their deadline);
//   - heal.
type relay struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	mode   relayMode
	healed chan struct{} // closed when the relay forwards again
	taps   []*tap
	upRate int64 // bytes/s client→plane per connection, 0: unlimited
}

type relayMode int

const (
	relayOpen relayMode = iota
	relaySevered
	relayBlackholed
)

type tap struct {
	re *regexp.Regexp
	fn func(match []byte)
}

func startRelay(t testing.TB, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}, healed: make(chan struct{})}
	close(r.healed)
	go r.accept()
	t.Cleanup(func() {
		ln.Close()
		r.closeAll()
	})
	return r
}

func (r *relay) url() string { return "http://" + r.ln.Addr().String() }

// onStream calls fn (on its own goroutine) each time re matches the
// client→plane stream. Matches must be shorter than 256 bytes.
func (r *relay) onStream(re *regexp.Regexp, fn func(match []byte)) func() {
	tp := &tap{re: re, fn: fn}
	r.mu.Lock()
	r.taps = append(r.taps, tp)
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for i, x := range r.taps {
			if x == tp {
				r.taps = append(r.taps[:i], r.taps[i+1:]...)
				return
			}
		}
	}
}

// throttleUploads limits the client→plane direction of each connection.
func (r *relay) throttleUploads(bytesPerSecond int64) {
	r.mu.Lock()
	r.upRate = bytesPerSecond
	r.mu.Unlock()
}

// sever closes every connection and refuses new ones until heal.
func (r *relay) sever() {
	r.mu.Lock()
	r.mode = relaySevered
	r.healed = make(chan struct{})
	r.mu.Unlock()
	r.closeAll()
}

// blackhole stops forwarding until heal: bytes already in flight wait,
// new connections are accepted and held.
func (r *relay) blackhole() {
	r.mu.Lock()
	r.mode = relayBlackholed
	r.healed = make(chan struct{})
	r.mu.Unlock()
}

// heal forwards again.
func (r *relay) heal() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode != relayOpen {
		r.mode = relayOpen
		close(r.healed)
	}
}

// gate blocks while the relay is blackholed; it reports false when the
// relay is severed (the connection must close).
func (r *relay) gate() bool {
	for {
		r.mu.Lock()
		mode, healed := r.mode, r.healed
		r.mu.Unlock()
		switch mode {
		case relayOpen:
			return true
		case relaySevered:
			return false
		}
		<-healed
	}
}

func (r *relay) closeAll() {
	r.mu.Lock()
	conns := make([]net.Conn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode == relaySevered {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *relay) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

func (r *relay) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		go r.serve(c)
	}
}

func (r *relay) serve(client net.Conn) {
	defer client.Close()
	if !r.track(client) {
		return
	}
	defer r.untrack(client)
	if !r.gate() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	upstream, err := (&net.Dialer{}).DialContext(ctx, "tcp", r.target)
	cancel()
	if err != nil {
		return // the plane is down: the client sees its connection close
	}
	defer upstream.Close()
	if !r.track(upstream) {
		return
	}
	defer r.untrack(upstream)
	var wg sync.WaitGroup
	wg.Add(2)
	for _, dir := range []struct {
		dst, src net.Conn
		up       bool
	}{{upstream, client, true}, {client, upstream, false}} {
		go func() {
			defer wg.Done()
			if !r.pump(dir.dst, dir.src, dir.up) {
				client.Close()
				upstream.Close()
			}
		}()
	}
	wg.Wait()
}

// pump copies src to dst through the gate, the throttle (up) and the taps
// (up). It reports whether src ended cleanly (dst is then half-closed).
func (r *relay) pump(dst, src net.Conn, up bool) bool {
	buf := make([]byte, 32<<10)
	var carry []byte
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !r.gate() {
				return false
			}
			chunk := buf[:n]
			if up {
				r.mu.Lock()
				rate := r.upRate
				taps := append([]*tap(nil), r.taps...)
				r.mu.Unlock()
				if rate > 0 {
					time.Sleep(time.Duration(int64(n) * int64(time.Second) / rate))
				}
				if _, werr := dst.Write(chunk); werr != nil {
					return false
				}
				if len(taps) > 0 {
					window := append(carry, chunk...)
					for _, tp := range taps {
						for _, loc := range tp.re.FindAllIndex(window, -1) {
							if loc[1] > len(carry) { // not seen with the previous chunk
								go tp.fn(append([]byte(nil), window[loc[0]:loc[1]]...))
							}
						}
					}
					carry = append(carry[:0], window[max(0, len(window)-256):]...)
				}
			} else if _, werr := dst.Write(chunk); werr != nil {
				return false
			}
		}
		if err != nil {
			if err != io.EOF {
				return false
			}
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			return true
		}
	}
}
