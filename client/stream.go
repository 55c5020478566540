package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"warrant.dev/warrant/protocol"
)

// Kinds of messages on a run's event stream.
const (
	StreamEvent = "event" // a chained event (Event is set); its SSE id is the seq
	StreamState = "state" // the run changed state (State is set)
	StreamEnd   = "end"   // the run ended and every event was sent
	StreamRun   = "run"   // GET /v1/runs/stream: a run-list row that changed
)

// StreamMessage is one message of GET /v1/runs/{id}/events/stream.
type StreamMessage struct {
	Kind  string
	Event *protocol.ChainedEvent
	State string
	// Failure is set on state and end messages of a failed run.
	Failure *Failure
}

// stateData is the JSON of state and end messages.
type stateData struct {
	State   string   `json:"state"`
	Failure *Failure `json:"failure,omitempty"`
}

// StreamEvents follows a run's events as Server-Sent Events, starting after
// seq after (-1 for the whole chain). It calls fn for each message in order
// and returns nil after the end message, or the first error (a dropped
// connection is a *TransportError: resume with the last seq seen).
func (c *Client) StreamEvents(ctx context.Context, runID string, after int64, fn func(StreamMessage) error) error {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v1/runs/"+url.PathEscape(runID)+"/events/stream", q), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if after >= 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(after, 10))
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	return readSSE(ctx, resp.Body, fn)
}

// readSSE parses a run's event stream.
func readSSE(ctx context.Context, body io.Reader, fn func(StreamMessage) error) error {
	return scanSSE(ctx, body, func(event, data string) (bool, error) {
		msg, err := decodeSSE(event, data)
		if err != nil {
			return false, err
		}
		if msg.Kind == "" {
			return false, nil
		}
		if err := fn(msg); err != nil {
			return false, err
		}
		return msg.Kind == StreamEnd, nil
	})
}

// scanSSE parses a text/event-stream body and calls fn with each
// message's event name and data until fn says stop. A body that ends
// before that is a *TransportError.
func scanSSE(ctx context.Context, body io.Reader, fn func(event, data string) (stop bool, err error)) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), protocol.MaxDocumentBytes)
	var event string
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data.Len() == 0 && event == "" {
				continue
			}
			stop, err := fn(event, data.String())
			event = ""
			data.Reset()
			if err != nil || stop {
				return err
			}
		case strings.HasPrefix(line, ":"):
			// comment: keep-alive
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := sc.Err(); err != nil {
		return &TransportError{Op: "read event stream", Err: err}
	}
	return &TransportError{Op: "read event stream", Err: io.ErrUnexpectedEOF}
}

// StreamRuns follows changes to the runs that match o's filters (its
// Limit and Cursor are ignored) as Server-Sent Events: fn gets each run
// (a run-list row, without contract and receipt) that changed at or after
// since (zero: from now on), oldest change first, then each change as it
// happens. With o.State set, a run is also sent once when it is seen in a
// later state of a run's life, so a list filtered by state learns that
// the run left it. Delivery is at least once. It returns fn's first error, or a
// *TransportError when the connection drops (resume with the UpdatedAt of
// the last run seen).
func (c *Client) StreamRuns(ctx context.Context, o ListRunsOptions, since time.Time, fn func(Run) error) error {
	q := url.Values{}
	for k, v := range map[string]string{"state": o.State, "pool": o.Pool, "agent": o.Agent, "requestedBy": o.RequestedBy} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !since.IsZero() {
		q.Set("since", protocol.FormatTime(since))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v1/runs/stream", q), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	return scanSSE(ctx, resp.Body, func(event, data string) (bool, error) {
		if event != StreamRun {
			return false, nil // unknown kinds are for newer clients
		}
		var run Run
		if err := json.Unmarshal([]byte(data), &run); err != nil {
			return false, fmt.Errorf("run stream: bad run: %w", err)
		}
		return false, fn(run)
	})
}

func decodeSSE(event, data string) (StreamMessage, error) {
	switch event {
	case StreamEvent, "":
		if data == "" {
			return StreamMessage{}, nil
		}
		var e protocol.ChainedEvent
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			return StreamMessage{}, fmt.Errorf("event stream: bad event: %w", err)
		}
		return StreamMessage{Kind: StreamEvent, Event: &e}, nil
	case StreamState, StreamEnd:
		var s stateData
		if err := json.Unmarshal([]byte(data), &s); err != nil {
			return StreamMessage{}, fmt.Errorf("event stream: bad %s message: %w", event, err)
		}
		return StreamMessage{Kind: event, State: s.State, Failure: s.Failure}, nil
	default:
		return StreamMessage{}, nil // unknown kinds are for newer clients
	}
}
