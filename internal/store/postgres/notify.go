package postgres

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// maxPendingTopics bounds the topics waiting to be published while the
// database is unreachable; beyond it topics are dropped (waiters still
// re-check on their own timers and on reconnection).
const maxPendingTopics = 100_000

// Notifier wakes waiters of every plane replica on one database. It has
// the method set of the plane's Notifier (Publish, Subscribe), without
// importing the plane.
//
// Publish wakes local subscribers at once and sends the topic to the other
// replicas with NOTIFY on a channel named after the schema (payload:
// "<origin> <topic>", origin naming this notifier so it ignores its own
// echo). Sends are coalesced: topics published while a send is in flight
// go out together in the next one, and a failed send is retried with
// backoff. One dedicated connection LISTENs and fans notifications out
// to local subscribers; when it drops it reconnects with backoff and then
// wakes every local subscriber, because notifications sent meanwhile are
// lost and waiters re-check state when woken.
type Notifier struct {
	pool    *pgxpool.Pool
	connCfg *pgx.ConnConfig
	channel string
	origin  string
	log     *slog.Logger

	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}

	pubMu   sync.Mutex
	pending map[string]struct{}
	kick    chan struct{}

	cancel context.CancelFunc
	loops  sync.WaitGroup
	closed sync.Once

	// reconnected is called after the listener re-established LISTEN
	// (tests observe it).
	reconnected func()
}

// NewNotifier starts a notifier on the database and schema of s: it
// opens its listening connection before returning (so nothing published
// after NewNotifier returns is missed) and runs until Close.
func NewNotifier(ctx context.Context, s *Store, log *slog.Logger) (*Notifier, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	n := &Notifier{
		pool:    s.pool,
		connCfg: s.pool.Config().ConnConfig.Copy(),
		channel: channelName(s.schema),
		origin:  hex.EncodeToString(id[:]),
		log:     log,
		subs:    map[string]map[chan struct{}]struct{}{},
		pending: map[string]struct{}{},
		kick:    make(chan struct{}, 1),
	}
	n.connCfg.RuntimeParams["application_name"] = "warrant-notifier-" + n.origin
	conn, err := n.connect(ctx)
	if err != nil {
		return nil, err
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.loops.Add(2)
	go func() {
		defer n.loops.Done()
		n.listen(loopCtx, conn)
	}()
	go func() {
		defer n.loops.Done()
		n.publishLoop(loopCtx)
	}()
	return n, nil
}

// channelName is the NOTIFY channel of a schema (at most 63 bytes, the
// identifier limit).
func channelName(schema string) string {
	c := "warrant." + schema
	if len(c) > 63 {
		h := sha256.Sum256([]byte(schema))
		c = "warrant." + hex.EncodeToString(h[:16])
	}
	return c
}

// Close stops the notifier after a last attempt to send what is pending.
func (n *Notifier) Close() {
	n.closed.Do(func() {
		n.cancel()
		n.loops.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if topics := n.take(); len(topics) > 0 {
			if err := n.send(ctx, topics); err != nil {
				n.log.Warn("notifier: final notifications not sent", "topics", len(topics), "err", err)
			}
		}
	})
}

// Publish wakes every subscriber of topic, here and on other replicas.
// It does not block on the database.
func (n *Notifier) Publish(topic string) {
	n.deliver(topic)
	n.pubMu.Lock()
	if len(n.pending) < maxPendingTopics {
		n.pending[topic] = struct{}{}
	} else {
		n.log.Warn("notifier: too many pending notifications, dropping one", "topic", topic)
	}
	n.pubMu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Subscribe returns a channel that receives after each Publish to topic
// (on any replica), and a function that ends the subscription.
func (n *Notifier) Subscribe(topic string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	if n.subs[topic] == nil {
		n.subs[topic] = map[chan struct{}]struct{}{}
	}
	n.subs[topic][ch] = struct{}{}
	n.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			n.mu.Lock()
			delete(n.subs[topic], ch)
			if len(n.subs[topic]) == 0 {
				delete(n.subs, topic)
			}
			n.mu.Unlock()
		})
	}
}

// deliver wakes the local subscribers of topic without blocking.
func (n *Notifier) deliver(topic string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.subs[topic] {
		select {
		case ch <- struct{}{}:
		default: // a wakeup is pending already
		}
	}
}

// wakeAll wakes every local subscriber.
func (n *Notifier) wakeAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, chans := range n.subs {
		for ch := range chans {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// --- sending ---

func (n *Notifier) take() []string {
	n.pubMu.Lock()
	defer n.pubMu.Unlock()
	if len(n.pending) == 0 {
		return nil
	}
	out := make([]string, 0, len(n.pending))
	for t := range n.pending {
		out = append(out, t)
	}
	clear(n.pending)
	return out
}

func (n *Notifier) putBack(topics []string) {
	n.pubMu.Lock()
	defer n.pubMu.Unlock()
	for _, t := range topics {
		if len(n.pending) >= maxPendingTopics {
			break
		}
		n.pending[t] = struct{}{}
	}
}

// send NOTIFYs every topic in one statement.
func (n *Notifier) send(ctx context.Context, topics []string) error {
	_, err := n.pool.Exec(ctx, "SELECT pg_notify($1, $2 || ' ' || t) FROM unnest($3::text[]) AS t", n.channel, n.origin, topics)
	return err
}

func (n *Notifier) publishLoop(ctx context.Context) {
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.kick:
		}
		topics := n.take()
		if len(topics) == 0 {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := n.send(sctx, topics)
		cancel()
		if err == nil {
			failures = 0
			continue
		}
		if ctx.Err() != nil {
			n.putBack(topics) // Close sends them
			return
		}
		failures++
		n.log.Warn("notifier: NOTIFY failed; retrying", "topics", len(topics), "attempt", failures, "err", err)
		n.putBack(topics)
		if !sleep(ctx, backoff(failures)) {
			return
		}
		select {
		case n.kick <- struct{}{}:
		default:
		}
	}
}

// --- listening ---

func (n *Notifier) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, n.connCfg.Copy())
	if err != nil {
		return nil, fmt.Errorf("notifier: connect: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{n.channel}.Sanitize()); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("notifier: listen: %w", err)
	}
	return conn, nil
}

func (n *Notifier) listen(ctx context.Context, conn *pgx.Conn) {
	for {
		err := n.receive(ctx, conn)
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(closeCtx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("notifier: listening connection lost; reconnecting", "err", err)
		for attempt := 1; ; attempt++ {
			if !sleep(ctx, backoff(attempt)) {
				return
			}
			conn, err = n.connect(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			n.log.Warn("notifier: reconnect failed", "attempt", attempt, "err", err)
		}
		n.log.Info("notifier: listening again; waking every waiter to re-check")
		n.wakeAll()
		if n.reconnected != nil {
			n.reconnected()
		}
	}
}

// receive fans out notifications until the connection fails or ctx ends.
func (n *Notifier) receive(ctx context.Context, conn *pgx.Conn) error {
	for {
		msg, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		origin, topic, ok := strings.Cut(msg.Payload, " ")
		if !ok || origin == n.origin {
			continue // our own echo: delivered locally at Publish
		}
		n.deliver(topic)
	}
}

// backoff is the wait before retry attempt (≥ 1): 100 ms doubling up to
// 5 s, with ±20% jitter.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt-1, 6)
	d = min(d, 5*time.Second)
	return time.Duration(float64(d) * (0.8 + 0.4*mrand.Float64()))
}

// sleep waits d or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
