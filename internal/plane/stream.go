package plane

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/store"
)

// sseState is the data of state and end messages.
type sseState struct {
	State   string          `json:"state"`
	Failure *client.Failure `json:"failure,omitempty"`
}

// handleStream is GET /v1/runs/{id}/events/stream: Server-Sent Events.
// It sends every event after the resume point, then each new event and
// state change as it happens, and "end" once the run has ended and every
// event was sent.
func (p *Plane) handleStream(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	run, err := p.readableRun(r)
	if err != nil {
		return err
	}
	after := int64(-1)
	resume := r.URL.Query().Get("after")
	if h := strings.TrimSpace(r.Header.Get("Last-Event-ID")); h != "" {
		resume = h
	}
	if resume != "" {
		if after, err = strconv.ParseInt(resume, 10, 64); err != nil || after < -1 {
			return errf(client.CodeBadRequest, "after / Last-Event-ID must be an integer ≥ -1")
		}
	}
	wake, unsubscribe := p.notify.Subscribe(runTopic(run.ID))
	defer unsubscribe()
	flusher, _ := w.(http.Flusher)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	flush := func() {
		if flusher != nil {
			flusher.Flush()
		}
	}
	keepAlive := time.NewTicker(p.cfg.SSEKeepAlive)
	defer keepAlive.Stop()
	sendEvents := func() error {
		for {
			events, err := p.store.ListEvents(ctx, run.ID, after, 500)
			if err != nil {
				return err
			}
			for _, e := range events {
				if _, err := fmt.Fprintf(w, "event: %s\nid: %d\ndata: %s\n\n", client.StreamEvent, e.Seq, e.Data); err != nil {
					return err
				}
				after = e.Seq
			}
			if len(events) < 500 {
				return nil
			}
		}
	}
	sendState := func(kind string, r store.Run) error {
		st := sseState{State: r.State}
		if r.Failure != nil {
			st.Failure = &client.Failure{Class: r.Failure.Class, Message: r.Failure.Message}
		}
		b, _ := json.Marshal(st)
		_, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", kind, b)
		return err
	}
	lastState := ""
	for {
		if err := sendEvents(); err != nil {
			return streamEnd(err)
		}
		cur, err := p.store.GetRun(ctx, run.ID)
		if err != nil {
			return streamEnd(err)
		}
		if cur.State != lastState {
			if err := sendState(client.StreamState, cur); err != nil {
				return streamEnd(err)
			}
			lastState = cur.State
		}
		if store.IsTerminal(cur.State) {
			// The terminal state is written after the last event: catch up
			// once more, then end.
			if err := sendEvents(); err != nil {
				return streamEnd(err)
			}
			if err := sendState(client.StreamEnd, cur); err != nil {
				return streamEnd(err)
			}
			flush()
			return nil
		}
		flush()
		select {
		case <-wake:
		case <-keepAlive.C:
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			flush()
		case <-p.drainCh:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// streamEnd turns a failure during a stream into a logged error (the
// reply has started; the client sees the connection end and resumes).
func streamEnd(err error) error { return err }

// lineWriter writes JSON lines.
type lineWriter struct {
	w   io.Writer
	enc *json.Encoder
}

func newLineWriter(w io.Writer) *lineWriter { return &lineWriter{w: w, enc: json.NewEncoder(w)} }

func (l *lineWriter) line(v any) error { return l.enc.Encode(v) }
