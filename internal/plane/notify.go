package plane

import "sync"

// Notifier wakes waiters when something changes: a claim long poll when a
// run is queued in its pool, a heartbeat when its run is cancelled, an
// event stream when its run changes. Notifications carry no data (waiters
// re-read the store) and may be coalesced. The in-process implementation
// serves one plane; a PostgreSQL LISTEN/NOTIFY one can serve replicas.
type Notifier interface {
	Publish(topic string)
	// Subscribe returns a channel that receives after each Publish to
	// topic, and a function that ends the subscription.
	Subscribe(topic string) (<-chan struct{}, func())
}

// Topics.
func poolTopic(pool string) string { return "pool:" + pool }
func runTopic(runID string) string { return "run:" + runID }

// LocalNotifier is the in-process Notifier.
type LocalNotifier struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
}

// NewLocalNotifier returns an in-process Notifier.
func NewLocalNotifier() *LocalNotifier {
	return &LocalNotifier{subs: map[string]map[chan struct{}]struct{}{}}
}

// Publish wakes every subscriber of topic (without blocking).
func (n *LocalNotifier) Publish(topic string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.subs[topic] {
		select {
		case ch <- struct{}{}:
		default: // already pending
		}
	}
}

// Subscribe registers a waiter on topic.
func (n *LocalNotifier) Subscribe(topic string) (<-chan struct{}, func()) {
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

// Subscribers returns how many waiters topic has (for tests and metrics).
func (n *LocalNotifier) Subscribers(topic string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.subs[topic])
}
