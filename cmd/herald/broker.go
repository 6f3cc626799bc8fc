package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	natsbroker "github.com/heraldhq/herald/broker/nats"
	redisbroker "github.com/heraldhq/herald/broker/redis"
)

// Broker types of the config file's broker.type.
const (
	brokerMemory = "memory"
	brokerNATS   = "nats"
	brokerRedis  = "redis"
)

// brokerConfig is the config file's broker section: which broker the node
// uses and its options. The zero value is the in-memory broker (one node).
//
// url is a shorthand for the type, the servers and the credentials (the
// forms are those of `herald serve --broker`, see parseBrokerURL); what it
// sets overrides the nats or redis section, whose other keys still apply.
type brokerConfig struct {
	// Type is memory (default), nats or redis. With url it may be left
	// out: the URL's scheme names the type.
	Type string `yaml:"type,omitempty"`
	URL  string `yaml:"url,omitempty"`
	// Prefix names everything the broker creates (subjects and streams, or
	// keys and pub/sub channels). All nodes of one cluster share it; several
	// clusters can share a NATS or Redis with different prefixes. Default
	// "herald".
	Prefix string           `yaml:"prefix,omitempty"`
	NATS   *natsFileConfig  `yaml:"nats,omitempty"`
	Redis  *redisFileConfig `yaml:"redis,omitempty"`
}

// natsFileConfig holds the options of broker/nats.Config; zero values
// take that package's defaults.
type natsFileConfig struct {
	Servers              []string      `yaml:"servers,omitempty"`
	Name                 string        `yaml:"name,omitempty"`
	User                 string        `yaml:"user,omitempty"`
	Password             string        `yaml:"password,omitempty"`
	Token                string        `yaml:"token,omitempty"`
	CredsFile            string        `yaml:"creds_file,omitempty"`
	TLSCAFile            string        `yaml:"tls_ca_file,omitempty"`
	TLSCertFile          string        `yaml:"tls_cert_file,omitempty"`
	TLSKeyFile           string        `yaml:"tls_key_file,omitempty"`
	MemoryStorage        bool          `yaml:"memory_storage,omitempty"`
	Replicas             int           `yaml:"replicas,omitempty"`
	HistoryMaxAge        time.Duration `yaml:"history_max_age,omitempty"`
	MaxIdempotencyWindow time.Duration `yaml:"max_idempotency_window,omitempty"`
	MaxPresenceTTL       time.Duration `yaml:"max_presence_ttl,omitempty"`
	MaxCursorTTL         time.Duration `yaml:"max_cursor_ttl,omitempty"`
	ConnectTimeout       time.Duration `yaml:"connect_timeout,omitempty"`
	RequestTimeout       time.Duration `yaml:"request_timeout,omitempty"`
	ReconnectWait        time.Duration `yaml:"reconnect_wait,omitempty"`
	LeaderTimeout        time.Duration `yaml:"leader_timeout,omitempty"`
	MaxReconnects        int           `yaml:"max_reconnects,omitempty"`
}

// redisFileConfig holds the options of broker/redis.Config; zero values
// take that package's defaults.
type redisFileConfig struct {
	Addrs    []string `yaml:"addrs,omitempty"`
	Cluster  bool     `yaml:"cluster,omitempty"`
	Username string   `yaml:"username,omitempty"`
	Password string   `yaml:"password,omitempty"`
	DB       int      `yaml:"db,omitempty"`
	// TLS turns TLS on (as the rediss:// scheme does); the files add a CA
	// to trust and a client certificate, and imply TLS.
	TLS                 bool          `yaml:"tls,omitempty"`
	TLSCAFile           string        `yaml:"tls_ca_file,omitempty"`
	TLSCertFile         string        `yaml:"tls_cert_file,omitempty"`
	TLSKeyFile          string        `yaml:"tls_key_file,omitempty"`
	TLSServerName       string        `yaml:"tls_server_name,omitempty"`
	ShardedPubSub       bool          `yaml:"sharded_pubsub,omitempty"`
	ClientName          string        `yaml:"client_name,omitempty"`
	DialTimeout         time.Duration `yaml:"dial_timeout,omitempty"`
	ReadTimeout         time.Duration `yaml:"read_timeout,omitempty"`
	WriteTimeout        time.Duration `yaml:"write_timeout,omitempty"`
	PoolSize            int           `yaml:"pool_size,omitempty"`
	HealthCheckInterval time.Duration `yaml:"health_check_interval,omitempty"`
	MetaTTL             time.Duration `yaml:"meta_ttl,omitempty"`
	MaxTTLOnlyHistory   int           `yaml:"max_ttl_only_history,omitempty"`
}

const redacted = "<redacted>"

// resolve applies override (the --broker flag, else $HERALD_BROKER, else
// the file's url) and settles the type. Call it once, before validate and
// build.
func (b *brokerConfig) resolve(override string) error {
	if override != "" {
		b.URL = override
	}
	if b.URL != "" {
		u, err := parseBrokerURL(b.URL)
		if err != nil {
			return err
		}
		b.merge(u)
	}
	if b.Type == "" {
		b.Type = brokerMemory
	}
	switch b.Type {
	case brokerMemory, brokerNATS, brokerRedis:
	default:
		return fmt.Errorf("broker: type %q: want memory, nats or redis", b.Type)
	}
	if b.NATS != nil && b.Type != brokerNATS {
		return fmt.Errorf("broker: a nats section is set but the broker type is %s", b.Type)
	}
	if b.Redis != nil && b.Type != brokerRedis {
		return fmt.Errorf("broker: a redis section is set but the broker type is %s", b.Type)
	}
	return nil
}

// merge sets what the parsed URL u names over b.
func (b *brokerConfig) merge(u *brokerConfig) {
	b.Type = u.Type
	if u.Prefix != "" {
		b.Prefix = u.Prefix
	}
	switch {
	case u.NATS != nil:
		if b.NATS == nil {
			b.NATS = &natsFileConfig{}
		}
		n, un := b.NATS, u.NATS
		n.Servers = un.Servers
		if un.User != "" || un.Token != "" {
			n.User, n.Password, n.Token = un.User, un.Password, un.Token
		}
		if un.Replicas != 0 {
			n.Replicas = un.Replicas
		}
		n.MemoryStorage = n.MemoryStorage || un.MemoryStorage
	case u.Redis != nil:
		if b.Redis == nil {
			b.Redis = &redisFileConfig{}
		}
		r, ur := b.Redis, u.Redis
		r.Addrs, r.Cluster, r.DB = ur.Addrs, ur.Cluster, ur.DB
		if ur.Username != "" || ur.Password != "" {
			r.Username, r.Password = ur.Username, ur.Password
		}
		r.TLS = r.TLS || ur.TLS
		r.ShardedPubSub = r.ShardedPubSub || ur.ShardedPubSub
	}
}

// parseBrokerURL parses the --broker forms:
//
//	memory
//	nats://[user:password@|token@]host[:4222][,nats://host:port...][?query]
//	tls://...                       as nats://, with TLS
//	redis://[user:password@]host[:6379][/db][?query]
//	rediss://...                    as redis://, with TLS
//	redis+cluster://[user:password@]host:port,host:port...[?query]
//	rediss+cluster://...            Redis Cluster with TLS
//
// Hosts are comma-separated; a host may repeat the scheme. Credentials are
// percent-encoded and given once. The query, at the end, may hold prefix
// for both brokers; replicas and memory_storage for NATS; sharded_pubsub
// for Redis (default true with +cluster).
func parseBrokerURL(s string) (*brokerConfig, error) {
	s = strings.TrimSpace(s)
	if s == brokerMemory || s == "memory://" {
		return &brokerConfig{Type: brokerMemory}, nil
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("broker URL %q: %s", redactURL(s), fmt.Sprintf(format, args...))
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return nil, bad("want memory, nats://, tls://, redis://, rediss:// or redis+cluster://")
	}
	var query url.Values
	if i := strings.LastIndexByte(rest, '?'); i >= 0 {
		var err error
		if query, err = url.ParseQuery(rest[i+1:]); err != nil {
			return nil, bad("query: %v", err)
		}
		rest = rest[:i]
	}
	var (
		hosts    []string
		userinfo *url.Userinfo
		path     string
	)
	for _, e := range strings.Split(rest, ",") {
		if sc, r, ok := strings.Cut(e, "://"); ok {
			if sc != scheme {
				return nil, bad("mixed schemes %s and %s", scheme, sc)
			}
			e = r
		}
		if i := strings.LastIndexByte(e, '@'); i >= 0 {
			if userinfo != nil {
				return nil, bad("give the credentials once")
			}
			u, err := url.Parse("x://" + e[:i+1] + "h")
			if err != nil {
				return nil, bad("credentials: use percent-encoding")
			}
			userinfo = u.User
			e = e[i+1:]
		}
		if i := strings.IndexByte(e, '/'); i >= 0 {
			if path != "" {
				return nil, bad("give the path once")
			}
			path, e = e[i:], e[:i]
		}
		if e == "" {
			return nil, bad("empty host")
		}
		hosts = append(hosts, e)
	}
	take := func(key string) string {
		v := query.Get(key)
		query.Del(key)
		return v
	}
	boolParam := func(key string) (bool, error) {
		v := take(key)
		if v == "" {
			return false, nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, bad("%s=%q: want true or false", key, v)
		}
		return b, nil
	}
	out := &brokerConfig{Prefix: take("prefix")}
	switch scheme {
	case "nats", "tls":
		out.Type = brokerNATS
		n := &natsFileConfig{}
		out.NATS = n
		if path != "" && path != "/" {
			return nil, bad("a NATS URL has no path")
		}
		for _, h := range hosts {
			n.Servers = append(n.Servers, scheme+"://"+withPort(h, "4222"))
		}
		if userinfo != nil {
			if pw, ok := userinfo.Password(); ok {
				n.User, n.Password = userinfo.Username(), pw
			} else {
				n.Token = userinfo.Username()
			}
		}
		if v := take("replicas"); v != "" {
			r, err := strconv.Atoi(v)
			if err != nil {
				return nil, bad("replicas=%q: want a number", v)
			}
			n.Replicas = r
		}
		var err error
		if n.MemoryStorage, err = boolParam("memory_storage"); err != nil {
			return nil, err
		}
	case "redis", "rediss", "redis+cluster", "rediss+cluster":
		out.Type = brokerRedis
		r := &redisFileConfig{
			Cluster: strings.HasSuffix(scheme, "+cluster"),
			TLS:     strings.HasPrefix(scheme, "rediss"),
		}
		out.Redis = r
		for _, h := range hosts {
			r.Addrs = append(r.Addrs, withPort(h, "6379"))
		}
		if !r.Cluster && len(r.Addrs) > 1 {
			return nil, bad("several hosts: use redis+cluster:// for Redis Cluster")
		}
		if userinfo != nil {
			// As go-redis and redis-cli: redis://:password@host for the
			// default user.
			r.Username = userinfo.Username()
			r.Password, _ = userinfo.Password()
		}
		if p := strings.Trim(path, "/"); p != "" {
			if r.Cluster {
				return nil, bad("Redis Cluster has no database number")
			}
			db, err := strconv.Atoi(p)
			if err != nil || db < 0 {
				return nil, bad("path %q: want a database number", path)
			}
			r.DB = db
		}
		r.ShardedPubSub = r.Cluster
		if query.Has("sharded_pubsub") {
			var err error
			if r.ShardedPubSub, err = boolParam("sharded_pubsub"); err != nil {
				return nil, err
			}
		}
	default:
		return nil, bad("unknown scheme %q", scheme)
	}
	for k := range query {
		return nil, bad("unknown parameter %q", k)
	}
	return out, nil
}

// withPort adds the default port to a host without one.
func withPort(host, port string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	if strings.Count(host, ":") > 1 && !strings.HasPrefix(host, "[") {
		return "[" + host + "]:" + port // a bare IPv6 address
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// redactURL hides the password (or token) of a broker URL.
func redactURL(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	// The credentials sit before the first host's '@'.
	end := len(rest)
	if i := strings.IndexAny(rest, ",/?"); i >= 0 {
		end = i
	}
	at := strings.LastIndexByte(rest[:end], '@')
	if at < 0 {
		return s
	}
	user, _, hasPw := strings.Cut(rest[:at], ":")
	if !hasPw {
		user = redacted // a token, or a password alone
	} else {
		user += ":" + redacted
	}
	return scheme + "://" + user + rest[at:]
}

// redacted returns b for printing, with passwords and tokens hidden.
func (b brokerConfig) redacted() brokerConfig {
	b.URL = redactURL(b.URL)
	if b.NATS != nil {
		n := *b.NATS
		hide(&n.Password)
		hide(&n.Token)
		b.NATS = &n
	}
	if b.Redis != nil {
		r := *b.Redis
		hide(&r.Password)
		b.Redis = &r
	}
	return b
}

func hide(s *string) {
	if *s != "" {
		*s = redacted
	}
}

// showDefaults sets the broker options left at zero to the values the
// broker will use, so that check-config prints the effective config.
// Call it after redactBackend.
func (b *brokerConfig) showDefaults() {
	switch b.Type {
	case brokerNATS:
		if b.NATS == nil {
			b.NATS = &natsFileConfig{}
		}
		c, n := b.natsConfig(nil).WithDefaults(), b.NATS
		b.Prefix = c.Prefix
		n.Servers, n.Name, n.Replicas = c.Servers, c.Name, c.Replicas
		n.HistoryMaxAge, n.MaxIdempotencyWindow, n.MaxPresenceTTL = c.HistoryMaxAge, c.MaxIdempotencyWindow, c.MaxPresenceTTL
		n.MaxCursorTTL = c.MaxCursorTTL
		n.ConnectTimeout, n.RequestTimeout, n.ReconnectWait = c.ConnectTimeout, c.RequestTimeout, c.ReconnectWait
	case brokerRedis:
		if b.Redis == nil {
			b.Redis = &redisFileConfig{}
		}
		rc, _ := b.redisConfig(nil) // the TLS files do not matter here
		c, r := rc.WithDefaults(), b.Redis
		b.Prefix = c.Prefix
		r.Addrs, r.ClientName = c.Addrs, c.ClientName
		r.DialTimeout, r.ReadTimeout, r.WriteTimeout = c.DialTimeout, c.ReadTimeout, c.WriteTimeout
		r.HealthCheckInterval, r.MetaTTL, r.MaxTTLOnlyHistory = c.HealthCheckInterval, c.MetaTTL, c.MaxTTLOnlyHistory
	}
}

// natsConfig returns the broker/nats configuration.
func (b *brokerConfig) natsConfig(log *slog.Logger) natsbroker.Config {
	n := b.NATS
	if n == nil {
		n = &natsFileConfig{}
	}
	return natsbroker.Config{
		Servers: n.Servers, Name: n.Name,
		User: n.User, Password: n.Password, Token: n.Token, CredsFile: n.CredsFile,
		TLSCAFile: n.TLSCAFile, TLSCertFile: n.TLSCertFile, TLSKeyFile: n.TLSKeyFile,
		Prefix: b.Prefix, MemoryStorage: n.MemoryStorage, Replicas: n.Replicas,
		HistoryMaxAge: n.HistoryMaxAge, MaxIdempotencyWindow: n.MaxIdempotencyWindow, MaxPresenceTTL: n.MaxPresenceTTL, MaxCursorTTL: n.MaxCursorTTL,
		ConnectTimeout: n.ConnectTimeout, RequestTimeout: n.RequestTimeout,
		ReconnectWait: n.ReconnectWait, MaxReconnects: n.MaxReconnects, LeaderTimeout: n.LeaderTimeout,
		Logger: log,
	}
}

// redisConfig returns the broker/redis configuration; it reads the TLS
// files.
func (b *brokerConfig) redisConfig(log *slog.Logger) (redisbroker.Config, error) {
	r := b.Redis
	if r == nil {
		r = &redisFileConfig{}
	}
	cfg := redisbroker.Config{
		Addrs: r.Addrs, Cluster: r.Cluster, Username: r.Username, Password: r.Password, DB: r.DB,
		Prefix: b.Prefix, ShardedPubSub: r.ShardedPubSub, ClientName: r.ClientName,
		DialTimeout: r.DialTimeout, ReadTimeout: r.ReadTimeout, WriteTimeout: r.WriteTimeout,
		PoolSize: r.PoolSize, HealthCheckInterval: r.HealthCheckInterval, MetaTTL: r.MetaTTL,
		MaxTTLOnlyHistory: r.MaxTTLOnlyHistory, Logger: log,
	}
	if r.TLS || r.TLSCAFile != "" || r.TLSCertFile != "" || r.TLSKeyFile != "" {
		t, err := tlsConfig(r.TLSCAFile, r.TLSCertFile, r.TLSKeyFile, r.TLSServerName)
		if err != nil {
			return cfg, fmt.Errorf("broker: redis: %w", err)
		}
		cfg.TLS = t
	}
	return cfg, nil
}

func tlsConfig(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("tls_cert_file and tls_key_file go together")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

// validate checks the section against the broker package's rules and the
// server settings the broker must accept (cfg has its defaults).
func (b *brokerConfig) validate(cfg herald.Config) error {
	switch b.Type {
	case brokerNATS:
		nc := b.natsConfig(nil)
		if err := nc.Validate(); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
		maxIdem, maxPres := nc.MaxIdempotencyWindow, nc.MaxPresenceTTL
		if maxIdem == 0 {
			maxIdem = 10 * time.Minute // broker/nats default
		}
		if maxPres == 0 {
			maxPres = 10 * time.Minute // broker/nats default
		}
		if cfg.IdempotencyWindow > maxIdem {
			return fmt.Errorf("broker: idempotency_window %v exceeds nats.max_idempotency_window %v", cfg.IdempotencyWindow, maxIdem)
		}
		if cfg.PresenceTTL > maxPres {
			return fmt.Errorf("broker: presence_ttl %v exceeds nats.max_presence_ttl %v", cfg.PresenceTTL, maxPres)
		}
		maxCursor := nc.MaxCursorTTL
		if maxCursor == 0 {
			maxCursor = 7 * 24 * time.Hour // broker/nats default
		}
		for _, ns := range cfg.Namespaces {
			ttl := ns.AckCursorTTL
			if ttl == 0 {
				ttl = 24 * time.Hour // the namespace default
			}
			if ns.Ack && ttl > maxCursor {
				return fmt.Errorf("broker: namespace %q: ack_cursor_ttl %v exceeds nats.max_cursor_ttl %v", ns.Name, ttl, maxCursor)
			}
		}
	case brokerRedis:
		rc, err := b.redisConfig(nil)
		if err != nil {
			return err
		}
		if err := rc.Validate(); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
	}
	return nil
}

// build returns the broker of the section, not started: herald.New starts
// it, and Shutdown closes it. nil means the in-memory default.
func (b *brokerConfig) build(log *slog.Logger) (broker.Broker, error) {
	log = log.With("component", "broker")
	switch b.Type {
	case brokerNATS:
		return natsbroker.New(b.natsConfig(log))
	case brokerRedis:
		rc, err := b.redisConfig(log)
		if err != nil {
			return nil, err
		}
		return redisbroker.New(rc)
	}
	return nil, nil
}

// describe is the one-line summary logged at start.
func (b *brokerConfig) describe() string {
	switch b.Type {
	case brokerNATS:
		s := []string{"nats://127.0.0.1:4222"}
		if b.NATS != nil && len(b.NATS.Servers) > 0 {
			s = b.NATS.Servers
		}
		return "nats " + strings.Join(s, ",")
	case brokerRedis:
		a := []string{"127.0.0.1:6379"}
		mode := "redis"
		if b.Redis != nil {
			if len(b.Redis.Addrs) > 0 {
				a = b.Redis.Addrs
			}
			if b.Redis.Cluster {
				mode = "redis cluster"
			}
		}
		return mode + " " + strings.Join(a, ",")
	}
	return brokerMemory
}
