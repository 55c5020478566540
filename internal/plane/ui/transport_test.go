package ui

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func roundTrip(t *testing.T, h http.Handler, req *http.Request) *http.Response {
	t.Helper()
	resp, err := (&http.Client{Transport: handlerTransport{h: h}}).Do(req)
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	return resp
}

// TestTransportServesInMemory: status, headers as of WriteHeader, the
// request body, and the caller's address reach the handler.
func TestTransportServesInMemory(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen", r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Authorization")+" "+r.RemoteAddr)
		w.WriteHeader(http.StatusTeapot)
		w.Header().Set("X-Late", "not sent")
		_, _ = w.Write(append([]byte("got "), body...))
	})
	ctx := withRemoteAddr(context.Background(), "192.0.2.7:4242")
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://plane.internal/v1/x?a=1", strings.NewReader("hello"))
	req.Header.Set("Authorization", "Bearer t")
	resp := roundTrip(t, h, req)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusTeapot || string(body) != "got hello" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Seen"); got != "POST /v1/x?a=1 Bearer t 192.0.2.7:4242" {
		t.Fatalf("handler saw %q", got)
	}
	if resp.Header.Get("X-Late") != "" {
		t.Fatal("a header set after WriteHeader was sent")
	}
}

// TestTransportStreams: what the handler writes and flushes reaches the
// reader before the handler returns (Server-Sent Events need this), and
// closing the body cancels the handler's context.
func TestTransportStreams(t *testing.T) {
	release := make(chan struct{})
	cancelled := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		<-release
		_, _ = io.WriteString(w, "second\n")
		<-r.Context().Done()
		close(cancelled)
	})
	req, _ := http.NewRequest(http.MethodGet, "http://plane.internal/stream", nil)
	resp := roundTrip(t, h, req)
	rd := bufio.NewReader(resp.Body)
	line, err := rd.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	close(release)
	if line, err = rd.ReadString('\n'); err != nil || line != "second\n" {
		t.Fatalf("second line %q, %v", line, err)
	}
	resp.Body.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("closing the body did not cancel the handler")
	}
}

// TestTransportFailures: a handler that panics before answering is an
// error, not a crash; a cancelled request ends the wait for headers.
func TestTransportFailures(t *testing.T) {
	panicky := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })
	req, _ := http.NewRequest(http.MethodGet, "http://plane.internal/", nil)
	if _, err := (&http.Client{Transport: handlerTransport{h: panicky}}).Do(req); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("panicking handler: %v", err)
	}
	block := make(chan struct{})
	defer close(block)
	slow := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-block })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, "http://plane.internal/", nil)
	if _, err := (&http.Client{Transport: handlerTransport{h: slow}}).Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled request: %v", err)
	}
}
