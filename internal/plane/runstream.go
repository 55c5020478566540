package plane

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/protocol"
)

// runsTopic wakes run-list streams. Nobody publishes it by name: the
// plane's notifier publishes it after every run or pool topic (see
// runsNotifier), so every writer that announces a run change reaches the
// run-list streams too.
const runsTopic = "runs"

// runsNotifier publishes runsTopic beside each run and pool topic.
type runsNotifier struct{ Notifier }

func (n runsNotifier) Publish(topic string) {
	n.Notifier.Publish(topic)
	if strings.HasPrefix(topic, "run:") || strings.HasPrefix(topic, "pool:") {
		n.Notifier.Publish(runsTopic)
	}
}

// Run-list streams re-read this far behind the newest change they sent:
// replicas stamp UpdatedAt with their own clocks and commit in their own
// order, and a run can change twice within one millisecond. Runs re-read
// are sent again only when something a client shows changed.
const (
	runStreamSlack      = 2 * time.Second
	runStreamMinPeriod  = 200 * time.Millisecond // coalesces bursts of changes
	runStreamReadBatch  = 500
	runStreamMaxPending = 10_000 // bound on the runs remembered for deduplication
)

// runFingerprint is what a run-list client shows of a run: a re-read run
// whose fingerprint did not change is not sent again (heartbeats move
// UpdatedAt without changing anything a list shows).
type runFingerprint struct {
	state      string
	events     int64
	receipt    bool
	runner     string
	approvals  int
	cancelled  bool
	updatedAtM int64 // for pruning
}

func fingerprintOf(r store.Run, approvals int) runFingerprint {
	return runFingerprint{state: r.State, events: r.EventCount, receipt: r.HasReceipt, runner: r.RunnerID, approvals: approvals,
		cancelled: r.Cancel != nil, updatedAtM: r.UpdatedAt.UnixMilli()}
}

func (f runFingerprint) sameAs(o runFingerprint) bool {
	return f.state == o.state && f.events == o.events && f.receipt == o.receipt && f.runner == o.runner && f.approvals == o.approvals && f.cancelled == o.cancelled
}

// handleRunsStream is GET /v1/runs/stream: Server-Sent Events with one
// "run" message (a run-list row) for each run matching the filters that
// changed at or after since (default: now), oldest change first, then
// each change as it happens. With a state filter, a run is also sent
// once when it is seen in a later state of a run's life, so a list
// filtered by state learns that the run left it. Delivery is at least
// once.
func (p *Plane) handleRunsStream(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	f := store.RunFilter{State: q.Get("state"), Pool: q.Get("pool"), AgentKind: q.Get("agent"), RequesterName: q.Get("requestedBy")}
	if f.State != "" && !slices.Contains(protocol.RunStates, f.State) {
		return errf(client.CodeBadRequest, "state %q is not one of %s", f.State, strings.Join(protocol.RunStates, ", "))
	}
	id := info(r).who
	if id.isRole(client.RoleRequester) {
		f.RequesterID = id.principal.ID
	}
	watermark := p.now()
	if s := q.Get("since"); s != "" {
		t, err := protocol.ParseTime(s)
		if err != nil {
			return errf(client.CodeBadRequest, "since: %v", err)
		}
		watermark = t
	}
	if h := strings.TrimSpace(r.Header.Get("Last-Event-ID")); h != "" {
		ms, err := strconv.ParseInt(h, 10, 64)
		if err != nil || ms < 0 {
			return errf(client.CodeBadRequest, "Last-Event-ID must be the millisecond time of a change")
		}
		watermark = time.UnixMilli(ms).UTC()
	}
	// The first read covers exactly [since, …); later reads look back by
	// the slack, but never before since.
	since := watermark
	from := watermark
	wake, unsubscribe := p.notify.Subscribe(runsTopic)
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
	flush()

	sent := map[string]runFingerprint{} // runs sent whose change is within the slack window
	left := map[string]bool{}           // runs already reported as having left the state filter
	send := func(run store.Run) error {
		v, err := p.view(ctx, run, false)
		if err != nil {
			return err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode run %s: %w", run.ID, err)
		}
		_, err = fmt.Fprintf(w, "event: %s\nid: %d\ndata: %s\n\n", client.StreamRun, run.UpdatedAt.UnixMilli(), b)
		return err
	}
	readOnce := func() error {
		var cur *store.RunCursor
		for {
			runs, err := p.store.RunsUpdatedSince(ctx, from, cur, runStreamReadBatch)
			if err != nil {
				return err
			}
			for _, run := range runs {
				if run.UpdatedAt.After(watermark) {
					watermark = run.UpdatedAt
				}
				if f.RequesterID != "" && run.RequesterID != f.RequesterID {
					continue
				}
				if !matchesFixed(f, run) {
					continue
				}
				d, err := decodeDetails(run.Details)
				if err != nil {
					return err
				}
				fp := fingerprintOf(run, len(d.Approvals))
				switch {
				case f.State == "" || run.State == f.State:
					if prev, ok := sent[run.ID]; ok && prev.sameAs(fp) {
						continue
					}
				case laterState(f.State, run.State) && !left[run.ID]:
					left[run.ID] = true // it left the filter: say so once
				default:
					continue
				}
				if err := send(run); err != nil {
					return err
				}
				sent[run.ID] = fp
			}
			if len(runs) < runStreamReadBatch {
				break
			}
			last := runs[len(runs)-1]
			cur = &store.RunCursor{At: last.UpdatedAt, ID: last.ID}
		}
		from = watermark.Add(-runStreamSlack)
		if from.Before(since) {
			from = since
		}
		cutoff := from.UnixMilli()
		for id, fp := range sent {
			if fp.updatedAtM < cutoff || len(sent) > runStreamMaxPending {
				delete(sent, id)
			}
		}
		for id := range left {
			if len(left) <= runStreamMaxPending {
				break
			}
			delete(left, id)
		}
		return nil
	}

	keepAlive := time.NewTicker(p.cfg.SSEKeepAlive)
	defer keepAlive.Stop()
	for {
		if err := readOnce(); err != nil {
			return streamEnd(err)
		}
		flush()
		select {
		case <-wake:
		case <-keepAlive.C:
			// Re-read on keep-alives too, so a lost wakeup only delays.
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
		case <-p.drainCh:
			return nil
		case <-ctx.Done():
			return nil
		}
		select { // coalesce a burst of changes into one read
		case <-time.After(runStreamMinPeriod):
		case <-p.drainCh:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// stateRank orders run states along a run's life.
var stateRank = map[string]int{
	protocol.StateAwaitingApproval: 0, protocol.StateCreated: 1, protocol.StateClaimed: 2, protocol.StateProvisioning: 3,
	protocol.StateRunning: 4, protocol.StateCompleted: 5, protocol.StateFailed: 5, protocol.StateCancelled: 5,
}

// laterState reports whether a run now in state now may have been in
// state was before: was comes earlier in a run's life.
func laterState(was, now string) bool {
	w, ok1 := stateRank[was]
	n, ok2 := stateRank[now]
	return ok1 && ok2 && n > w
}

// matchesFixed applies the filters on what never changes in a run: pool,
// agent kind and requester.
func matchesFixed(f store.RunFilter, r store.Run) bool {
	return (f.Pool == "" || r.Pool == f.Pool) && (f.AgentKind == "" || r.AgentKind == f.AgentKind) &&
		(f.RequesterName == "" || r.RequesterName == f.RequesterName)
}
