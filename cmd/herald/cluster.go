package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/heraldhq/herald"
)

// clusterConfig is the config file's cluster section: embedded cluster
// mode, in which every Herald node runs a NATS server with JetStream and
// the nodes' servers form one NATS cluster, so that no broker has to be
// deployed. Setting Listen turns it on; the broker is then the NATS
// broker pointed at the node's own embedded server.
type clusterConfig struct {
	// Listen is the address (host:port) this node's NATS server accepts
	// the other nodes' routes on.
	Listen string `yaml:"listen,omitempty"`
	// Peers are the other nodes' Listen addresses (host:port, or
	// nats-route://host:port). This node's own address may be listed: it
	// is skipped, so every node can be given the same list.
	Peers []string `yaml:"peers,omitempty"`
	// Name is the NATS cluster name, the same on every node. Default
	// "herald".
	Name string `yaml:"name,omitempty"`
	// NodeName names this node's NATS server; it must be unique in the
	// cluster and stay the same across restarts (JetStream knows its peers
	// by name). Default: the host name and the Listen port ("web-1-6222").
	NodeName string `yaml:"node_name,omitempty"`
	// DataDir holds the JetStream storage (history, idempotency records and
	// the cluster's metadata). Default: herald-<node name> under the OS
	// temporary directory, which survives a process restart but perhaps
	// not a reboot: set it to persistent storage in production.
	DataDir string `yaml:"data_dir,omitempty"`
	// Secret, if set, authenticates routes between the nodes (the same on
	// every node). Without it anyone who reaches Listen can join the
	// cluster: keep it on a private network.
	Secret string `yaml:"secret,omitempty"`
	// TLSCertFile, TLSKeyFile and TLSCAFile, set together, put the routes
	// between the nodes on TLS with certificates checked both ways: a node
	// presents its certificate and accepts only peers whose certificate
	// the CA signed. A node's certificate must name the host its peers
	// dial (the host of its listen address, as a DNS name or an IP).
	TLSCertFile string `yaml:"tls_cert_file,omitempty"`
	TLSKeyFile  string `yaml:"tls_key_file,omitempty"`
	TLSCAFile   string `yaml:"tls_ca_file,omitempty"`
	// StartupTimeout bounds the wait at start for the JetStream cluster (a
	// metadata leader, which needs a majority of the nodes, and the streams
	// Herald needs). Default 60s.
	StartupTimeout time.Duration `yaml:"startup_timeout,omitempty"`
}

func (c *clusterConfig) enabled() bool { return c.Listen != "" }

func (c *clusterConfig) tlsSet() bool {
	return c.TLSCertFile != "" || c.TLSKeyFile != "" || c.TLSCAFile != ""
}

// routeTLS returns the TLS configuration of the routes: this node's
// certificate for both ends of a route, and the CA for the peer's, which
// is required.
func (c *clusterConfig) routeTLS() (*tls.Config, error) {
	t, err := tlsConfig(c.TLSCAFile, c.TLSCertFile, c.TLSKeyFile, "")
	if err != nil {
		return nil, fmt.Errorf("cluster: tls: %w", err)
	}
	t.ClientCAs = t.RootCAs
	t.ClientAuth = tls.RequireAndVerifyClientCert
	return t, nil
}

// backendFlags are the serve flags that choose the broker.
type backendFlags struct {
	broker, listen, peers, name, dataDir *string
}

func addBackendFlags(fs interface {
	String(name, value, usage string) *string
}) backendFlags {
	return backendFlags{
		broker: fs.String("broker", "", "broker: memory, nats://host:4222[,nats://host:port...], redis://host:6379[/db], "+
			"redis+cluster://host:port,host:port (credentials as user:password@; ?prefix=P) (env HERALD_BROKER)"),
		listen:  fs.String("cluster-listen", "", "embedded cluster mode: this node's cluster (NATS route) address, host:port"),
		peers:   fs.String("cluster-peers", "", "embedded cluster mode: the other nodes' cluster addresses, comma-separated"),
		name:    fs.String("cluster-name", "", "embedded cluster mode: cluster name (default herald)"),
		dataDir: fs.String("data-dir", "", "embedded cluster mode: JetStream storage directory (default: per node under the OS temp dir)"),
	}
}

// resolveBackend settles the broker and cluster sections from the file,
// the environment (HERALD_BROKER, HERALD_CLUSTER_LISTEN, _PEERS, _NAME,
// _SECRET, HERALD_DATA_DIR) and the flags (f may be zero), in increasing
// precedence, and validates them against the server config.
func (fc *fileConfig) resolveBackend(f backendFlags, getenv func(string) string) error {
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	pick := func(dst *string, env, flag string) {
		if v := getenv(env); v != "" {
			*dst = v
		}
		if flag != "" {
			*dst = flag
		}
	}
	c := &fc.Cluster
	pick(&c.Listen, "HERALD_CLUSTER_LISTEN", str(f.listen))
	pick(&c.Name, "HERALD_CLUSTER_NAME", str(f.name))
	pick(&c.DataDir, "HERALD_DATA_DIR", str(f.dataDir))
	pick(&c.Secret, "HERALD_CLUSTER_SECRET", "")
	pick(&c.TLSCertFile, "HERALD_CLUSTER_TLS_CERT_FILE", "")
	pick(&c.TLSKeyFile, "HERALD_CLUSTER_TLS_KEY_FILE", "")
	pick(&c.TLSCAFile, "HERALD_CLUSTER_TLS_CA_FILE", "")
	var peers string
	pick(&peers, "HERALD_CLUSTER_PEERS", str(f.peers))
	if peers != "" {
		c.Peers = strings.Split(peers, ",")
	}
	var override string
	pick(&override, "HERALD_BROKER", str(f.broker))
	b := &fc.BrokerSection
	if c.enabled() && b.Type == "" {
		b.Type = brokerNATS // the embedded servers'
	}
	if err := b.resolve(override); err != nil {
		return err
	}
	if c.enabled() {
		if err := c.validate(); err != nil {
			return err
		}
		if b.Type == brokerRedis {
			return errors.New("cluster: embedded cluster mode runs NATS; the broker type cannot be redis")
		}
		if b.NATS != nil && len(b.NATS.Servers) > 0 {
			return errors.New("cluster: embedded cluster mode provides the NATS servers; leave broker.nats.servers and the broker URL out")
		}
		if b.NATS != nil && b.NATS.Replicas > c.size() {
			return fmt.Errorf("cluster: broker.nats.replicas %d exceeds the %d nodes", b.NATS.Replicas, c.size())
		}
		b.Type = brokerNATS
		b.URL = ""
	} else if len(c.Peers) > 0 || c.DataDir != "" || c.Name != "" || c.NodeName != "" || c.Secret != "" || c.tlsSet() {
		return errors.New("cluster: the cluster options need cluster.listen (--cluster-listen)")
	}
	return b.validate(fc.WithDefaults())
}

// redactBackend hides the secrets of the broker and cluster sections, for
// printing.
func (fc *fileConfig) redactBackend() {
	fc.BrokerSection = fc.BrokerSection.redacted()
	hide(&fc.Cluster.Secret)
}

func (c *clusterConfig) validate() error {
	if _, _, err := splitHostPort(c.Listen); err != nil {
		return fmt.Errorf("cluster: listen %q: %v", c.Listen, err)
	}
	if len(c.peerURLs()) == 0 {
		return errors.New("cluster: list the other nodes in cluster.peers (--cluster-peers): an embedded cluster needs at least two nodes, three to survive the loss of one")
	}
	for _, p := range c.Peers {
		if _, _, err := splitHostPort(strings.TrimPrefix(strings.TrimSpace(p), "nats-route://")); err != nil {
			return fmt.Errorf("cluster: peer %q: %v", p, err)
		}
	}
	if c.StartupTimeout < 0 {
		return errors.New("cluster: startup_timeout is negative")
	}
	if c.tlsSet() {
		if c.TLSCertFile == "" || c.TLSKeyFile == "" || c.TLSCAFile == "" {
			return errors.New("cluster: tls_cert_file, tls_key_file and tls_ca_file go together")
		}
		if _, err := c.routeTLS(); err != nil {
			return err
		}
	}
	if strings.ContainsAny(c.Name+c.NodeName, " \t.*>") {
		return errors.New("cluster: name and node_name must not contain spaces, '.', '*' or '>'")
	}
	return nil
}

func splitHostPort(a string) (string, int, error) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65535 {
		return "", 0, fmt.Errorf("port %q: want 1 to 65535", port)
	}
	return host, p, nil
}

// peerURLs returns the route URLs of the peers, without this node and
// without repeats.
func (c *clusterConfig) peerURLs() []*url.URL {
	seen := map[string]bool{strings.TrimSpace(c.Listen): true}
	var out []*url.URL
	for _, p := range c.Peers {
		a := strings.TrimPrefix(strings.TrimSpace(p), "nats-route://")
		if a == "" || seen[a] {
			continue
		}
		seen[a] = true
		u := &url.URL{Scheme: "nats-route", Host: a}
		if c.Secret != "" {
			u.User = url.UserPassword("herald", c.Secret)
		}
		out = append(out, u)
	}
	return out
}

// size is the number of nodes: this one and its distinct peers.
func (c *clusterConfig) size() int { return 1 + len(c.peerURLs()) }

func (c *clusterConfig) withDefaults() clusterConfig {
	out := *c
	if out.Name == "" {
		out.Name = "herald"
	}
	if out.NodeName == "" {
		_, port, _ := splitHostPort(c.Listen)
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "herald"
		}
		out.NodeName = strings.NewReplacer(".", "_", " ", "_").Replace(host) + "-" + strconv.Itoa(port)
	}
	if out.DataDir == "" {
		out.DataDir = filepath.Join(os.TempDir(), "herald-"+out.NodeName)
	}
	if out.StartupTimeout == 0 {
		out.StartupTimeout = 60 * time.Second
	}
	return out
}

// embeddedNATS is this node's NATS server in embedded cluster mode.
type embeddedNATS struct {
	srv   *natsserver.Server
	url   string // loopback client URL
	token string // required of clients
	log   *slog.Logger
}

// startEmbedded starts the node's NATS server: routes on c.Listen to the
// peers, JetStream in c.DataDir, and a client listener on a random
// loopback port that only this process knows the token of. It returns
// once the JetStream cluster has a metadata leader, or fails when
// deadline passes first.
func startEmbedded(c clusterConfig, deadline time.Time, log *slog.Logger) (*embeddedNATS, error) {
	host, port, _ := splitHostPort(c.Listen)
	if err := os.MkdirAll(c.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("cluster: data dir: %w", err)
	}
	e := &embeddedNATS{token: randomHex(16), log: log}
	opts := &natsserver.Options{
		ServerName:             c.NodeName,
		Host:                   "127.0.0.1",
		Port:                   natsserver.RANDOM_PORT,
		Authorization:          e.token,
		JetStream:              true,
		StoreDir:               c.DataDir,
		NoSigs:                 true,
		DisableJetStreamBanner: true,
		Cluster: natsserver.ClusterOpts{
			Name: c.Name,
			Host: host,
			Port: port,
		},
		Routes: c.peerURLs(),
		// A dead peer's route is retried every second; log every 30th
		// failure, not each.
		ReconnectErrorReports: 30,
	}
	if c.Secret != "" {
		opts.Cluster.Username, opts.Cluster.Password = "herald", c.Secret
	}
	if c.tlsSet() {
		t, err := c.routeTLS()
		if err != nil {
			return nil, err
		}
		opts.Cluster.TLSConfig = t
		opts.Cluster.TLSTimeout = 5 // seconds, for the handshake
		// A route dialled to a peer checks the peer's certificate against
		// the host of the peer's address.
	}
	srv, err := natsserver.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("cluster: embedded NATS: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log}, false, false, false)
	e.srv = srv
	srv.Start()
	if !srv.ReadyForConnections(time.Until(deadline)) {
		e.stop()
		return nil, fmt.Errorf("cluster: embedded NATS server not ready (is %s free?)", c.Listen)
	}
	e.url = srv.ClientURL()
	log.Info("embedded NATS started; waiting for the JetStream cluster", "node", c.NodeName, "cluster", c.Name,
		"routes", c.Listen, "peers", len(opts.Routes), "route_tls", c.tlsSet(), "data_dir", c.DataDir)
	for {
		if leader := e.metaLeader(); leader != "" && srv.JetStreamIsCurrent() {
			log.Info("JetStream cluster ready", "meta_leader", leader)
			return e, nil
		}
		if time.Now().After(deadline) {
			e.stop()
			return nil, fmt.Errorf("cluster: no JetStream cluster leader within the startup timeout: a majority of the %d nodes must be running and reach each other's cluster addresses (%s)",
				c.size(), strings.Join(append([]string{c.Listen}, c.Peers...), ", "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metaLeader returns the name of the JetStream metadata leader, or "".
func (e *embeddedNATS) metaLeader() string {
	info, err := e.srv.Jsz(&natsserver.JSzOptions{})
	if err != nil || info.Meta == nil {
		return ""
	}
	return info.Meta.Leader
}

// stop shuts the server down and waits for it.
func (e *embeddedNATS) stop() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.log.Info("embedded NATS stopped")
}

// natsLogger sends the embedded server's log to slog.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(f string, a ...any) { n.l.Info(fmt.Sprintf(f, a...)) }
func (n natsLogger) Warnf(f string, a ...any)   { n.l.Warn(fmt.Sprintf(f, a...)) }
func (n natsLogger) Fatalf(f string, a ...any)  { n.l.Error(fmt.Sprintf(f, a...)) }
func (n natsLogger) Errorf(f string, a ...any)  { n.l.Error(fmt.Sprintf(f, a...)) }
func (n natsLogger) Debugf(f string, a ...any)  { n.l.Debug(fmt.Sprintf(f, a...)) }
func (n natsLogger) Tracef(f string, a ...any)  {}

// startServer builds the node's broker and server. In embedded cluster
// mode it first starts the embedded NATS server and waits for the
// JetStream cluster, and retries the server's start (which creates the
// streams, possibly before enough nodes have joined for their replicas)
// until the startup timeout. stop, to call after the server's Shutdown,
// stops the embedded server.
func startServer(fc *fileConfig, log *slog.Logger) (srv *herald.Server, stop func(), err error) {
	b := &fc.BrokerSection
	if !fc.Cluster.enabled() {
		br, err := b.build(log)
		if err != nil {
			return nil, nil, err
		}
		fc.Config.Broker = br
		log.Info("broker", "broker", b.describe())
		srv, err := herald.New(fc.Config)
		return srv, func() {}, err
	}
	c := fc.Cluster.withDefaults()
	deadline := time.Now().Add(c.StartupTimeout)
	nlog := log.With("component", "nats")
	e, err := startEmbedded(c, deadline, nlog)
	if err != nil {
		return nil, nil, err
	}
	if b.NATS == nil {
		b.NATS = &natsFileConfig{}
	}
	b.NATS.Servers = []string{e.url}
	b.NATS.Token = e.token
	if b.NATS.Replicas == 0 {
		b.NATS.Replicas = min(3, c.size())
	}
	log.Info("broker", "broker", "embedded nats", "replicas", b.NATS.Replicas)
	for attempt := 1; ; attempt++ {
		br, err := b.build(log)
		if err != nil {
			e.stop()
			return nil, nil, err
		}
		fc.Config.Broker = br
		srv, err := herald.New(fc.Config)
		if err == nil {
			return srv, e.stop, nil
		}
		if time.Now().After(deadline) {
			e.stop()
			return nil, nil, fmt.Errorf("cluster: %w (gave up after %v)", err, c.StartupTimeout)
		}
		log.Info("waiting for the JetStream cluster", "attempt", attempt, "err", err)
		time.Sleep(time.Second)
	}
}
