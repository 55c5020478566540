//go:build linux

package namespace

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// The egress bridge. The sandbox's network namespace has only loopback, so
// the runner's proxy has no address there. Instead the init holds one end
// of a SOCK_SEQPACKET socket pair; for each connection a process in the
// sandbox makes to the init's loopback port, the init sends one byte on it
// and the runner answers with one end of a fresh stream socket pair
// (SCM_RIGHTS) whose other end it hands to the egress proxy as an accepted
// connection. No path, port or address of the runner is visible inside.

// bridgeListener is the runner's side: a net.Listener the egress proxy
// serves, fed by the init's requests.
type bridgeListener struct {
	ctl   *net.UnixConn // the runner's end of the control pair
	child *os.File      // the init's end, passed as fdEgress
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newBridgeListener() (*bridgeListener, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("egress bridge socket pair: %w", err)
	}
	parent := os.NewFile(uintptr(fds[0]), "egress-control")
	defer parent.Close()
	c, err := net.FileConn(parent)
	if err != nil {
		unix.Close(fds[1])
		return nil, fmt.Errorf("egress bridge: %w", err)
	}
	return &bridgeListener{
		ctl:   c.(*net.UnixConn),
		child: os.NewFile(uintptr(fds[1]), "egress-control-child"),
		conns: make(chan net.Conn),
		done:  make(chan struct{}),
	}, nil
}

// serve answers the init's requests until the init closes its end (it
// exited) or the listener is closed.
func (l *bridgeListener) serve() {
	buf := make([]byte, 1)
	for {
		if _, err := l.ctl.Read(buf); err != nil {
			l.Close()
			return
		}
		conn, theirs, err := streamPair()
		if err != nil {
			// No connection to give: closing the control socket makes the
			// init refuse this and every later connection.
			l.Close()
			return
		}
		_, _, err = l.ctl.WriteMsgUnix([]byte{1}, unix.UnixRights(theirs), nil)
		unix.Close(theirs)
		if err != nil {
			conn.Close()
			l.Close()
			return
		}
		select {
		case l.conns <- conn:
		case <-l.done:
			conn.Close()
			return
		}
	}
}

// streamPair returns a connected pair: ours as a net.Conn, theirs as a raw
// descriptor to pass on.
func streamPair() (net.Conn, int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, -1, err
	}
	f := os.NewFile(uintptr(fds[0]), "egress-conn")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		unix.Close(fds[1])
		return nil, -1, err
	}
	return bridgeConn{c}, fds[1], nil
}

// bridgeConn gives a socket-pair connection the addresses an HTTP server
// expects to print.
type bridgeConn struct{ net.Conn }

func (bridgeConn) RemoteAddr() net.Addr { return bridgeAddr{} }
func (bridgeConn) LocalAddr() net.Addr  { return bridgeAddr{} }

// CloseWrite half-closes, so a tunnel's one direction can end first.
func (c bridgeConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type bridgeAddr struct{}

func (bridgeAddr) Network() string { return "unix" }
func (bridgeAddr) String() string  { return "sandbox" }

// Accept implements net.Listener.
func (l *bridgeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener; it also stops serve.
func (l *bridgeListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.ctl.Close()
		l.child.Close()
	})
	return nil
}

// Addr implements net.Listener.
func (l *bridgeListener) Addr() net.Addr { return bridgeAddr{} }

// fdDialer is the init's side: it asks the runner for a connection.
type fdDialer struct {
	mu  sync.Mutex
	ctl *net.UnixConn
}

var errBridgeClosed = errors.New("egress bridge closed")

func (d *fdDialer) dial() (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.ctl.Write([]byte{1}); err != nil {
		return nil, errBridgeClosed
	}
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := d.ctl.ReadMsgUnix(buf, oob)
	if err != nil || oobn == 0 {
		return nil, errBridgeClosed
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, errBridgeClosed
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, errBridgeClosed
	}
	f := os.NewFile(uintptr(fds[0]), "egress-conn")
	defer f.Close()
	return net.FileConn(f)
}

// serveBridge accepts the sandbox's connections to the proxy port and
// relays each one over a connection the runner hands out.
func serveBridge(ln net.Listener, d *fdDialer) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			up, err := d.dial()
			if err != nil {
				c.Close()
				return
			}
			relay(c, up)
		}()
	}
}

// relay copies both ways until both directions end, passing half-closes
// on, then closes both connections.
func relay(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go pipe(a, b)
	go pipe(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}
