package herald

import (
	"log/slog"
	"net/http"
	"time"
)

// /admin/ws serves the admin UI's live tail: a normal session of the
// protocol, on the net/http path, marked admin. An admin session connects
// without a token (the admin cookie authenticated the upgrade), may
// subscribe to and read the history and presence of any channel, and may
// do nothing else: no publish, rpc or refresh. It is no channel member:
// no presence entry, no join or leave event. It takes no per-IP slot. It
// is closed with 3502 (expired) TokenExpiryGrace after the login it was
// opened with expires, as a connection whose token expired.

// adminMay lists the commands an admin session may send.
func adminMay(method string) bool {
	switch method {
	case "connect", "subscribe", "unsubscribe", "history", "presence", "presence_stats", "ping", "ack":
		return true
	}
	return false
}

// serveWS upgrades a request with a valid admin session from a page of
// the same host.
func (a *adminUI) serveWS(w http.ResponseWriter, r *http.Request) {
	sess, ok := a.session(r)
	if !ok {
		a.audit(r, slog.LevelWarn, "live tail connect", "refused: no session")
		http.Error(w, "not logged in", http.StatusUnauthorized)
		return
	}
	if !sameOrigin(r) {
		a.audit(r, slog.LevelWarn, "live tail connect", "refused: foreign origin", "origin", r.Header.Get("Origin"))
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	s := a.s
	if !s.enter() {
		http.Error(w, "server is draining", http.StatusServiceUnavailable)
		return
	}
	defer s.handlers.Done()
	nc, in, sub, err := s.upgrader.Upgrade(w, r)
	if err != nil {
		return
	}
	a.audit(r, slog.LevelInfo, "live tail connect", "ok")
	s.startSession(nc, in, sub, false, "", nil, time.Unix(sess.expires, 0))
}
