package herald

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/protocol"
)

// Lifecycle events: what the application's backend learns of users and
// channels (lifecycle.go decides online/offline and occupied/vacated across
// the cluster). Every event is published to the events channel, a system
// channel with history that backends subscribe to with an API key and
// recover from like any channel, and webhooks (webhooks.go) read that
// stream in order. An event has a stable id: an event decided by several
// nodes (a node's death is seen by all) carries the same id from each, and
// the events channel drops the repeats within the idempotency window.

// EventsChannel is the system channel lifecycle events are published to.
// Its name cannot be a client channel's: only backends (connect.api_key)
// and the admin UI may subscribe to it.
const EventsChannel = "$events"

// Event types.
const (
	EventOnline      = "online"      // a user's first connection anywhere in the cluster
	EventOffline     = "offline"     // its last one gone, after OfflineGrace
	EventOccupied    = "occupied"    // a channel's first subscriber anywhere
	EventVacated     = "vacated"     // its last one gone, after VacatedGrace
	EventConnect     = "connect"     // a connection (Events.Connections)
	EventDisconnect  = "disconnect"  // its end (Events.Connections)
	EventSubscribe   = "subscribe"   // a subscription (Namespace.SubscriptionEvents)
	EventUnsubscribe = "unsubscribe" // its end (Namespace.SubscriptionEvents)
	// EventUndelivered (acks.go): a publication unacknowledged past
	// Namespace.AckDeadline.
)

// Event is a lifecycle event, as published to EventsChannel (JSON) and
// posted to webhooks.
type Event struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Time    int64  `json:"time"` // unix milliseconds
	Node    string `json:"node"`
	User    string `json:"user,omitempty"`
	Client  string `json:"client,omitempty"`
	Channel string `json:"channel,omitempty"`
	// Code and Reason say why a connection or subscription ended.
	Code   uint32 `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Offset and Epoch are the position of the publication an undelivered
	// event is about.
	Offset uint64 `json:"offset,omitempty"`
	Epoch  string `json:"epoch,omitempty"`
}

// EventsConfig configures lifecycle events. The zero value: off.
type EventsConfig struct {
	// Enabled turns lifecycle events on: online and offline for users,
	// occupied and vacated for channels, published to EventsChannel.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Connections adds a connect and a disconnect event for every
	// connection. Default false.
	Connections bool `yaml:"connections" json:"connections"`
	// OfflineGrace is how long a user's last connection must stay gone
	// before offline (a reconnect within it, on any node, produces neither
	// offline nor online); VacatedGrace the same for channels. Default 5s
	// each.
	OfflineGrace time.Duration `yaml:"offline_grace" json:"offline_grace"`
	VacatedGrace time.Duration `yaml:"vacated_grace" json:"vacated_grace"`
	// HistorySize and HistoryTTL bound the events channel's history: how
	// far a backend or a webhook that was away can catch up. Defaults
	// 100,000 events and 24h.
	HistorySize int           `yaml:"history_size" json:"history_size"`
	HistoryTTL  time.Duration `yaml:"history_ttl" json:"history_ttl"`
	// Webhooks post the events to the application's HTTP endpoints.
	Webhooks []WebhookConfig `yaml:"webhooks" json:"webhooks"`
}

func (c *EventsConfig) setDefaults() {
	if c.OfflineGrace == 0 {
		c.OfflineGrace = 5 * time.Second
	}
	if c.VacatedGrace == 0 {
		c.VacatedGrace = 5 * time.Second
	}
	if c.HistorySize == 0 {
		c.HistorySize = 100000
	}
	if c.HistoryTTL == 0 {
		c.HistoryTTL = 24 * time.Hour
	}
	for i := range c.Webhooks {
		c.Webhooks[i].setDefaults()
	}
}

func (c *EventsConfig) validate() error {
	if c.OfflineGrace < 0 || c.VacatedGrace < 0 || c.HistorySize < 0 || c.HistoryTTL < 0 {
		return errors.New("grace periods and history must not be negative")
	}
	if len(c.Webhooks) > 0 && !c.Enabled {
		return errors.New("webhooks need enabled: true")
	}
	names := map[string]bool{}
	for i, w := range c.Webhooks {
		if err := w.validate(); err != nil {
			return fmt.Errorf("webhooks[%d]: %w", i, err)
		}
		if names[w.name()] {
			return fmt.Errorf("webhooks[%d]: %s listed twice", i, w.URL)
		}
		names[w.name()] = true
	}
	return nil
}

// events is the node's part in lifecycle events.
type events struct {
	s   *Server
	cfg EventsConfig
	ns  *namespace // the events channel's options

	// Work on one user or channel runs on one worker, in order.
	workers [eventWorkers]chan func()
	seed    maphash.Seed

	// members counts this node's member subscriptions per channel;
	// joinedSubs are those subscriptions (a subscription ends once).
	mu          sync.Mutex
	members     map[string]int
	joinedSubs  map[*subscription]struct{}
	userPeriods map[string]string      // this node's users and their online period
	chanPeriods map[string]period      // this node's channels with members, their period and since when
	timers      map[string]*time.Timer // pending grace timers, by key
	swept       map[string]bool        // dead nodes swept (or being swept)

	emitted, failed atomic.Uint64
}

const (
	eventWorkers  = 8
	eventQueueLen = 4096
)

func newEvents(s *Server, cfg EventsConfig) *events {
	e := &events{s: s, cfg: cfg, seed: maphash.MakeSeed(), members: map[string]int{}, joinedSubs: map[*subscription]struct{}{},
		userPeriods: map[string]string{}, chanPeriods: map[string]period{}, timers: map[string]*time.Timer{}, swept: map[string]bool{}}
	e.ns = compileNamespace(Namespace{Name: EventsChannel, HistorySize: cfg.HistorySize, HistoryTTL: cfg.HistoryTTL})
	for i := range e.workers {
		e.workers[i] = make(chan func(), eventQueueLen)
	}
	return e
}

// start runs the workers; they end when the server's quit closes and
// their queues are empty.
func (e *events) start() {
	for i := range e.workers {
		q := e.workers[i]
		e.s.goTracked(func() {
			for {
				select {
				case f := <-q:
					f()
				case <-e.s.quit:
					for {
						select {
						case f := <-q:
							f()
						default:
							return
						}
					}
				}
			}
		})
	}
}

// do queues f on key's worker. It waits while the queue is full: lifecycle
// work is never dropped.
func (e *events) do(key string, f func()) {
	q := e.workers[maphash.String(e.seed, key)%eventWorkers]
	select {
	case q <- f:
	case <-e.s.quit:
	}
}

// eventID is the stable id of an event decided from shared state: the same
// on every node that decides it.
func eventID(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:12])
}

// emit publishes ev to the events channel, retrying a failing broker for a
// while; the id makes repeats (its own retries, or other nodes deciding
// the same event) harmless.
func (e *events) emit(ev Event) {
	s := e.s
	if ev.ID == "" {
		ev.ID = newID()
	}
	if ev.Time == 0 {
		ev.Time = time.Now().UnixMilli()
	}
	ev.Node = s.nodeID
	data, _ := json.Marshal(&ev)
	opts := e.ns.publishOptions(ev.ID, max(s.cfg.IdempotencyWindow, 10*time.Minute))
	backoff := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		// Not s.ctx: the workers finish their queues while the node stops,
		// before the broker closes.
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		_, _, err := s.broker.Publish(ctx, EventsChannel, &protocol.Publication{Data: data, Tags: map[string]string{"type": ev.Type}}, opts)
		cancel()
		if err == nil {
			e.emitted.Add(1)
			return
		}
		stopping := false
		select {
		case <-s.quit:
			stopping = true
		default:
		}
		if stopping || attempt == 8 {
			e.failed.Add(1)
			s.log.Error("lifecycle event lost", "type", ev.Type, "id", ev.ID, "user", ev.User, "channel", ev.Channel, "err", err)
			return
		}
		s.log.Warn("publish lifecycle event", "type", ev.Type, "attempt", attempt+1, "err", err)
		select {
		case <-time.After(backoff):
		case <-s.quit:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// subscriptionEvents reports whether sub's namespace asks for subscribe
// and unsubscribe events.
func (e *events) subscriptionEvents(sub *subscription) bool {
	return sub.ns.SubscriptionEvents
}

// connKey is the worker key of a connection's events: its user's, so
// that a user's connect comes before its online and its offline after its
// disconnect; a connection without a user has its own.
func connKey(ss *session, user string) string {
	if user != "" {
		return user
	}
	return ss.id
}

// connected is called once a connection is established.
func (e *events) connected(ss *session, user string, firstOfUser bool) {
	if e.cfg.Connections {
		ev := Event{Type: EventConnect, User: user, Client: ss.id}
		e.do(connKey(ss, user), func() { e.emit(ev) })
	}
	if user != "" {
		client := ss.id
		e.do(user, func() { e.userArrived(user, client, firstOfUser) })
	}
}

// disconnected is called when an established connection's cleanup ends.
func (e *events) disconnected(ss *session, user string, lastOfUser bool, code uint32, reason string) {
	if e.cfg.Connections {
		ev := Event{Type: EventDisconnect, User: user, Client: ss.id, Code: code, Reason: reason}
		e.do(connKey(ss, user), func() { e.emit(ev) })
	}
	if user != "" {
		client := ss.id
		e.do(user, func() { e.userLeft(user, client, lastOfUser) })
	}
}

// joined is called when a member subscription became active.
func (e *events) joined(ss *session, sub *subscription, user string) {
	if e.subscriptionEvents(sub) {
		ev := Event{Type: EventSubscribe, User: user, Client: ss.id, Channel: sub.Channel}
		e.do(connKey(ss, user), func() { e.emit(ev) })
	}
	ch := sub.Channel
	e.mu.Lock()
	if _, dup := e.joinedSubs[sub]; dup {
		e.mu.Unlock()
		return
	}
	e.joinedSubs[sub] = struct{}{}
	e.members[ch]++
	first := e.members[ch] == 1
	e.mu.Unlock()
	if first {
		e.do(ch, func() { e.channelArrived(ch) })
	}
}

// left is called when a subscription ended; it counts only if it had
// joined, and only once.
func (e *events) left(ss *session, sub *subscription, user string, code uint32, reason string) {
	e.mu.Lock()
	_, ok := e.joinedSubs[sub]
	delete(e.joinedSubs, sub)
	e.mu.Unlock()
	if !ok {
		return
	}
	if e.subscriptionEvents(sub) {
		ev := Event{Type: EventUnsubscribe, User: user, Client: ss.id, Channel: sub.Channel, Code: code, Reason: reason}
		e.do(connKey(ss, user), func() { e.emit(ev) })
	}
	ch := sub.Channel
	e.mu.Lock()
	e.members[ch]--
	last := e.members[ch] <= 0
	if last {
		delete(e.members, ch)
	}
	e.mu.Unlock()
	if last {
		e.do(ch, func() { e.channelLeft(ch) })
	}
}

// localMembers reports whether this node has members of ch now.
func (e *events) localMembers(ch string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.members[ch] > 0
}

// memberChannels returns the channels with members on this node.
func (e *events) memberChannels() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.members))
	for ch := range e.members {
		out = append(out, ch)
	}
	return out
}

// eventsNamespace returns the events channel's namespace when events are on.
func (s *Server) eventsNamespace(ch string) (*namespace, bool) {
	if s.events == nil || ch != EventsChannel {
		return nil, false
	}
	return s.events.ns, true
}
