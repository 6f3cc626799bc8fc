// Package herald is an embeddable real-time messaging server: WebSocket
// clients subscribe to channels and receive publications, with history and
// recovery after reconnects, presence, backpressure for slow clients,
// graceful drain, and a broker seam for running several nodes.
//
// A minimal embedding:
//
//	srv, err := herald.New(herald.Config{AllowAnonymous: true, Namespaces: []herald.Namespace{{
//		AllowSubscribe: true, AllowAnonymousSubscribe: true, HistorySize: 100,
//	}}})
//	if err != nil { ... }
//	go srv.ListenAndServe()
//	defer srv.Shutdown(ctx)
//
// Server.Handler returns the whole HTTP surface (/ws, /api/, /healthz,
// /readyz, /metrics) for use with an http.Server of your own. The library
// never reads flags, environment variables or files; cmd/herald does.
package herald
