package herald

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/heraldhq/herald/auth"
	"github.com/heraldhq/herald/broker"
	"go.opentelemetry.io/otel/trace"
)

// Config configures a Server. The zero value is a working single node on
// the in-memory broker that accepts only authenticated connections and has
// no namespace open to clients. Every field documents its default.
type Config struct {
	// Listen is the address ListenAndServe listens on. Default ":8000".
	Listen string `yaml:"listen" json:"listen"`
	// APIKeys authorize the server HTTP API (header "Authorization: apikey
	// KEY"). With none, the API refuses every call.
	APIKeys []string `yaml:"api_keys" json:"api_keys"`
	// TokenSecret is the HS256 secret connection and subscription tokens
	// are verified with (shorthand for Token.HMACSecret).
	TokenSecret string `yaml:"token_secret" json:"token_secret"`
	// Token configures token verification: keys per algorithm (HS256,
	// RS256, ES256, EdDSA), a JWKS URL, and audience and issuer checks.
	// With no key at all only anonymous connections are possible.
	Token auth.VerifierConfig `yaml:"token" json:"token"`
	// TokenExpiryGrace is how long a connection whose token expired may
	// stay open waiting for a refresh command before it is closed with
	// 3502. The server sends a refresh push TokenRefreshNotice before exp.
	// Defaults 10s and 30s.
	TokenExpiryGrace   time.Duration `yaml:"token_expiry_grace" json:"token_expiry_grace"`
	TokenRefreshNotice time.Duration `yaml:"token_refresh_notice" json:"token_refresh_notice"`
	// AllowedOrigins lists the Origin values accepted on /ws: exact
	// ("https://app.example.com") or with one wildcard label
	// ("https://*.example.com"); "*" accepts any. With none, only requests
	// without Origin or whose Origin host equals the Host header are
	// accepted. Others get HTTP 403.
	AllowedOrigins []string `yaml:"allowed_origins" json:"allowed_origins"`
	// MaxConnectionsPerIP refuses upgrades from an IP with that many open
	// connections (HTTP 429). Default 0: no limit (behind a proxy every
	// client has the proxy's address).
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip" json:"max_connections_per_ip"`
	// MaxConnectionsPerUser closes (3009) a connection whose user already
	// has that many, counted across the cluster through the presence store.
	// Default 0: no limit.
	MaxConnectionsPerUser int `yaml:"max_connections_per_user" json:"max_connections_per_user"`
	// CommandRate and CommandBurst bound each connection's commands (token
	// bucket). Beyond them a command gets error 111; a connection that keeps
	// sending is closed with 3008. Defaults 100/s and 200; a negative
	// CommandRate turns the limit off.
	CommandRate  float64 `yaml:"command_rate" json:"command_rate"`
	CommandBurst int     `yaml:"command_burst" json:"command_burst"`
	// Proxy sends connect, subscribe, publish, rpc and refresh decisions to
	// the application's HTTP endpoints.
	Proxy ProxyConfig `yaml:"proxy" json:"proxy"`
	// NoMetricsEndpoint leaves /metrics out of Handler (serve
	// MetricsHandler on a separate listener instead).
	NoMetricsEndpoint bool `yaml:"-" json:"-"`
	// Admin configures the admin UI (AdminHandler), off unless it has a
	// password. (herald serve reads it from the config file's admin
	// section.)
	Admin AdminConfig `yaml:"-" json:"admin"`
	// NoAdminEndpoint leaves /admin/ out of Handler (serve AdminHandler on
	// a separate listener instead).
	NoAdminEndpoint bool `yaml:"-" json:"-"`
	// AllowAnonymous accepts connections without a token (user "").
	// Default false.
	AllowAnonymous bool `yaml:"allow_anonymous" json:"allow_anonymous"`
	// Namespaces configure channels by the part of their name before the
	// first colon. The namespace named "" is the default namespace: it
	// holds channels without a colon, and (with UnknownNamespacesAsDefault)
	// channels whose namespace is not listed.
	Namespaces []Namespace `yaml:"namespaces" json:"namespaces"`
	// UnknownNamespacesAsDefault applies the default namespace's options to
	// channels of namespaces not listed, instead of refusing them with
	// error 102. Default false.
	UnknownNamespacesAsDefault bool `yaml:"unknown_namespaces_as_default" json:"unknown_namespaces_as_default"`

	// Compression negotiates WebSocket permessage-deflate (RFC 7692) with
	// clients that offer it, without context takeover in either
	// direction. Compressed client messages are inflated (MaxMessageSize
	// applies to the inflated size); publications go compressed in the
	// namespaces whose Compression is set, each compressed once for all
	// its subscribers. Default false.
	Compression bool `yaml:"compression" json:"compression"`
	// MaxMessageSize is the largest WebSocket message accepted from a
	// client, after decompression; larger ones close the connection with
	// 1009. Default 64 KiB.
	MaxMessageSize int `yaml:"max_message_size" json:"max_message_size"`
	// QueueMaxBytes and QueueMaxMessages bound each connection's outbound
	// queue; what happens past them is the namespace's SlowPolicy.
	// Defaults 1 MiB and 4096.
	QueueMaxBytes    int `yaml:"queue_max_bytes" json:"queue_max_bytes"`
	QueueMaxMessages int `yaml:"queue_max_messages" json:"queue_max_messages"`
	// PingInterval is how often the server sends an application-level ping;
	// PongTimeout how long it waits for the pong before closing with 3004.
	// Defaults 25s and 10s.
	PingInterval time.Duration `yaml:"ping_interval" json:"ping_interval"`
	PongTimeout  time.Duration `yaml:"pong_timeout" json:"pong_timeout"`
	// StaleTimeout closes (3006) connections that do not send connect in
	// time. Default 10s.
	StaleTimeout time.Duration `yaml:"stale_timeout" json:"stale_timeout"`
	// MaxSubscriptions per connection. Default 128.
	MaxSubscriptions int `yaml:"max_subscriptions" json:"max_subscriptions"`
	// MaxChannelLength in bytes. Default 255.
	MaxChannelLength int `yaml:"max_channel_length" json:"max_channel_length"`
	// IdempotencyWindow is how long an idempotency key is remembered.
	// Default 2m.
	IdempotencyWindow time.Duration `yaml:"idempotency_window" json:"idempotency_window"`
	// PresenceTTL is how long a presence entry lives without refresh; each
	// node refreshes its clients' entries every PresenceTTL/3, so entries
	// of a dead node vanish within PresenceTTL. Default 15s.
	PresenceTTL time.Duration `yaml:"presence_ttl" json:"presence_ttl"`
	// Events configures lifecycle events (online, offline, occupied,
	// vacated, and per connection or subscription ones) and their
	// webhooks. Off by default.
	Events EventsConfig `yaml:"events" json:"events"`
	// QueryTimeout is how long a cluster-wide query (info, channels,
	// connections) waits for the other nodes' answers; a node that does
	// not answer in time is listed as unreachable. Default 2s.
	QueryTimeout time.Duration `yaml:"query_timeout" json:"query_timeout"`
	// DrainTimeout is the drain window: on Shutdown every client is told to
	// reconnect after a random delay within it, and the server waits for
	// queues to flush at most this long. Default 10s.
	DrainTimeout time.Duration `yaml:"drain_timeout" json:"drain_timeout"`
	// Engine selects the transport: "" (epoll on Linux, else goroutines),
	// "epoll" or "goroutine".
	Engine string `yaml:"engine" json:"engine"`
	// WriteCoalesce is how long the epoll engine's writers pause between
	// back-to-back rounds when they fall behind, so that each connection's
	// frames go out in fewer writes. The pause is this much per started
	// 500 connections of the round, at most ten times it; when the round's
	// writes carried fewer than 16 frames each, longer, until at the rate
	// frames came in each connection has 16 queued, but at most a hundred
	// times this, and at most as many of the writer's rounds as it waits
	// for a core per time it runs on one, less one (none with cores to
	// spare, one when it waits as long as it runs, more when several
	// nodes share a machine's cores). A connection written more often
	// than this, four writes in a row, holds publications back until this
	// long after its previous write (replies never wait).
	// Light traffic is written at once. Default 1ms; negative turns it
	// off.
	WriteCoalesce time.Duration `yaml:"write_coalesce" json:"write_coalesce"`
	// Echo also serves /ws/echo, a plain WebSocket echo endpoint for
	// conformance suites. Never on by default.
	Echo bool `yaml:"echo" json:"echo"`
	// TracerProvider traces publications with OpenTelemetry (see
	// tracing.go): the publish, the broker append, and each node's
	// fan-out. Default nil: no tracing. The binary builds one from the
	// standard OTEL_* environment variables.
	TracerProvider trace.TracerProvider `yaml:"-" json:"-"`
	// Demo serves the demo chat page (and the browser SDK it uses) at /.
	// Meant for development; `herald serve --dev` turns it on.
	Demo bool `yaml:"demo" json:"demo"`
	// HandshakeTimeout bounds reading the HTTP request headers. Default 10s.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout" json:"handshake_timeout"`
	// MaxHeaderBytes bounds the HTTP request headers (431 past it).
	// Default 16 KiB.
	MaxHeaderBytes int `yaml:"max_header_bytes" json:"max_header_bytes"`

	// Broker and Presence are the shared state; nil means in-memory (one
	// node). The server closes the broker on Shutdown.
	Broker   broker.Broker        `yaml:"-" json:"-"`
	Presence broker.PresenceStore `yaml:"-" json:"-"`
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger `yaml:"-" json:"-"`
	// OnRPC answers client rpc commands; nil refuses them with error 104.
	OnRPC func(c RPCContext, method string, data []byte) ([]byte, error) `yaml:"-" json:"-"`
}

// RPCContext describes the connection an rpc came from.
type RPCContext struct {
	Client string
	User   string
}

// Namespace holds the options of the channels in one namespace.
type Namespace struct {
	// Name is the namespace: the part of a channel name before the first
	// colon. "" is the default namespace.
	Name string `yaml:"name" json:"name"`
	// HistorySize and HistoryTTL bound the channel's history. With either
	// set, channels have positions (epoch, offset) and clients recover
	// missed publications; HistorySize 0 with a TTL keeps up to 1M.
	HistorySize int           `yaml:"history_size" json:"history_size"`
	HistoryTTL  time.Duration `yaml:"history_ttl" json:"history_ttl"`
	// Presence keeps the channel's member list.
	Presence bool `yaml:"presence" json:"presence"`
	// JoinLeave sends join and leave pushes to subscribers.
	JoinLeave bool `yaml:"join_leave" json:"join_leave"`
	// AllowSubscribe lets authenticated clients subscribe (and read history
	// and presence) without a subscription token.
	AllowSubscribe bool `yaml:"allow_subscribe" json:"allow_subscribe"`
	// AllowAnonymousSubscribe extends AllowSubscribe to anonymous clients.
	AllowAnonymousSubscribe bool `yaml:"allow_anonymous_subscribe" json:"allow_anonymous_subscribe"`
	// AllowPublish lets clients that may subscribe also publish.
	AllowPublish bool `yaml:"allow_publish" json:"allow_publish"`
	// UserLimited makes the part of a channel name after the namespace a
	// comma-separated list of the only users who may use the channel
	// ("user:42", "dm:42,43"). Independently of it, a "#" in any channel
	// name starts such a list ("chat#42,43").
	UserLimited bool `yaml:"user_limited" json:"user_limited"`
	// ProxySubscribe and ProxyPublish ask the application (Proxy URLs)
	// before each subscribe or client publish in this namespace.
	ProxySubscribe bool `yaml:"proxy_subscribe" json:"proxy_subscribe"`
	ProxyPublish   bool `yaml:"proxy_publish" json:"proxy_publish"`
	// SlowPolicy is "disconnect" (default: close with 3002, the client
	// reconnects and recovers), "drop" (drop the connection's queued
	// publications and mark the next one with gap) or "conflate" (a
	// subscriber that falls behind gets only the newest publication per
	// ConflateKey, marked with how many it replaced; see
	// docs/guarantees.md).
	SlowPolicy string `yaml:"slow_policy" json:"slow_policy"`
	// ConflateKey names the publication tag whose value is a
	// publication's key under the conflate policy. Empty (default): the
	// whole channel is one key.
	ConflateKey string `yaml:"conflate_key" json:"conflate_key"`
	// ConflateRate caps, under the conflate policy, the publications a
	// subscriber receives per key at this many per second (at most
	// 1,000); newer ones replace those waiting. Default 0: no cap.
	ConflateRate int `yaml:"conflate_rate" json:"conflate_rate"`
	// ConflateMaxKeys bounds the keys kept for one conflating subscriber;
	// one that needs more is disconnected as slow (3002). Default 10,000.
	ConflateMaxKeys int `yaml:"conflate_max_keys" json:"conflate_max_keys"`
	// SubscriptionEvents adds a subscribe and an unsubscribe lifecycle
	// event for every subscription to a channel of this namespace (with
	// Config.Events on). Default false.
	SubscriptionEvents bool `yaml:"subscription_events" json:"subscription_events"`
	// Personal subscribes every connection of an authenticated user U, at
	// connect, to the user's personal channel "NAME:#U" ("#U" in the
	// default namespace), so the application can publish to a user
	// without knowing their connections. It is granted like a token's
	// channels and recovers across reconnects. Default false.
	Personal bool `yaml:"personal" json:"personal"`
	// Compression sends the namespace's publications compressed to the
	// connections that negotiated permessage-deflate (Config.Compression
	// must be on): each publication is compressed once per encoding, not
	// once per subscriber. Replies and other pushes go uncompressed.
	// Default false.
	Compression bool `yaml:"compression" json:"compression"`
	// Delta lets subscribers ask for delta compression (subscribe option
	// "delta": "fossil"): each publication then reaches them as a Fossil
	// delta against the previous one they received, computed once per
	// channel and node, or full when they did not receive that one (see
	// docs/protocol.md, "Delta compression"). Subscribers that do not ask
	// get full publications. Default false.
	Delta bool `yaml:"delta" json:"delta"`
	// Ack makes subscribers acknowledge the namespace's publications
	// (cumulatively per channel; both SDKs do it after the application's
	// handler returns). The server sends again, on the live connection,
	// what is not acknowledged within AckTimeout; a client that resumes
	// after a reconnect, on any node, starts after the offset it
	// acknowledged; and an authenticated user's acknowledged offset per
	// channel is kept in the broker, so that a subscribe with "acked"
	// resumes from it on another device. Needs history (HistorySize or
	// HistoryTTL). WebSocket connections only: on the HTTP fallbacks
	// publications go unacknowledged. Default false.
	Ack bool `yaml:"ack" json:"ack"`
	// AckTimeout is how long a publication may stay unacknowledged before
	// it is sent again (with every later unacknowledged one, in order).
	// Default 5s.
	AckTimeout time.Duration `yaml:"ack_timeout" json:"ack_timeout"`
	// AckDeadline is how long after it was first sent a publication may
	// stay unacknowledged before it is reported undelivered (lifecycle
	// event "undelivered", metric herald_undelivered_total, a log line),
	// once per user, channel and offset on a node. Default 60s.
	AckDeadline time.Duration `yaml:"ack_deadline" json:"ack_deadline"`
	// AckMaxUnacked bounds the publications sent to one subscription and
	// not yet acknowledged. Past it SlowPolicy applies: disconnect closes
	// the connection with 3002; drop skips publications until
	// acknowledgements make room, and marks the next one sent with gap.
	// Default 1000.
	AckMaxUnacked int `yaml:"ack_max_unacked" json:"ack_max_unacked"`
	// AckCursorTTL is how long a user's acknowledged offset in a channel
	// is kept in the broker after its last change. Default 24h.
	AckCursorTTL time.Duration `yaml:"ack_cursor_ttl" json:"ack_cursor_ttl"`
}

// setAckDefaults fills the acknowledgement options' zero values.
func (ns *Namespace) setAckDefaults() {
	if ns.AckTimeout == 0 {
		ns.AckTimeout = 5 * time.Second
	}
	if ns.AckDeadline == 0 {
		ns.AckDeadline = time.Minute
	}
	if ns.AckMaxUnacked == 0 {
		ns.AckMaxUnacked = 1000
	}
	if ns.AckCursorTTL == 0 {
		ns.AckCursorTTL = 24 * time.Hour
	}
}

// validateAck checks the acknowledgement options.
func (ns Namespace) validateAck() error {
	if ns.AckTimeout < 0 || ns.AckDeadline < 0 || ns.AckMaxUnacked < 0 || ns.AckCursorTTL < 0 {
		return fmt.Errorf("%w: namespace %q: ack options must not be negative", ErrConfig, ns.Name)
	}
	if !ns.Ack {
		return nil
	}
	if ns.HistorySize <= 0 && ns.HistoryTTL <= 0 {
		return fmt.Errorf("%w: namespace %q: ack needs history (history_size or history_ttl): acknowledgements are of offsets", ErrConfig, ns.Name)
	}
	if ns.SlowPolicy == "conflate" {
		return fmt.Errorf("%w: namespace %q: ack does not combine with slow_policy conflate (conflation skips publications that acknowledgements redeliver)", ErrConfig, ns.Name)
	}
	ns.setAckDefaults()
	if ns.AckTimeout < time.Millisecond || ns.AckCursorTTL < time.Second {
		return fmt.Errorf("%w: namespace %q: ack_timeout must be at least 1ms and ack_cursor_ttl at least 1s", ErrConfig, ns.Name)
	}
	return nil
}

// ErrConfig wraps every configuration error.
var ErrConfig = errors.New("herald: invalid config")

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Listen == "" {
		c.Listen = ":8000"
	}
	defInt(&c.MaxMessageSize, 64<<10)
	defInt(&c.QueueMaxBytes, 1<<20)
	defInt(&c.QueueMaxMessages, 4096)
	defInt(&c.MaxSubscriptions, 128)
	defInt(&c.MaxChannelLength, 255)
	defInt(&c.MaxHeaderBytes, 16<<10)
	def(&c.PingInterval, 25*time.Second)
	def(&c.PongTimeout, 10*time.Second)
	def(&c.StaleTimeout, 10*time.Second)
	def(&c.IdempotencyWindow, 2*time.Minute)
	def(&c.PresenceTTL, 15*time.Second)
	def(&c.DrainTimeout, 10*time.Second)
	def(&c.QueryTimeout, 2*time.Second)
	c.Events.setDefaults()
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.TokenExpiryGrace, 10*time.Second)
	def(&c.TokenRefreshNotice, 30*time.Second)
	if c.CommandRate == 0 {
		c.CommandRate = 100
	}
	defInt(&c.CommandBurst, 200)
	def(&c.Proxy.Timeout, 5*time.Second)
	def(&c.Admin.SessionTTL, 12*time.Hour)
	if c.Token.HMACSecret == "" {
		c.Token.HMACSecret = c.TokenSecret
	}
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}

// Validate reports the first invalid setting, with defaults applied.
func (c Config) Validate() error {
	c.setDefaults()
	if c.MaxMessageSize < 0 || c.QueueMaxBytes < 0 || c.QueueMaxMessages < 0 || c.MaxSubscriptions < 0 {
		return fmt.Errorf("%w: limits must not be negative", ErrConfig)
	}
	if c.PingInterval < time.Second || c.PongTimeout < time.Second {
		return fmt.Errorf("%w: ping_interval and pong_timeout must be at least 1s", ErrConfig)
	}
	if c.CommandBurst < 0 || c.MaxConnectionsPerIP < 0 || c.MaxConnectionsPerUser < 0 {
		return fmt.Errorf("%w: limits must not be negative", ErrConfig)
	}
	if err := c.Events.validate(); err != nil {
		return fmt.Errorf("%w: events: %v", ErrConfig, err)
	}
	if c.QueryTimeout < 0 || c.DrainTimeout < 0 {
		return fmt.Errorf("%w: query_timeout and drain_timeout must not be negative", ErrConfig)
	}
	if err := c.Admin.validate(); err != nil {
		return fmt.Errorf("%w: admin: %v", ErrConfig, err)
	}
	for _, o := range c.AllowedOrigins {
		if _, err := compileOrigin(o); err != nil {
			return fmt.Errorf("%w: allowed_origins: %v", ErrConfig, err)
		}
	}
	if _, err := auth.NewVerifier(c.Token); err != nil {
		return fmt.Errorf("%w: token: %v", ErrConfig, err)
	}
	for _, u := range []string{c.Proxy.ConnectURL, c.Proxy.SubscribeURL, c.Proxy.PublishURL, c.Proxy.RPCURL, c.Proxy.RefreshURL, c.Proxy.DisconnectURL, c.Proxy.UnsubscribeURL} {
		if u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return fmt.Errorf("%w: proxy URL %q: want http:// or https://", ErrConfig, u)
		}
	}
	switch c.Engine {
	case "", "epoll", "goroutine":
	default:
		return fmt.Errorf("%w: engine %q: want epoll or goroutine", ErrConfig, c.Engine)
	}
	seen := map[string]bool{}
	for _, ns := range c.Namespaces {
		if seen[ns.Name] {
			return fmt.Errorf("%w: namespace %q listed twice", ErrConfig, ns.Name)
		}
		seen[ns.Name] = true
		if ns.Name != "" && !validChannelName(ns.Name, 64) {
			return fmt.Errorf("%w: namespace name %q: use letters, digits and _-.", ErrConfig, ns.Name)
		}
		if ns.HistorySize < 0 || ns.HistoryTTL < 0 {
			return fmt.Errorf("%w: namespace %q: history must not be negative", ErrConfig, ns.Name)
		}
		switch ns.SlowPolicy {
		case "", "disconnect", "drop", "conflate":
		default:
			return fmt.Errorf("%w: namespace %q: slow_policy %q: want disconnect, drop or conflate", ErrConfig, ns.Name, ns.SlowPolicy)
		}
		if ns.SlowPolicy != "conflate" && (ns.ConflateKey != "" || ns.ConflateRate != 0 || ns.ConflateMaxKeys != 0) {
			return fmt.Errorf("%w: namespace %q: conflate_key, conflate_rate and conflate_max_keys need slow_policy conflate", ErrConfig, ns.Name)
		}
		if ns.ConflateRate < 0 || ns.ConflateRate > 1000 || ns.ConflateMaxKeys < 0 {
			return fmt.Errorf("%w: namespace %q: conflate_rate must be 0 to 1000 and conflate_max_keys not negative", ErrConfig, ns.Name)
		}
		if err := ns.validateAck(); err != nil {
			return err
		}
		if ns.Compression && !c.Compression {
			return fmt.Errorf("%w: namespace %q: compression needs compression on at the top level", ErrConfig, ns.Name)
		}
	}
	return nil
}
