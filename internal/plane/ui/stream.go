package ui

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/protocol"
)

// The browser's live updates: the page's script opens one of these
// streams and, on each message, fetches the page again and swaps in its
// live part. The streams only say that something changed (a seq, a
// state); the content always comes from a fresh page render.

// sseKeepAlive is how often an idle stream sends a comment, so proxies
// and browsers keep it open.
const sseKeepAlive = 15 * time.Second

// maxRunsStreamLookback bounds how far back a run-list stream's since may
// reach (a page older than this reloads anyway).
const maxRunsStreamLookback = 10 * time.Minute

// sseWriter writes Server-Sent Events from a handler and a keep-alive
// goroutine.
type sseWriter struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
	failed  bool
}

func newSSE(w http.ResponseWriter) *sseWriter {
	return &sseWriter{w: w, rc: http.NewResponseController(w)}
}

func (s *sseWriter) startLocked() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
}

func (s *sseWriter) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startLocked()
	_ = s.rc.Flush()
}

// send writes one message; data must be one line of JSON.
func (s *sseWriter) send(event, id string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("encode %s message: %w", event, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startLocked()
	msg := "event: " + event + "\n"
	if id != "" {
		msg += "id: " + id + "\n"
	}
	msg += "data: " + string(b) + "\n\n"
	if _, err := s.w.Write([]byte(msg)); err != nil {
		s.failed = true
		return err
	}
	return s.rc.Flush()
}

// keepAlive writes a comment every sseKeepAlive until stop is called;
// stop waits for the goroutine, so nothing writes after the handler.
func (s *sseWriter) keepAlive() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(sseKeepAlive)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				s.mu.Lock()
				if s.started && !s.failed {
					if _, err := s.w.Write([]byte(": keep-alive\n\n")); err != nil {
						s.failed = true
					} else {
						_ = s.rc.Flush()
					}
				}
				s.mu.Unlock()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}

// streamFailed answers a stream whose upstream refused it before anything
// was sent: a signed-out user gets 401 (the script then reloads the page,
// which goes to sign-in), others the API's status.
func (u *UI) streamFailed(w http.ResponseWriter, r *http.Request, err error) {
	var ae *client.APIError
	if errors.As(err, &ae) {
		if ae.Code == client.CodeUnauthenticated {
			u.clearCookie(w, r, sessionCookie)
		}
		http.Error(w, ae.Message, ae.Status)
		return
	}
	if r.Context().Err() == nil {
		u.log.Warn("ui: event stream failed", "path", r.URL.Path, "err", err)
	}
	http.Error(w, "the plane's stream failed", http.StatusBadGateway)
}

// handleRunStream is GET /ui/runs/{id}/stream?after=N: "event" (id =
// seq), "state" and "end" messages of one run.
func (u *UI) handleRunStream(w http.ResponseWriter, r *http.Request) {
	s := u.session(w, r)
	if s == nil {
		return
	}
	after := int64(-1)
	resume := r.URL.Query().Get("after")
	if h := r.Header.Get("Last-Event-ID"); h != "" {
		resume = h
	}
	if resume != "" {
		n, err := strconv.ParseInt(resume, 10, 64)
		if err != nil || n < -1 {
			http.Error(w, "after must be an integer ≥ -1", http.StatusBadRequest)
			return
		}
		after = n
	}
	sse := newSSE(w)
	stop := sse.keepAlive()
	defer stop()
	err := s.api.StreamEvents(apiContext(r), r.PathValue("id"), after, func(m client.StreamMessage) error {
		switch m.Kind {
		case client.StreamEvent:
			return sse.send("event", strconv.FormatInt(m.Event.Seq, 10), map[string]any{"seq": m.Event.Seq, "type": m.Event.Event.Type()})
		case client.StreamState, client.StreamEnd:
			return sse.send(m.Kind, "", map[string]string{"state": m.State})
		}
		return nil
	})
	stop()
	sse.mu.Lock()
	started := sse.started
	sse.mu.Unlock()
	if err != nil && !started {
		u.streamFailed(w, r, err)
	}
}

// handleRunsStream is GET /ui/stream/runs?filters&since: a "run" message
// for each change of a run the list shows.
func (u *UI) handleRunsStream(w http.ResponseWriter, r *http.Request) {
	s := u.session(w, r)
	if s == nil {
		return
	}
	q := r.URL.Query()
	f := client.ListRunsOptions{State: q.Get("state"), Pool: strings.TrimSpace(q.Get("pool")), Agent: q.Get("agent"), RequestedBy: strings.TrimSpace(q.Get("requestedBy"))}
	if f.State != "" && !slices.Contains(protocol.RunStates, f.State) {
		http.Error(w, "unknown state", http.StatusBadRequest)
		return
	}
	now := time.Now()
	since := now
	if v := q.Get("since"); v != "" {
		t, err := protocol.ParseTime(v)
		if err != nil {
			http.Error(w, "since must be an RFC 3339 time", http.StatusBadRequest)
			return
		}
		since = later(t, now.Add(-maxRunsStreamLookback))
	}
	sse := newSSE(w)
	sse.start()
	stop := sse.keepAlive()
	defer stop()
	_ = s.api.StreamRuns(apiContext(r), f, since, func(run client.Run) error {
		return sse.send("run", "", map[string]string{"id": run.ID, "state": run.State})
	})
}

// later of two times.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
