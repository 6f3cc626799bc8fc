package nats

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// Config configures the NATS broker. The zero value connects to a local
// NATS server with JetStream enabled. All nodes of one Herald cluster must
// use the same Prefix and should use the same Config.
type Config struct {
	// Servers are the NATS server URLs. Default ["nats://127.0.0.1:4222"].
	Servers []string
	// Name is the connection name shown by the server. Default "herald".
	Name string

	// Credentials: at most one of User/Password, Token and CredsFile.
	User     string
	Password string
	Token    string
	// CredsFile is a decentralized-auth credentials file (JWT and NKey).
	CredsFile string

	// TLS, if set, is used as is (cloned). Otherwise TLSCAFile trusts a CA
	// and TLSCertFile/TLSKeyFile present a client certificate; any of them
	// turns TLS on. Default: TLS only if the URL scheme is tls://.
	TLS         *tls.Config
	TLSCAFile   string
	TLSCertFile string
	TLSKeyFile  string

	// Prefix names every subject, stream and consumer this broker uses, so
	// that several Herald clusters (or test runs) can share one NATS server.
	// 1 to 64 characters of A-Z a-z 0-9 _ -. Default "herald".
	Prefix string

	// MemoryStorage keeps history and idempotency records in memory rather
	// than in files: a NATS restart then loses history (clients are told,
	// by a new epoch). Presence is always kept in memory. Default false.
	MemoryStorage bool
	// Replicas is the JetStream replication factor of the streams, 1 to 5.
	// Default 1.
	Replicas int

	// HistoryMaxAge is how long a publication is kept at most, whatever
	// its HistoryTTL, and how long a channel's stream position outlives its
	// last publication. After it the channel starts a new epoch. Default
	// 24h.
	HistoryMaxAge time.Duration
	// MaxIdempotencyWindow is the longest IdempotencyWindow accepted;
	// Publish with a longer one fails. It bounds how long idempotency
	// records are stored. Default 10m.
	MaxIdempotencyWindow time.Duration
	// MaxPresenceTTL is the longest presence TTL accepted; AddPresence with
	// a longer one fails. It bounds how long entries of dead nodes are
	// stored (they are hidden after their own TTL). Default 10m.
	MaxPresenceTTL time.Duration
	// MaxCursorTTL is the longest cursor TTL accepted (acknowledged
	// positions, Namespace.AckCursorTTL); SetCursor with a longer one
	// fails. It is the cursor stream's MaxAge. Default 7 days.
	MaxCursorTTL time.Duration

	// ConnectTimeout bounds the dial of one server. Default 5s.
	ConnectTimeout time.Duration
	// RequestTimeout bounds calls whose context has no deadline. Default
	// 10s.
	RequestTimeout time.Duration
	// LeaderTimeout bounds the wait for a stream's leader to answer one
	// read, on a NATS cluster. While a stream elects a new leader (its
	// leader's server died) nobody answers; a call whose read got no
	// answer within LeaderTimeout fails with broker.ErrUnavailable, which
	// clients may retry, rather than wait out its deadline. Publishes find
	// no leader at once. On a single server (no elections) reads wait as
	// long as their caller. Default 2s.
	LeaderTimeout time.Duration
	// ReconnectWait is the pause between reconnect attempts. Default 2s.
	ReconnectWait time.Duration
	// MaxReconnects is the number of reconnect attempts before the
	// connection gives up for good; 0 (the default) or negative retries
	// forever.
	MaxReconnects int

	// Logger receives connection events and background errors. Default:
	// discard.
	Logger *slog.Logger
}

const (
	defaultServer   = "nats://127.0.0.1:4222"
	maxPrefixLength = 64
)

// WithDefaults returns c with every field left at zero set to the default
// New uses.
func (c Config) WithDefaults() Config {
	if len(c.Servers) == 0 {
		c.Servers = []string{defaultServer}
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.Name, "herald")
	def(&c.Prefix, "herald")
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	dur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	dur(&c.HistoryMaxAge, 24*time.Hour)
	dur(&c.MaxIdempotencyWindow, 10*time.Minute)
	dur(&c.MaxPresenceTTL, 10*time.Minute)
	dur(&c.MaxCursorTTL, 7*24*time.Hour)
	dur(&c.ConnectTimeout, 5*time.Second)
	dur(&c.RequestTimeout, 10*time.Second)
	dur(&c.ReconnectWait, 2*time.Second)
	dur(&c.LeaderTimeout, 2*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

func validPrefix(p string) bool {
	if p == "" || len(p) > maxPrefixLength {
		return false
	}
	for i := 0; i < len(p); i++ {
		b := p[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '_' || b == '-') {
			return false
		}
	}
	return true
}

// Validate reports every problem of the configuration. Zero fields are
// valid: they take their defaults.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("nats broker config: "+format, args...))
	}
	for i, s := range c.Servers {
		if strings.TrimSpace(s) == "" {
			bad("Servers[%d] is empty", i)
		}
	}
	if c.Prefix != "" && !validPrefix(c.Prefix) {
		bad("Prefix %q: want 1 to %d characters of A-Z a-z 0-9 _ -", c.Prefix, maxPrefixLength)
	}
	if c.Password != "" && c.User == "" {
		bad("Password without User")
	}
	n := 0
	for _, set := range []bool{c.User != "", c.Token != "", c.CredsFile != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		bad("set at most one of User, Token and CredsFile")
	}
	if c.TLS != nil && (c.TLSCAFile != "" || c.TLSCertFile != "" || c.TLSKeyFile != "") {
		bad("set either TLS or the TLS file paths, not both")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("TLSCertFile and TLSKeyFile go together")
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		bad("Replicas %d: want 1 to 5", c.Replicas)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"HistoryMaxAge", c.HistoryMaxAge},
		{"MaxIdempotencyWindow", c.MaxIdempotencyWindow},
		{"MaxPresenceTTL", c.MaxPresenceTTL},
		{"MaxCursorTTL", c.MaxCursorTTL},
		{"ConnectTimeout", c.ConnectTimeout},
		{"RequestTimeout", c.RequestTimeout},
		{"ReconnectWait", c.ReconnectWait},
		{"LeaderTimeout", c.LeaderTimeout},
	} {
		if d.v < 0 {
			bad("%s is negative", d.name)
		}
	}
	return errors.Join(errs...)
}

// options returns the nats.go options for c, which has its defaults.
func (c Config) options() []natsgo.Option {
	maxRec := c.MaxReconnects
	if maxRec <= 0 {
		maxRec = -1 // nats.go: forever
	}
	opts := []natsgo.Option{
		natsgo.Name(c.Name),
		natsgo.Timeout(c.ConnectTimeout),
		natsgo.ReconnectWait(c.ReconnectWait),
		natsgo.MaxReconnects(maxRec),
	}
	switch {
	case c.User != "":
		opts = append(opts, natsgo.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, natsgo.Token(c.Token))
	case c.CredsFile != "":
		opts = append(opts, natsgo.UserCredentials(c.CredsFile))
	}
	if c.TLS != nil {
		opts = append(opts, natsgo.Secure(c.TLS.Clone()))
	}
	if c.TLSCAFile != "" {
		opts = append(opts, natsgo.RootCAs(c.TLSCAFile))
	}
	if c.TLSCertFile != "" {
		opts = append(opts, natsgo.ClientCert(c.TLSCertFile, c.TLSKeyFile))
	}
	return opts
}
