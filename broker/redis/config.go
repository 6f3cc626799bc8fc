package redis

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Config tunes the Redis broker. The zero value connects to a standalone
// Redis at 127.0.0.1:6379 with classic pub/sub and the key prefix "herald".
type Config struct {
	// Addrs are the server addresses (host:port). Standalone mode takes
	// exactly one; cluster mode takes any number of seed nodes. Default
	// ["127.0.0.1:6379"].
	Addrs []string
	// Cluster connects with a Redis Cluster client. Default false.
	Cluster bool
	// Username and Password authenticate (AUTH / ACL). Default none.
	Username string
	Password string
	// DB selects the logical database in standalone mode. Must be 0 with
	// Cluster. Default 0.
	DB int
	// TLS, if set, is used for every connection. Default plain TCP.
	TLS *tls.Config
	// Prefix starts every key and pub/sub channel name the broker uses, so
	// that several Herald clusters (or test runs) can share one Redis. It
	// must not contain '{' or '}', which would break cluster hash tags.
	// Default "herald".
	Prefix string
	// ShardedPubSub delivers with SPUBLISH/SSUBSCRIBE (Redis 7.0+) instead
	// of PUBLISH/SUBSCRIBE. In a cluster this keeps each channel's traffic
	// on the shard that owns the channel's keys instead of broadcasting
	// every message to every node; set it for Redis Cluster. If the server
	// does not know SPUBLISH, Start falls back to classic pub/sub and logs
	// a warning. Default false.
	ShardedPubSub bool
	// ClientName is set on every connection (CLIENT SETNAME), which helps
	// to find the broker's connections in CLIENT LIST. Default "herald".
	ClientName string
	// DialTimeout, ReadTimeout and WriteTimeout bound each connection
	// attempt and each command's network I/O. Defaults 5s, 3s, 3s. The
	// context of each call bounds it as a whole.
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// PoolSize is the number of command connections per node. Default
	// go-redis's (10 per GOMAXPROCS).
	PoolSize int
	// HealthCheckInterval: a pub/sub connection silent for this long is
	// pinged, and replaced if the ping is not answered within another
	// interval. Default 5s.
	HealthCheckInterval time.Duration
	// MetaTTL is how long a channel's stream position (epoch and top
	// offset) is kept after its last publication, so that clients can
	// still recover or learn that they cannot. It is never shorter than
	// the channel's history TTL. After it the channel starts a new epoch.
	// Default 24h.
	MetaTTL time.Duration
	// MaxTTLOnlyHistory bounds the history of channels that set a
	// HistoryTTL but no HistorySize. Default 1<<20 publications, as the
	// memory broker.
	MaxTTLOnlyHistory int
	// Logger receives reconnects, resyncs and routing changes. Default
	// discards.
	Logger *slog.Logger
}

// Validate reports a configuration New would reject.
func (c Config) Validate() error {
	if !c.Cluster && len(c.Addrs) > 1 {
		return errors.New("herald: redis: standalone mode takes one address; set Cluster for several")
	}
	for _, a := range c.Addrs {
		if a == "" {
			return errors.New("herald: redis: empty address")
		}
	}
	if c.Cluster && c.DB != 0 {
		return errors.New("herald: redis: DB must be 0 in cluster mode")
	}
	if c.DB < 0 {
		return fmt.Errorf("herald: redis: negative DB %d", c.DB)
	}
	if strings.ContainsAny(c.Prefix, "{}") {
		return fmt.Errorf("herald: redis: prefix %q contains a hash tag brace", c.Prefix)
	}
	for name, d := range map[string]time.Duration{
		"DialTimeout": c.DialTimeout, "ReadTimeout": c.ReadTimeout, "WriteTimeout": c.WriteTimeout,
		"HealthCheckInterval": c.HealthCheckInterval, "MetaTTL": c.MetaTTL,
	} {
		if d < 0 {
			return fmt.Errorf("herald: redis: negative %s %v", name, d)
		}
	}
	if c.PoolSize < 0 || c.MaxTTLOnlyHistory < 0 {
		return errors.New("herald: redis: negative PoolSize or MaxTTLOnlyHistory")
	}
	return nil
}

// WithDefaults returns c with every field left at zero set to the default
// New uses.
func (c Config) WithDefaults() Config {
	if len(c.Addrs) == 0 {
		c.Addrs = []string{"127.0.0.1:6379"}
	}
	if c.Prefix == "" {
		c.Prefix = "herald"
	}
	if c.ClientName == "" {
		c.ClientName = "herald"
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 3 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 3 * time.Second
	}
	if c.HealthCheckInterval == 0 {
		c.HealthCheckInterval = 5 * time.Second
	}
	if c.MetaTTL == 0 {
		c.MetaTTL = 24 * time.Hour
	}
	if c.MaxTTLOnlyHistory == 0 {
		c.MaxTTLOnlyHistory = 1 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// maintOff disables go-redis's maintenance notifications (a Redis
// Enterprise feature): plain Redis rejects them and they are not needed.
func maintOff() *maintnotifications.Config {
	return &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
}

// nodeOptions are the options of a client for one server: the standalone
// client, and in cluster mode the broker's own pub/sub clients per node.
func (c Config) nodeOptions(addr string) *goredis.Options {
	return &goredis.Options{
		Addr:                     addr,
		ClientName:               c.ClientName,
		Username:                 c.Username,
		Password:                 c.Password,
		DB:                       c.DB,
		TLSConfig:                c.TLS,
		DialTimeout:              c.DialTimeout,
		ReadTimeout:              c.ReadTimeout,
		WriteTimeout:             c.WriteTimeout,
		PoolSize:                 c.PoolSize,
		ContextTimeoutEnabled:    true,
		MaintNotificationsConfig: maintOff(),
	}
}

func (c Config) clusterOptions() *goredis.ClusterOptions {
	return &goredis.ClusterOptions{
		Addrs:                    c.Addrs,
		ClientName:               c.ClientName,
		Username:                 c.Username,
		Password:                 c.Password,
		TLSConfig:                c.TLS,
		DialTimeout:              c.DialTimeout,
		ReadTimeout:              c.ReadTimeout,
		WriteTimeout:             c.WriteTimeout,
		PoolSize:                 c.PoolSize,
		ContextTimeoutEnabled:    true,
		MaintNotificationsConfig: maintOff(),
	}
}
