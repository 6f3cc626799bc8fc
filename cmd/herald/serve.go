package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/heraldhq/herald"
)

type exitCoder interface{ ExitCode() int }

type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) ExitCode() int { return e.code }

func asExitCoder(err error, target *exitCoder) bool {
	var ee *exitError
	if errors.As(err, &ee) {
		*target = ee
		return true
	}
	return false
}

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	configPath := fs.String("config", "", "config file (YAML or JSON)")
	listen := fs.String("listen", "", "listen address (default :8000)")
	dev := fs.Bool("dev", false, "development mode: anonymous clients, every channel open, history and presence on")
	echo := fs.Bool("echo", false, "also serve /ws/echo, a plain echo endpoint for WebSocket conformance suites")
	engine := fs.String("engine", "", "transport engine: epoll or goroutine (default: epoll on Linux)")
	secret := fs.String("token-secret", "", "HS256 secret for connection tokens")
	debugListen := fs.String("debug-listen", "", "serve /debug/pprof and /metrics on this address (keep it private)")
	backend := addBackendFlags(fs)
	_ = fs.Parse(args)

	fc, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	if *listen != "" {
		fc.Listen = *listen
	}
	if *echo {
		fc.Echo = true
	}
	if *engine != "" {
		fc.Engine = *engine
	}
	if *secret != "" {
		fc.TokenSecret = *secret
	}
	if *debugListen != "" {
		fc.DebugListen = *debugListen
	}
	var genKey, genSecret, genAdmin string
	if *dev || fc.Dev {
		genKey, genSecret, genAdmin = applyDev(fc)
	}
	logger := newLogger(fc.LogLevel)
	fc.Logger = logger
	fc.NoMetricsEndpoint = fc.MetricsListen != ""
	fc.NoAdminEndpoint = fc.AdminSection.Listen != ""
	if err := fc.checkAdmin(); err != nil {
		return err
	}
	if err := fc.resolveBackend(backend, os.Getenv); err != nil {
		return err
	}
	tp, flushTraces, err := tracerFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	if tp != nil {
		fc.TracerProvider = tp
		logger.Info("tracing publications over OTLP")
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := flushTraces(ctx); err != nil {
				logger.Warn("flush traces", "err", err)
			}
		}()
	}
	srv, stopBackend, err := startServer(fc, logger)
	if err != nil {
		return err
	}
	defer stopBackend() // after the server's Shutdown: the embedded NATS server goes last
	cfg := fc.WithDefaults()
	ln, err := herald.Listen(cfg.Listen)
	if err != nil {
		_ = srv.Shutdown(context.Background())
		return err
	}
	if *dev || fc.Dev {
		fmt.Fprintf(os.Stderr, "herald %s (dev mode) listening on %s, engine %s\n", herald.Version, ln.Addr(), srv.Engine())
		fmt.Fprintf(os.Stderr, "  WebSocket:  ws://%s/ws\n", displayAddr(ln.Addr()))
		if genKey != "" {
			fmt.Fprintf(os.Stderr, "  API key:    %s   (set HERALD_API_KEY to choose one)\n", genKey)
		} else if os.Getenv("HERALD_API_KEY") != "" {
			fmt.Fprintf(os.Stderr, "  API key:    from HERALD_API_KEY\n")
		} else {
			fmt.Fprintf(os.Stderr, "  API key:    from api_keys (config file or HERALD_API_KEYS)\n")
		}
		if genSecret != "" {
			fmt.Fprintf(os.Stderr, "  token secret: %s   (herald token --secret %s --user alice)\n", genSecret, genSecret)
		}
		scheme, adminAddr := "http://", displayAddr(ln.Addr())
		if fc.TLSCert != "" {
			scheme = "https://"
		}
		if fc.AdminSection.Listen != "" {
			adminAddr = displayHostPort(fc.AdminSection.Listen)
		}
		adminURL := scheme + adminAddr + "/admin/"
		if genAdmin != "" {
			fmt.Fprintf(os.Stderr, "  admin UI:   %s   password %s   (set HERALD_ADMIN_PASSWORD to choose one)\n", adminURL, genAdmin)
		} else {
			fmt.Fprintf(os.Stderr, "  admin UI:   %s   password from admin.password or HERALD_ADMIN_PASSWORD\n", adminURL)
		}
		fmt.Fprintf(os.Stderr, "  try:        herald sub room:1   and   herald pub room:1 '{\"text\":\"hi\"}'\n")
	} else {
		logger.Info("listening", "addr", ln.Addr().String(), "engine", srv.Engine())
	}
	for _, side := range []struct {
		addr  string
		debug bool
		admin bool
	}{{fc.MetricsListen, false, false}, {fc.DebugListen, true, false}, {fc.AdminSection.Listen, false, true}} {
		if side.addr == "" {
			continue
		}
		mln, err := net.Listen("tcp", side.addr)
		if err != nil {
			_ = srv.Shutdown(context.Background())
			return err
		}
		mux := http.NewServeMux()
		if side.admin {
			mux.Handle("/admin", srv.AdminHandler())
			mux.Handle("/admin/", srv.AdminHandler())
			mux.Handle("/{$}", http.RedirectHandler("/admin/", http.StatusFound))
		} else {
			mux.Handle("/metrics", srv.MetricsHandler())
		}
		if side.debug {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		ms := srv.NewHTTPServer(mux)
		ms.WriteTimeout = 0 // CPU profiles and traces stream for their duration
		if side.admin && fc.TLSCert != "" {
			go func() { _ = ms.ServeTLS(mln, fc.TLSCert, fc.TLSKey) }() // the admin password crosses it
		} else {
			go func() { _ = ms.Serve(mln) }()
		}
		defer ms.Close()
	}

	serveErr := make(chan error, 1)
	go func() {
		if fc.TLSCert != "" {
			serveErr <- srv.ServeTLS(ln, fc.TLSCert, fc.TLSKey)
		} else {
			serveErr <- srv.Serve(ln)
		}
	}()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-serveErr:
		_ = srv.Shutdown(context.Background())
		return err
	case sig := <-sigs:
		logger.Info("draining", "signal", sig.String(), "window", cfg.DrainTimeout.String())
	}
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "herald: second signal, exiting now")
		os.Exit(1)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout+5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return err
	}
	if err := <-serveErr; err != nil && !errors.Is(err, herald.ErrServerClosed) {
		return err
	}
	logger.Info("stopped")
	return nil
}

// displayHostPort is a listen address as a URL host: localhost for an
// unspecified host.
func displayHostPort(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func displayAddr(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		return fmt.Sprintf("localhost:%d", ta.Port)
	}
	return a.String()
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil || level == "" {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func runCheckConfig(args []string) error {
	fs := flag.NewFlagSet("check-config", flag.ExitOnError)
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		return errors.New("usage: herald check-config FILE")
	}
	fc, err := loadConfig(fs.Arg(0))
	if err != nil {
		return err
	}
	if fc.Dev {
		applyDev(fc)
	}
	if err := fc.checkAdmin(); err != nil {
		return err
	}
	if fc.Admin.Password != "" {
		fc.AdminSection.Password = "<redacted>"
	}
	if err := fc.Validate(); err != nil {
		return err
	}
	if err := fc.resolveBackend(backendFlags{}, os.Getenv); err != nil {
		return err
	}
	fc.redactBackend()
	if !fc.Cluster.enabled() { // in cluster mode the servers and replicas come from the cluster
		fc.BrokerSection.showDefaults()
	}
	fc.Config = fc.WithDefaults()
	if fc.Admin.Password != "" {
		fc.AdminSection.SessionTTL = fc.Admin.SessionTTL
	}
	for i := range fc.APIKeys {
		fc.APIKeys[i] = "<redacted>"
	}
	if fc.TokenSecret != "" {
		fc.TokenSecret = "<redacted>"
	}
	if fc.Token.HMACSecret != "" {
		fc.Token.HMACSecret = "<redacted>"
	}
	out, err := yaml.Marshal(fc)
	if err != nil {
		return err
	}
	fmt.Printf("# %s: valid; effective config with defaults:\n%s", fs.Arg(0), out)
	return nil
}
