package herald

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/protocol"
)

// Webhooks post lifecycle events to the application. A webhook reads the
// events channel in order from its cursor, posts the events in batches,
// and moves the cursor on once the receiver answered 2xx; while it fails,
// the batch is retried with exponential backoff and jitter. So every event
// arrives at least once, in the stream's order. One node of the cluster
// sends (the live node with the lowest id); the cursor is kept in the
// broker (a one-publication channel per webhook), so another node takes
// over where it stopped. The backlog is the events channel's history: past
// it, events are lost, counted and logged.
//
// Each request is a POST of {"epoch": E, "events": [...]} with the header
// Herald-Signature: t=UNIX,v1=HEX, HEX being HMAC-SHA256 with the secret of
// "UNIX.BODY". A receiver checks it and refuses times far from its clock.

// WebhookConfig is one endpoint that receives lifecycle events.
type WebhookConfig struct {
	// URL is where events are posted (http or https).
	URL string `yaml:"url" json:"url"`
	// Secret signs every request (HMAC-SHA256). Required.
	Secret string `yaml:"secret" json:"secret"`
	// Types limits the events sent (online, offline, ...); empty: all.
	Types []string `yaml:"types" json:"types"`
	// BatchSize is the most events in one request. Default 100.
	BatchSize int `yaml:"batch_size" json:"batch_size"`
	// Timeout bounds each request. Default 10s.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// MaxBackoff is the longest wait between retries. Default 1m.
	MaxBackoff time.Duration `yaml:"max_backoff" json:"max_backoff"`
}

func (w *WebhookConfig) setDefaults() {
	if w.BatchSize == 0 {
		w.BatchSize = 100
	}
	if w.Timeout == 0 {
		w.Timeout = 10 * time.Second
	}
	if w.MaxBackoff == 0 {
		w.MaxBackoff = time.Minute
	}
}

func (w WebhookConfig) validate() error {
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url %q: want an http:// or https:// URL", w.URL)
	}
	if w.Secret == "" {
		return fmt.Errorf("url %s: secret required: every request is signed with it", w.URL)
	}
	if w.BatchSize < 0 || w.Timeout < 0 || w.MaxBackoff < 0 {
		return fmt.Errorf("url %s: batch_size, timeout and max_backoff must not be negative", w.URL)
	}
	for _, t := range w.Types {
		switch t {
		case EventOnline, EventOffline, EventOccupied, EventVacated, EventConnect, EventDisconnect, EventSubscribe, EventUnsubscribe, EventUndelivered:
		default:
			return fmt.Errorf("url %s: unknown event type %q", w.URL, t)
		}
	}
	return nil
}

// name identifies the webhook (its cursor channel and metrics label).
func (w WebhookConfig) name() string { return w.URL }

// cursorChannel keeps the webhook's cursor: its last publication says how
// far the stream was delivered.
func (w WebhookConfig) cursorChannel() string {
	return "$webhook:" + eventID("webhook", w.URL)
}

// Sign returns the Herald-Signature header value for body at t: receivers
// compute the same with their copy of the secret.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// webhook is one WebhookConfig at work.
type webhook struct {
	e      *events
	cfg    WebhookConfig
	client *http.Client
	cursor protocol.StreamPosition
	loaded bool
}

func (e *events) startWebhooks() {
	for _, cfg := range e.cfg.Webhooks {
		w := &webhook{e: e, cfg: cfg, client: &http.Client{Timeout: cfg.Timeout}}
		e.s.goTracked(w.run)
	}
}

// leader reports whether this node sends webhooks: the live node with the
// lowest id.
func (e *events) leader() bool {
	now := time.Now()
	for id, k := range e.s.nodes.known(now) {
		if id < e.s.nodeID && now.Sub(k.lastSeen) <= 3*sampleEvery {
			return false
		}
	}
	return true
}

// wait pauses d, or until the server stops (false).
func (w *webhook) wait(d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-w.e.s.quit:
		return false
	}
}

func (w *webhook) run() {
	s := w.e.s
	m := s.metrics
	label := w.cfg.name()
	failures := 0
	for {
		if !w.e.leader() {
			w.loaded = false // another node sends; read its cursor when back
			if !w.wait(sampleEvery) {
				return
			}
			continue
		}
		if !w.loaded {
			if err := w.load(); err != nil {
				s.log.Warn("webhook cursor", "url", label, "err", err)
				if !w.wait(time.Second) {
					return
				}
				continue
			}
		}
		batch, next, head, err := w.read()
		if err != nil {
			s.log.Warn("webhook read events", "url", label, "err", err)
			if !w.wait(time.Second) {
				return
			}
			continue
		}
		m.webhookBacklog.WithLabelValues(label).Set(float64(head.Offset - w.cursor.Offset))
		if next == w.cursor {
			if !w.wait(250 * time.Millisecond) {
				return
			}
			continue
		}
		if len(batch) > 0 {
			if err := w.post(batch); err != nil {
				failures++
				m.webhookFailures.WithLabelValues(label).Inc()
				delay := min(w.cfg.MaxBackoff, 100*time.Millisecond<<min(failures, 20))
				delay = delay/2 + time.Duration(mrand.Int64N(int64(delay/2)+1)) // jitter
				s.log.Warn("webhook failed; retrying", "url", label, "events", len(batch), "attempt", failures, "retry_in", delay.String(), "err", err)
				if !w.wait(delay) {
					return
				}
				continue
			}
			failures = 0
			m.webhookEvents.WithLabelValues(label).Add(float64(len(batch)))
		}
		w.cursor = next
		w.save()
	}
}

// load reads the webhook's cursor from the broker; a webhook seen for the
// first time starts at the stream's current end.
func (w *webhook) load() error {
	s := w.e.s
	ctx, cancel := context.WithTimeout(s.ctx, commandTimeout)
	defer cancel()
	pubs, _, err := s.broker.History(ctx, w.cfg.cursorChannel(), broker.HistoryOptions{Limit: 1, Reverse: true})
	if err != nil {
		return err
	}
	if len(pubs) == 1 && json.Unmarshal(pubs[0].Data, &w.cursor) == nil {
		w.loaded = true
		return nil
	}
	_, pos, err := s.broker.History(ctx, EventsChannel, broker.HistoryOptions{})
	if err != nil {
		return err
	}
	w.cursor, w.loaded = pos, true
	return nil
}

// save records the cursor in the broker.
func (w *webhook) save() {
	s := w.e.s
	ctx, cancel := context.WithTimeout(s.ctx, commandTimeout)
	defer cancel()
	b, _ := json.Marshal(w.cursor)
	if _, _, err := s.broker.Publish(ctx, w.cfg.cursorChannel(), &protocol.Publication{Data: b}, broker.PublishOptions{HistorySize: 1, HistoryTTL: 30 * 24 * time.Hour}); err != nil {
		s.log.Warn("webhook cursor save", "url", w.cfg.name(), "err", err)
	}
}

// read returns the next batch of events after the cursor (those of the
// webhook's types), the position after it, and the stream's head. Events
// lost to the history bound (or a new epoch) are counted, once: the cursor
// moves past them.
func (w *webhook) read() ([]json.RawMessage, protocol.StreamPosition, protocol.StreamPosition, error) {
	s := w.e.s
	ctx, cancel := context.WithTimeout(s.ctx, commandTimeout)
	defer cancel()
	since := w.cursor
	pubs, pos, err := s.broker.History(ctx, EventsChannel, broker.HistoryOptions{Since: &since, Limit: w.cfg.BatchSize})
	if err != nil {
		return nil, since, since, err
	}
	switch {
	case pos.Epoch != since.Epoch:
		// A new stream: what the old one held beyond the cursor is gone.
		if since.Epoch != "" {
			s.log.Error("webhook: the events stream started again; undelivered events of the old one are lost", "url", w.cfg.name())
		}
		pubs, pos, err = s.broker.History(ctx, EventsChannel, broker.HistoryOptions{Since: &protocol.StreamPosition{Epoch: pos.Epoch}, Limit: w.cfg.BatchSize})
		if err != nil {
			return nil, since, since, err
		}
		since = protocol.StreamPosition{Epoch: pos.Epoch}
		if len(pubs) > 0 && pubs[0].Offset > 1 {
			w.lost(pubs[0].Offset - 1)
			since.Offset = pubs[0].Offset - 1
		}
	case len(pubs) > 0 && pubs[0].Offset > since.Offset+1:
		w.lost(pubs[0].Offset - since.Offset - 1)
		since.Offset = pubs[0].Offset - 1
	case len(pubs) == 0 && pos.Offset > since.Offset:
		// Everything after the cursor was trimmed away.
		w.lost(pos.Offset - since.Offset)
		since = pos
	}
	w.cursor = since // past what was lost, so that it is counted once
	next := since
	var batch []json.RawMessage
	for _, p := range pubs {
		next = protocol.StreamPosition{Epoch: pos.Epoch, Offset: p.Offset}
		if len(w.cfg.Types) > 0 && !slices.Contains(w.cfg.Types, p.Tags["type"]) {
			continue
		}
		batch = append(batch, json.RawMessage(p.Data))
	}
	return batch, next, pos, nil
}

func (w *webhook) lost(n uint64) {
	w.e.s.metrics.webhookLost.WithLabelValues(w.cfg.name()).Add(float64(n))
	w.e.s.log.Error("webhook: events lost: the receiver fell behind the events channel's history", "url", w.cfg.name(), "events", n)
}

// errWebhookStatus is a receiver's answer other than 2xx.
var errWebhookStatus = errors.New("herald: webhook answered")

// post sends one batch, signed.
func (w *webhook) post(batch []json.RawMessage) error {
	body, _ := json.Marshal(map[string]any{"epoch": w.cursor.Epoch, "events": batch})
	ctx, cancel := context.WithTimeout(w.e.s.ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "herald/"+Version)
	req.Header.Set("Herald-Signature", Sign(w.cfg.Secret, time.Now(), body))
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%w %d", errWebhookStatus, resp.StatusCode)
	}
	return nil
}
