package egress

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// idleWatch calls onIdle once no activity has been reported for timeout.
// Activity is reported by touch, cheaply, from any goroutine.
type idleWatch struct {
	timeout time.Duration
	now     func() time.Time
	onIdle  func()
	last    atomic.Int64 // UnixNano of the last activity

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
}

func newIdleWatch(timeout time.Duration, onIdle func()) *idleWatch {
	w := &idleWatch{timeout: timeout, now: time.Now, onIdle: onIdle}
	w.touch()
	w.mu.Lock()
	w.timer = time.AfterFunc(timeout, w.fire)
	w.mu.Unlock()
	return w
}

func (w *idleWatch) touch() { w.last.Store(w.now().UnixNano()) }

// fire runs when the timer expires: if there was activity since, it waits
// out the rest of the timeout from that activity; otherwise it gives up.
func (w *idleWatch) fire() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	idle := w.now().Sub(time.Unix(0, w.last.Load()))
	if idle < w.timeout {
		w.timer.Reset(w.timeout - idle)
		w.mu.Unlock()
		return
	}
	w.stopped = true
	w.mu.Unlock()
	w.onIdle()
}

func (w *idleWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.timer.Stop()
}

// activityReader and activityWriter report each transfer to an idleWatch.
// They deliberately hide ReaderFrom/WriterTo so io.CopyBuffer uses reads
// and writes the watch can see.
type activityReader struct {
	r io.Reader
	w *idleWatch
}

func (a activityReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 {
		a.w.touch()
	}
	return n, err
}

type activityWriter struct {
	wr io.Writer
	w  *idleWatch
}

func (a activityWriter) Write(p []byte) (int, error) {
	n, err := a.wr.Write(p)
	if n > 0 {
		a.w.touch()
	}
	return n, err
}

// watchedConn is an upstream connection for proxied HTTP requests: it is
// closed when idle for the idle timeout.
type watchedConn struct {
	net.Conn
	watch *idleWatch
}

func newWatchedConn(c net.Conn, timeout time.Duration) *watchedConn {
	wc := &watchedConn{Conn: c}
	wc.watch = newIdleWatch(timeout, func() { c.Close() })
	return wc
}

func (c *watchedConn) Read(p []byte) (int, error) {
	return activityReader{c.Conn, c.watch}.Read(p)
}

func (c *watchedConn) Write(p []byte) (int, error) {
	return activityWriter{c.Conn, c.watch}.Write(p)
}

func (c *watchedConn) Close() error {
	c.watch.stop()
	return c.Conn.Close()
}

// tunnel is an established CONNECT tunnel.
type tunnel struct {
	client, upstream net.Conn
	once             sync.Once
}

func (t *tunnel) close() {
	t.once.Do(func() {
		t.client.Close()
		t.upstream.Close()
	})
}

// track registers t for Shutdown; it reports false once shutdown began.
func (p *Proxy) track(t *tunnel) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.tunnels[t] = struct{}{}
	return true
}

func (p *Proxy) untrack(t *tunnel) {
	p.mu.Lock()
	delete(p.tunnels, t)
	p.mu.Unlock()
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

type closeWriter interface{ CloseWrite() error }

// relay copies bytes both ways until both directions end, either side
// fails, the tunnel idles out, or the proxy shuts down. An orderly end of
// one direction is passed on as a half-close, so request/response
// protocols that signal the end of input by closing still work.
func (p *Proxy) relay(t *tunnel) {
	if !p.track(t) {
		t.close()
		return
	}
	defer p.untrack(t)
	defer t.close()
	watch := newIdleWatch(p.idleTO, t.close)
	defer watch.stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(t, t.upstream, t.client, watch)
	}()
	pipe(t, t.client, t.upstream, watch)
	<-done
}

func pipe(t *tunnel, dst, src net.Conn, watch *idleWatch) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	_, err := io.CopyBuffer(activityWriter{dst, watch}, activityReader{src, watch}, *bp)
	if err == nil || errors.Is(err, io.EOF) {
		if cw, ok := dst.(closeWriter); ok && cw.CloseWrite() == nil {
			return
		}
	}
	t.close()
}
