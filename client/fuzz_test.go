package client

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// FuzzReadSSE feeds the client's Server-Sent Events parser (what a runner
// or CLI reads from a plane, or from whoever answers in its place)
// arbitrary bytes: it never panics; it returns nil only after an end
// message; every event message it delivers carries a parsed event; a
// stream that stops early is a *TransportError (resumable), never a
// silent success.
func FuzzReadSSE(f *testing.F) {
	f.Add("event: event\nid: 0\ndata: {\"version\":\"warrant.event.v1\",\"seq\":0,\"ts\":\"2026-11-27T16:39:51.105Z\",\"prev\":\"" + strings.Repeat("a", 64) + "\",\"event\":{\"type\":\"run.created\"},\"hash\":\"" + strings.Repeat("b", 64) + "\"}\n\nevent: state\ndata: {\"state\":\"running\"}\n\n: keep-alive\n\nevent: end\ndata: {\"state\":\"failed\",\"failure\":{\"class\":\"session_failed\",\"message\":\"x\"}}\n\n")
	f.Add("event: end\ndata: {\"state\":\"completed\"}\n")
	f.Add("data: {\"seq\":1}\ndata: more\n\n")
	f.Add("event: state\ndata: not json\n\n")
	f.Add("event: future-kind\ndata: {}\n\nevent: end\ndata: {}\n\n")
	f.Add(strings.Repeat("data: x\n", 100))
	f.Fuzz(func(t *testing.T, stream string) {
		ended := false
		err := readSSE(context.Background(), strings.NewReader(stream), func(m StreamMessage) error {
			if ended {
				t.Fatal("a message after the end message")
			}
			switch m.Kind {
			case StreamEvent:
				if m.Event == nil {
					t.Fatal("an event message without an event")
				}
			case StreamEnd:
				ended = true
			case StreamState:
			default:
				t.Fatalf("a message of unknown kind %q was delivered", m.Kind)
			}
			return nil
		})
		if err == nil && !ended {
			t.Fatal("the stream ended without an end message, yet no error")
		}
		if err != nil && ended {
			t.Fatalf("an error after the end message: %v", err)
		}
		var te *TransportError
		if err != nil && !errors.As(err, &te) && !strings.Contains(err.Error(), "event stream: bad") {
			t.Fatalf("an unexpected kind of error: %v", err)
		}
	})
}
