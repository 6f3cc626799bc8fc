package herald

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/protocol"
	"github.com/heraldhq/herald/web"
)

// The admin UI at /admin/: pages (web/admin, embedded), a JSON API for
// them under /admin/api/, and /admin/ws, a WebSocket endpoint where the
// pages' live tail subscribes to any channel with the browser SDK. This
// file holds the configuration, the routes and the pages; admin_auth.go
// the login, session cookie, CSRF token and login rate limit;
// admin_api.go the JSON API; admin_ws.go the WebSocket endpoint and what
// an admin session may do.

// AdminConfig configures the admin UI.
type AdminConfig struct {
	// Password turns the admin UI on and is what its login form asks for.
	// Empty (the default): the admin UI is off and /admin/ answers 404.
	// At least 8 bytes; use a long random one (every node of a cluster
	// needs the same: the session cookie's key is derived from it, so a
	// login is valid on every node and changing it ends every session).
	Password string `yaml:"password" json:"password"`
	// SessionTTL is how long a login lasts. Default 12h; at least 1m.
	SessionTTL time.Duration `yaml:"session_ttl" json:"session_ttl"`
}

func (c AdminConfig) validate() error {
	if c.Password != "" && len(c.Password) < 8 {
		return errors.New("password: at least 8 bytes")
	}
	if c.SessionTTL != 0 && c.SessionTTL < time.Minute {
		return errors.New("session_ttl: at least 1m")
	}
	return nil
}

// adminUI serves /admin/. It is created by New and safe for concurrent
// use.
type adminUI struct {
	s      *Server
	on     bool
	ttl    time.Duration
	keys   adminKeys
	logins loginLimiter
	now    atomic.Pointer[func() time.Time] // nil: time.Now (tests set a clock)
	mux    *http.ServeMux
}

func newAdminUI(s *Server) *adminUI {
	a := &adminUI{s: s, on: s.cfg.Admin.Password != "", ttl: s.cfg.Admin.SessionTTL}
	if !a.on {
		return a
	}
	a.keys = deriveAdminKeys(s.cfg.Admin.Password)
	a.logins.init()
	a.mux = a.routes()
	return a
}

func (a *adminUI) clock() time.Time {
	if f := a.now.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}

// AdminHandler returns the admin UI's handler, for the paths under
// /admin/ (it must be mounted there, as Handler does unless
// NoAdminEndpoint is set). Without Config.Admin.Password it answers 404.
func (s *Server) AdminHandler() http.Handler { return s.admin }

// adminCSP keeps the pages to their own scripts, styles and connections:
// a second line of defence behind rendering every user-controlled value
// as text.
const adminCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

func (a *adminUI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !a.on {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", adminCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	a.mux.ServeHTTP(w, r)
}

// adminPages are the pages, each behind the login.
var adminPages = map[string]string{
	"/admin/{$}":         "overview.html",
	"/admin/channels":    "channels.html",
	"/admin/channel":     "channel.html",
	"/admin/connections": "connections.html",
	"/admin/connection":  "connection.html",
}

func (a *adminUI) routes() *http.ServeMux {
	mux := http.NewServeMux()
	files := web.AdminFS()
	for pattern, file := range adminPages {
		mux.HandleFunc("GET "+pattern, a.page(files, file))
	}
	mux.HandleFunc("GET /admin", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/admin/", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /admin/login", a.servePage(files, "login.html"))
	mux.HandleFunc("POST /admin/login", a.login)
	mux.HandleFunc("POST /admin/logout", a.authed(a.logout))
	mux.Handle("GET /admin/assets/", http.StripPrefix("/admin/assets/", noListing(http.FileServerFS(mustSub(files, "assets")))))
	mux.Handle("GET /admin/assets/herald-client/", http.StripPrefix("/admin/assets/herald-client/", noListing(http.FileServerFS(web.ClientFS()))))
	mux.HandleFunc("GET /admin/ws", a.serveWS)
	for name, h := range adminAPI {
		mux.HandleFunc(name, a.authed(h(a)))
	}
	mux.HandleFunc("/admin/api/", func(w http.ResponseWriter, r *http.Request) {
		adminError(w, http.StatusNotFound, protocol.NewError(protocol.ErrMethodNotFound, "unknown admin API call"))
	})
	return mux
}

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// noListing answers 404 for directories instead of listing them.
func noListing(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

// page serves a page to a logged-in admin, and sends anyone else to the
// login form, which comes back here after the login.
func (a *adminUI) page(files fs.FS, name string) http.HandlerFunc {
	serve := a.servePage(files, name)
	return func(w http.ResponseWriter, r *http.Request) {
		if _, ok := a.session(r); !ok {
			http.Redirect(w, r, "/admin/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		serve(w, r)
	}
}

func (a *adminUI) servePage(files fs.FS, name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := fs.ReadFile(files, name)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(b)
	}
}

// authed runs h for requests with a valid session cookie (401 otherwise)
// and, for every method but GET, the session's CSRF token in the
// X-Herald-CSRF header (403 otherwise).
func (a *adminUI) authed(h func(http.ResponseWriter, *http.Request, adminSession)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, ok := a.session(r)
		if !ok {
			adminError(w, http.StatusUnauthorized, protocol.NewError(protocol.ErrUnauthorized, "not logged in, or the session expired"))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !a.csrfOK(sess, r.Header.Get(csrfHeader)) {
			a.audit(r, slog.LevelWarn, "csrf check", "refused")
			adminError(w, http.StatusForbidden, protocol.NewError(protocol.ErrPermissionDenied, "missing or stale CSRF token: reload the page"))
			return
		}
		if r.Method == http.MethodGet {
			a.audit(r, slog.LevelDebug, "read "+r.URL.Path, "ok")
		}
		h(w, r, sess)
	}
}

// audit logs an admin action: who (the admin, from which address), what,
// and the result, with the channel or client it concerned in attrs.
func (a *adminUI) audit(r *http.Request, level slog.Level, action, result string, attrs ...any) {
	args := append([]any{"who", "admin", "remote", remoteIP(r), "action", action}, attrs...)
	args = append(args, "result", result)
	a.s.log.Log(context.Background(), level, "admin", args...)
}

func adminError(w http.ResponseWriter, status int, e *protocol.Error) {
	writeJSON(w, status, map[string]*protocol.Error{"error": e})
}
