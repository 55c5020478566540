package runner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/protocol"
)

// maxEventBatch caps the events of one append request.
const maxEventBatch = 500

// errChainClosed is returned by emit after the terminal event.
var errChainClosed = errors.New("the run's event chain is closed")

// eventLog is a run's event chain: the events the plane sent with the
// claim, then the ones this runner appends. Events are appended locally
// (emit never waits for the network) and a single flusher posts them to
// the plane in order, in batches, while the run goes on, so watchers see
// them live. Posting is idempotent on the plane, so a batch whose reply
// was lost is simply posted again.
type eventLog struct {
	genesis  string
	sanitize func(protocol.EventPayload) protocol.EventPayload

	mu       sync.Mutex
	chain    []protocol.ChainedEvent
	posted   int   // chain[:posted] is on the plane
	closed   bool  // the terminal event was appended
	fatal    error // the plane refused the chain; nothing more can be posted
	changed  chan struct{}
	progress chan struct{} // closed and replaced whenever posted or fatal changes
}

func newEventLog(genesis string, claimed []protocol.ChainedEvent, sanitize func(protocol.EventPayload) protocol.EventPayload) *eventLog {
	chain := make([]protocol.ChainedEvent, len(claimed), len(claimed)+16)
	copy(chain, claimed)
	return &eventLog{
		genesis:  genesis,
		sanitize: sanitize,
		chain:    chain,
		posted:   len(claimed),
		changed:  make(chan struct{}, 1),
		progress: make(chan struct{}),
	}
}

// emit appends an event. It fails after the terminal event, so an egress
// decision that arrives too late to be recorded is refused.
func (l *eventLog) emit(p protocol.EventPayload) error {
	if l.sanitize != nil {
		p = l.sanitize(p)
	}
	body := protocol.NewEvent(p)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return fmt.Errorf("record %s: %w", p.EventType(), errChainClosed)
	}
	var last *protocol.ChainedEvent
	if n := len(l.chain); n > 0 {
		last = &l.chain[n-1]
	}
	e, err := protocol.NextEvent(last, l.genesis, body, time.Now())
	if err != nil {
		l.mu.Unlock()
		return fmt.Errorf("record %s: %w", p.EventType(), err)
	}
	l.chain = append(l.chain, e)
	switch p.(type) {
	case protocol.RunCompleted, protocol.RunFailed, protocol.RunCancelled:
		l.closed = true
	}
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
	return nil
}

// snapshot returns a copy of the chain.
func (l *eventLog) snapshot() []protocol.ChainedEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]protocol.ChainedEvent(nil), l.chain...)
}

// flush posts pending events until ctx ends, then returns. onFatal is
// called once if the plane refuses the chain for good (claim expired or
// used, chain rejected).
func (l *eventLog) flush(ctx context.Context, api *client.Client, runID string, onFatal func(error)) {
	failures := 0
	for {
		l.mu.Lock()
		pending := l.chain[l.posted:min(len(l.chain), l.posted+maxEventBatch)]
		l.mu.Unlock()
		if len(pending) == 0 {
			select {
			case <-l.changed:
				continue
			case <-ctx.Done():
				return
			}
		}
		_, err := api.AppendEvents(ctx, runID, pending)
		if err == nil {
			failures = 0
			l.advance(len(pending), nil)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if !client.IsTransient(err) {
			err = fmt.Errorf("append events %d..%d: %w", pending[0].Seq, pending[len(pending)-1].Seq, err)
			l.advance(0, err)
			onFatal(err)
			return
		}
		wait := client.DefaultBackoff.Wait(failures)
		failures++
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

func (l *eventLog) advance(n int, fatal error) {
	l.mu.Lock()
	l.posted += n
	if fatal != nil && l.fatal == nil {
		l.fatal = fatal
	}
	close(l.progress)
	l.progress = make(chan struct{})
	l.mu.Unlock()
}

// sync waits until every event appended so far is on the plane.
func (l *eventLog) sync(ctx context.Context) error {
	l.mu.Lock()
	target := len(l.chain)
	l.mu.Unlock()
	for {
		l.mu.Lock()
		posted, fatal, progress := l.posted, l.fatal, l.progress
		l.mu.Unlock()
		if fatal != nil {
			return fatal
		}
		if posted >= target {
			return nil
		}
		select {
		case l.changed <- struct{}{}:
		default:
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return fmt.Errorf("post events: %w", context.Cause(ctx))
		}
	}
}
