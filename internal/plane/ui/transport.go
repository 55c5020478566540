package ui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
)

// handlerTransport is an http.RoundTripper that serves each request with
// an http.Handler in memory: the UI's API client reaches the plane's own
// API handler without a socket, so every read and decision passes the
// same authentication, role checks and validation as any other client.
// Responses stream (the handler's writes reach the reader as they happen,
// and Flush is honoured), so Server-Sent Events work; closing the body
// cancels the handler's context.
type handlerTransport struct {
	h http.Handler
}

// remoteAddrKey carries the browser's address to the in-memory request,
// for the plane's logs and per-address limits.
type remoteAddrKey struct{}

func withRemoteAddr(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, remoteAddrKey{}, addr)
}

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	sreq := req.Clone(ctx)
	if sreq.Body == nil {
		sreq.Body = http.NoBody
	}
	sreq.RequestURI = req.URL.RequestURI()
	sreq.Host = req.URL.Host
	sreq.Proto, sreq.ProtoMajor, sreq.ProtoMinor = "HTTP/1.1", 1, 1
	sreq.RemoteAddr = "127.0.0.1:0"
	if addr, ok := ctx.Value(remoteAddrKey{}).(string); ok && addr != "" {
		sreq.RemoteAddr = addr
	}
	if req.ContentLength > 0 {
		sreq.Header.Set("Content-Length", strconv.FormatInt(req.ContentLength, 10))
	}
	pr, pw := io.Pipe()
	w := &pipeResponse{header: http.Header{}, body: pw, ready: make(chan struct{})}
	go func() {
		defer func() {
			if v := recover(); v != nil {
				w.fail(fmt.Errorf("in-memory handler panicked: %v", v))
			}
			if req.Body != nil {
				_ = req.Body.Close()
			}
		}()
		t.h.ServeHTTP(w, sreq)
		w.finish()
	}()
	select {
	case <-w.ready:
	case <-ctx.Done():
		cancel()
		_ = pr.CloseWithError(ctx.Err())
		return nil, ctx.Err()
	}
	if w.err != nil {
		cancel()
		return nil, w.err
	}
	contentLength := int64(-1)
	if cl, err := strconv.ParseInt(w.sent.Get("Content-Length"), 10, 64); err == nil {
		contentLength = cl
	}
	return &http.Response{
		Status:        strconv.Itoa(w.status) + " " + http.StatusText(w.status),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.sent,
		Body:          &cancelOnClose{ReadCloser: pr, cancel: cancel},
		ContentLength: contentLength,
		Request:       req,
	}, nil
}

// pipeResponse is the handler's side: an http.ResponseWriter whose body
// is the write end of a pipe.
type pipeResponse struct {
	header http.Header
	body   *io.PipeWriter

	once   sync.Once
	ready  chan struct{} // closed when the status and headers are known
	status int
	sent   http.Header // the headers as they were when the status was written
	err    error       // set before ready closes when the handler failed before writing
}

func (w *pipeResponse) Header() http.Header { return w.header }

func (w *pipeResponse) WriteHeader(code int) {
	w.once.Do(func() {
		w.status = code
		w.sent = w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeResponse) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// Flush has nothing to do: every Write reaches the reader directly.
func (w *pipeResponse) Flush() { w.WriteHeader(http.StatusOK) }

// finish ends the body after the handler returned.
func (w *pipeResponse) finish() {
	w.WriteHeader(http.StatusOK)
	_ = w.body.Close()
}

// fail ends the exchange with err: as the round trip's error when nothing
// was written yet, otherwise as the body's read error.
func (w *pipeResponse) fail(err error) {
	w.once.Do(func() {
		w.err = err
		close(w.ready)
	})
	_ = w.body.CloseWithError(err)
}

// cancelOnClose cancels the handler's context when the reader closes
// the body.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	c.cancel()
	err := c.ReadCloser.Close()
	if errors.Is(err, io.ErrClosedPipe) {
		return nil
	}
	return err
}
