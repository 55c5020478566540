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

	"warrant.dev/warrant/protocol"
)

// Kinds of messages on a run's event stream.
const (
	StreamEvent = "event" // a chained event (Event is set); its SSE id is the seq
	StreamState = "state" // the run changed state (State is set)
	StreamEnd   = "end"   // the run ended and every event was sent
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

// readSSE parses a text/event-stream body.
func readSSE(ctx context.Context, body io.Reader, fn func(StreamMessage) error) error {
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
			msg, err := decodeSSE(event, data.String())
			event = ""
			data.Reset()
			if err != nil {
				return err
			}
			if msg.Kind == "" {
				continue
			}
			if err := fn(msg); err != nil {
				return err
			}
			if msg.Kind == StreamEnd {
				return nil
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
