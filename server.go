package herald

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/heraldhq/herald/auth"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
	"github.com/heraldhq/herald/web"
)

// Version is Herald's version, reported in connect replies and info.
const Version = "0.1.0"

// ErrServerClosed is returned by Serve and ListenAndServe after Shutdown.
var ErrServerClosed = http.ErrServerClosed

// Server is a Herald node. Create it with New; it is safe for concurrent
// use. Shutdown must be called to release it.
type Server struct {
	cfg        Config
	log        *slog.Logger
	namespaces map[string]*namespace
	personal   []string // namespaces with personal channels
	broker     broker.Broker
	presence   broker.PresenceStore
	engine     transport.Engine
	hub        *hub.Hub
	verifier   *auth.Verifier
	origins    []originPattern
	perIP      ipLimiter
	upgrader   transport.Upgrader
	topts      *transport.Options
	metrics    *metrics
	nodeID     string
	started    time.Time
	mux        *http.ServeMux
	admin      *adminUI
	pingFrames [transport.NumFramings][protocol.NumCodecs][]byte

	sessions    registry
	streams     streams       // HTTP fallback sessions by key (stream.go)
	nodes       nodeTable     // the cluster as this node knows it (nodes.go)
	published   atomic.Uint64 // publications accepted by this node
	fanout      fanoutHist
	tracer      trace.Tracer    // nil without tracing (tracing.go)
	events      *events         // nil without lifecycle events (events.go)
	acks        *ackTracker     // nil without ack namespaces (acks.go)
	notifying   chan struct{}   // disconnect and unsubscribe proxy calls in flight
	presenceTTL time.Duration   // 0: entries never expire (in-process store)
	subLocks    [256]sync.Mutex // serialise broker (un)subscribe per channel
	outage      presenceOutage  // the broker's connection, for presence (presence_sync.go)

	gate     sync.RWMutex // draining flips under the write lock
	draining bool
	handlers sync.WaitGroup // upgrades in flight
	ready    atomic.Bool

	httpMu    sync.Mutex
	httpSrv   []*http.Server
	listeners []net.Listener

	hsMu        sync.Mutex
	handshaking map[net.Conn]struct{}

	ctx    context.Context // canceled when Shutdown gives up waiting
	cancel context.CancelFunc
	quit   chan struct{}
	// wg counts the server's own goroutines (goTracked); trackMu and
	// untracked make goTracked refuse new ones once Shutdown waits on it.
	wg        sync.WaitGroup
	trackMu   sync.Mutex
	untracked bool
	shutOnce  sync.Once
	shutErr   error
}

// New validates cfg, starts the broker and the transport, and returns a
// server ready to Serve. The caller must call Shutdown.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		namespaces: make(map[string]*namespace),
		broker:     cfg.Broker,
		presence:   cfg.Presence,
		upgrader:   transport.Upgrader{Subprotocols: []string{protocol.SubprotocolJSON, protocol.SubprotocolMsgpack}, Compression: cfg.Compression},
		topts: (&transport.Options{
			MaxMessageSize:   cfg.MaxMessageSize,
			QueueMaxBytes:    cfg.QueueMaxBytes,
			QueueMaxMessages: cfg.QueueMaxMessages,
		}).Defaults(),
		nodeID:    newID(),
		started:   time.Now(),
		quit:      make(chan struct{}),
		notifying: make(chan struct{}, maxNotifying),
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var err error
	if s.verifier, err = auth.NewVerifier(cfg.Token); err != nil {
		return nil, fmt.Errorf("%w: token: %v", ErrConfig, err)
	}
	for _, o := range cfg.AllowedOrigins {
		p, _ := compileOrigin(o) // checked by Validate
		s.origins = append(s.origins, p)
	}
	s.perIP.max = cfg.MaxConnectionsPerIP
	for _, ns := range cfg.Namespaces {
		s.namespaces[ns.Name] = compileNamespace(ns)
		if ns.Personal {
			s.personal = append(s.personal, ns.Name)
		}
	}
	if s.broker == nil {
		s.broker = memory.New(memory.Config{})
	}
	if s.presence == nil {
		if p, ok := s.broker.(broker.PresenceStore); ok {
			s.presence = p
		} else {
			s.presence = memory.NewPresenceStore(nil)
		}
	}
	// An in-process store holds only this node's members: they need no
	// expiry and no refreshing.
	if _, ok := s.presence.(*memory.PresenceStore); ok {
		s.presenceTTL = 0
	} else {
		s.presenceTTL = cfg.PresenceTTL
	}
	s.sessions.init()
	s.nodes.init()
	s.tracer = newTracer(cfg.TracerProvider)
	s.hub = hub.New(hub.Options{
		OnSlow: func(sub *hub.Sub) {
			sub.Conn.Handler().(*session).disconnect(protocol.DisconnectSlow, 0, true)
		},
		OnGap: func(sub *hub.Sub) {
			sub.Conn.Handler().(*session).disconnect(protocol.DisconnectInsufficientState, 0, false)
		},
		SSEEvent: sseEvent,
	})
	for _, c := range []protocol.Codec{protocol.JSON, protocol.Msgpack} {
		payload, _ := c.AppendServerMessage(nil, &protocol.ServerMessage{Ping: &protocol.Empty{}})
		for f := range transport.Framing(transport.NumFramings) {
			s.pingFrames[f][protocol.CodecIndex(c)] = f.Frame(c.Binary(), payload)
		}
		// An EventSource cannot answer a ping: a comment keeps proxies
		// from timing the stream out and reaches no page.
		s.pingFrames[transport.FramingSSE][protocol.CodecIndex(c)] = transport.Chunk(nil, []byte(": ping\n\n"), "")
	}
	if s.engine, err = transport.NewEngineWith(cfg.Engine, transport.EngineOptions{Coalesce: cfg.WriteCoalesce}); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.metrics = newMetrics(s)
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	if err := s.broker.Start(ctx, nodeHandler{s}); err != nil {
		s.engine.Close()
		s.cancel()
		return nil, fmt.Errorf("herald: start broker: %w", err)
	}
	s.admin = newAdminUI(s)
	s.mux = s.routes()
	s.goTracked(s.sweep)
	if cfg.Events.Enabled {
		s.events = newEvents(s, cfg.Events)
		s.events.start()
		s.events.startWebhooks()
	}
	if s.acks = newAckTracker(s); s.acks != nil {
		s.goTracked(s.acks.run)
	}
	s.goTracked(s.sampleLoop)
	s.goTracked(s.refreshPresence)
	s.ready.Store(true)
	s.log.Info("herald node started", "node", s.nodeID, "engine", s.engine.Name(), "version", Version)
	return s, nil
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newClientID returns a random connection id: 96 bits in 16 characters.
func newClientID() string {
	var b [clientIDLen]byte
	return string(clientID(&b))
}

// clientIDLen is the length of a client id.
const clientIDLen = 16

// clientID fills b with a new random client id and returns it.
func clientID(b *[clientIDLen]byte) []byte {
	var r [12]byte
	_, _ = rand.Read(r[:])
	base64.RawURLEncoding.Encode(b[:], r[:])
	return b[:]
}

// NodeID returns this node's random identity.
func (s *Server) NodeID() string { return s.nodeID }

// Engine returns the name of the transport engine in use.
func (s *Server) Engine() string { return s.engine.Name() }

func (s *Server) engineBytesOut() uint64 { return s.engine.BytesOut() }

func (s *Server) engineWrites() uint64 { return s.engine.Writes() }

// Handler returns the server's HTTP handler: /ws, /api/, /healthz, /readyz,
// /metrics, /admin/ (and /ws/echo with Config.Echo).
func (s *Server) Handler() http.Handler { return s.mux }

// MetricsHandler returns the /metrics handler alone, for serving it on a
// separate listener.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", s.serveWS)
	if s.cfg.Echo {
		mux.HandleFunc("/ws/echo", s.serveEcho)
	}
	mux.HandleFunc("/stream", s.serveStream)
	mux.HandleFunc("/stream/send", s.serveStreamSend)
	mux.HandleFunc("/sse", s.serveSSE)
	mux.HandleFunc("/api/", s.serveAPI)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if !s.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "draining\n")
			return
		}
		if err := s.brokerReady(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "broker not ready\n")
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	if !s.cfg.NoMetricsEndpoint {
		mux.Handle("/metrics", s.MetricsHandler())
	}
	if !s.cfg.NoAdminEndpoint {
		mux.Handle("/admin", s.admin)
		mux.Handle("/admin/", s.admin)
	}
	if s.cfg.Demo {
		mux.Handle("/", web.Handler())
	}
	return mux
}

// readyCheckTimeout bounds the broker's readiness check of one /readyz.
const readyCheckTimeout = 5 * time.Second

// brokerReady asks the broker, and the presence store if it is another
// object, whether they serve calls now, when they can tell
// (broker.Readier).
func (s *Server) brokerReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyCheckTimeout)
	defer cancel()
	var seen []any
	for _, x := range []any{s.broker, s.presence} {
		r, ok := x.(broker.Readier)
		if !ok || slices.Contains(seen, x) {
			continue
		}
		seen = append(seen, x)
		if err := r.Ready(ctx); err != nil {
			s.log.Warn("not ready: the broker cannot serve calls now", "err", err)
			return err
		}
	}
	return nil
}

// ListenAndServe listens on Config.Listen and serves until Shutdown.
func (s *Server) ListenAndServe() error {
	ln, err := Listen(s.cfg.Listen)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Listen opens a TCP listener suited to Herald: TCP keep-alive is off on
// accepted connections (application pings detect dead peers, and the
// keep-alive setup costs three syscalls per connection).
func Listen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(context.Background(), "tcp", addr)
}

// Serve serves the handler on ln until Shutdown; it then returns
// ErrServerClosed.
//
// Serve reads each connection's request head itself: upgrades to /ws are
// answered without net/http (see handshake.go); everything else is served
// by an http.Server with the handler of Handler.
func (s *Server) Serve(ln net.Listener) error {
	hs := s.NewHTTPServer(s.mux)
	fl := newForwardListener(ln.Addr())
	s.httpMu.Lock()
	if s.isDraining() {
		s.httpMu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.httpSrv = append(s.httpSrv, hs)
	s.listeners = append(s.listeners, ln)
	s.httpMu.Unlock()
	httpDone := make(chan error, 1)
	go func() { httpDone <- hs.Serve(fl) }()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isDraining() {
				<-httpDone
				return ErrServerClosed
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff) // out of file descriptors and the like
				continue
			}
			_ = hs.Close()
			<-httpDone
			return err
		}
		backoff = 0
		if !s.enter() {
			c.Close()
			continue
		}
		s.trackHandshake(c, true)
		go func() {
			defer s.handlers.Done()
			defer s.trackHandshake(c, false)
			s.handshake(c, fl)
		}()
	}
}

// trackHandshake records connections whose request head is being read, so
// that Shutdown can cut slow ones instead of waiting out their timeout.
func (s *Server) trackHandshake(c net.Conn, add bool) {
	s.hsMu.Lock()
	defer s.hsMu.Unlock()
	if add {
		if s.handshaking == nil {
			s.handshaking = make(map[net.Conn]struct{})
		}
		s.handshaking[c] = struct{}{}
	} else {
		delete(s.handshaking, c)
	}
}

// ServeTLS is Serve over TLS with the given certificate and key files.
// TLS connections use the goroutine transport.
func (s *Server) ServeTLS(ln net.Listener, certFile, keyFile string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	return s.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
}

// NewHTTPServer returns an http.Server with the server's handshake limits
// for h. Shutdown closes the servers that Serve started, not this one.
func (s *Server) NewHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnContext:       markTLS,
	}
}

func (s *Server) isDraining() bool {
	s.gate.RLock()
	defer s.gate.RUnlock()
	return s.draining
}

// enter registers an upgrade in flight unless the server is draining.
func (s *Server) enter() bool {
	s.gate.RLock()
	defer s.gate.RUnlock()
	if s.draining {
		return false
	}
	s.handlers.Add(1)
	return true
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if !s.enter() {
		http.Error(w, "server is draining", http.StatusServiceUnavailable)
		return
	}
	defer s.handlers.Done()
	ip, no := s.admit(r.Header.Get("Origin"), r.Host, func() string { return remoteIP(r) })
	if no != nil {
		http.Error(w, no.reason, no.status)
		return
	}
	nc, in, sub, deflate, err := s.upgrader.UpgradeDeflate(w, r)
	if err != nil {
		s.perIP.release(ip)
		return
	}
	var headers map[string]string
	if names := s.forwardedHeaders(); names != nil {
		for k, v := range r.Header {
			if len(v) > 0 {
				forwardHeader(&headers, names, k, v[0])
			}
		}
	}
	s.startSession(nc, in, sub, deflate, ip, headers, time.Time{})
}

// startSession serves an upgraded connection; deflate: it negotiated
// permessage-deflate. ip holds a per-IP slot,
// released when the session ends. A non-zero adminUntil makes it a
// session of the admin UI (admin_ws.go), closed when the admin's login
// expires.
func (s *Server) startSession(nc net.Conn, in []byte, sub string, deflate bool, ip string, headers map[string]string, adminUntil time.Time) {
	codec, _ := protocol.CodecFor(sub)
	if sub != "" {
		sub = codec.Name() // the constant: no string per connection
	}
	w := newWSSession(s, codec)
	ss := &w.session
	ss.setPeer(ip, headers) // "" unless something needs it (see admit)
	if !adminUntil.IsZero() {
		ss.admin = true
		ss.expires.Store(adminUntil.Unix())
	}
	c := &w.conn
	c.Init(nc, s.topts, ss)
	if deflate {
		c.SetDeflate()
	}
	s.sessions.add(ss)
	if err := s.engine.Serve(c, in); err != nil {
		s.sessions.remove(ss)
		s.perIP.release(ip)
		nc.Close()
	}
}

func (s *Server) serveEcho(w http.ResponseWriter, r *http.Request) {
	if !s.enter() {
		http.Error(w, "server is draining", http.StatusServiceUnavailable)
		return
	}
	defer s.handlers.Done()
	nc, in, _, deflate, err := s.upgrader.UpgradeDeflate(w, r)
	if err != nil {
		return
	}
	c := transport.NewConn(nc, s.topts, echoHandler{s})
	if deflate {
		c.SetDeflate()
	}
	s.sessions.addEcho(c)
	if err := s.engine.Serve(c, in); err != nil {
		s.sessions.removeEcho(c)
		nc.Close()
	}
}

type echoHandler struct{ s *Server }

func (h echoHandler) OnMessage(c *transport.Conn, msg []byte, binary bool) {
	transport.EchoHandler{}.OnMessage(c, msg, binary)
}

func (h echoHandler) OnClose(c *transport.Conn, _ ws.StatusCode, _ error) { h.s.sessions.removeEcho(c) }
