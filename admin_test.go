package herald_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

const adminPassword = "admin-test-password"

func adminConfig() herald.Config {
	cfg := devConfig()
	cfg.Admin.Password = adminPassword
	cfg.Namespaces = append(cfg.Namespaces, herald_ns("secret", true))
	return cfg
}

// noRedirect is an HTTP client that returns redirects instead of
// following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// adminDo sends a request to base+path and returns the status, the body,
// and the response.
func adminDo(t testing.TB, method, base, path string, body string, header http.Header) (int, string, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}

// admin is a logged-in admin UI session.
type admin struct {
	t      testing.TB
	base   string
	cookie *http.Cookie
	csrf   string
}

// adminLogin logs in to the admin UI at base (http://host:port).
func adminLogin(t testing.TB, base, password string) *admin {
	t.Helper()
	code, body, resp := adminDo(t, "POST", base, "/admin/login", `{"password":`+fmt.Sprintf("%q", password)+`}`, http.Header{"Content-Type": {"application/json"}})
	if code != 200 {
		t.Fatalf("login: %d %s", code, body)
	}
	a := &admin{t: t, base: base}
	for _, c := range resp.Cookies() {
		if c.Name == "herald_admin" {
			a.cookie = c
		}
	}
	var out struct {
		CSRF string `json:"csrf"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || a.cookie == nil || out.CSRF == "" {
		t.Fatalf("login: cookie %v, body %s", a.cookie, body)
	}
	a.csrf = out.CSRF
	return a
}

func (a *admin) header() http.Header {
	return http.Header{"Cookie": {a.cookie.Name + "=" + a.cookie.Value}, "X-Herald-Csrf": {a.csrf}, "Content-Type": {"application/json"}}
}

// get calls GET /admin/api/NAME?query and decodes the answer into out.
func (a *admin) get(name string, query url.Values, out any) int {
	a.t.Helper()
	path := "/admin/api/" + name
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	code, body, _ := adminDo(a.t, "GET", a.base, path, "", a.header())
	if out != nil && code == 200 {
		if err := json.Unmarshal([]byte(body), out); err != nil {
			a.t.Fatalf("%s: %v: %s", path, err, body)
		}
	}
	return code
}

// post calls POST /admin/api/NAME with a JSON body and the CSRF token.
func (a *admin) post(name string, body any, out any) (int, string) {
	a.t.Helper()
	b, _ := json.Marshal(body)
	code, resp, _ := adminDo(a.t, "POST", a.base, "/admin/api/"+name, string(b), a.header())
	if out != nil && code == 200 {
		if err := json.Unmarshal([]byte(resp), out); err != nil {
			a.t.Fatalf("%s: %v: %s", name, err, resp)
		}
	}
	return code, resp
}

func TestAdminOff(t *testing.T) {
	t.Parallel()
	cfg := devConfig()
	cfg.Demo = true // the demo serves "/": /admin/ must still be nothing
	ts := startServer(t, cfg)
	base := "http://" + ts.addr
	for _, path := range []string{"/admin", "/admin/", "/admin/login", "/admin/api/info", "/admin/assets/admin.css", "/admin/ws", "/admin/channels"} {
		if code, _, _ := adminDo(t, "GET", base, path, "", nil); code != http.StatusNotFound {
			t.Errorf("GET %s with the admin UI off: %d, want 404", path, code)
		}
	}
	if code, _, _ := adminDo(t, "POST", base, "/admin/login", "password=x", http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}); code != http.StatusNotFound {
		t.Errorf("POST /admin/login with the admin UI off: %d", code)
	}

	// NoAdminEndpoint: not under Handler, but AdminHandler serves it.
	cfg = adminConfig()
	cfg.NoAdminEndpoint = true
	ts = startServer(t, cfg)
	if code, _, _ := adminDo(t, "GET", "http://"+ts.addr, "/admin/login", "", nil); code != http.StatusNotFound {
		t.Errorf("GET /admin/login with NoAdminEndpoint: %d", code)
	}
	side := httptest.NewServer(ts.AdminHandler())
	defer side.Close()
	if code, _, _ := adminDo(t, "GET", side.URL, "/admin/login", "", nil); code != 200 {
		t.Errorf("GET /admin/login from AdminHandler: %d", code)
	}
}

func TestAdminConfigValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []herald.AdminConfig{{Password: "short"}, {Password: adminPassword, SessionTTL: time.Second}, {SessionTTL: -time.Hour}} {
		if err := (herald.Config{Admin: c}).Validate(); !errors.Is(err, herald.ErrConfig) {
			t.Errorf("Validate(%+v) = %v, want ErrConfig", c, err)
		}
	}
	if err := (herald.Config{Admin: herald.AdminConfig{Password: adminPassword}}).Validate(); err != nil {
		t.Error(err)
	}
	if ttl := (herald.Config{}).WithDefaults().Admin.SessionTTL; ttl != 12*time.Hour {
		t.Errorf("default session TTL %v", ttl)
	}
}

func TestAdminLogin(t *testing.T) {
	t.Parallel()
	ts := startServer(t, adminConfig())
	base := "http://" + ts.addr

	// Without a session: pages go to the login form, API calls get 401.
	code, _, resp := adminDo(t, "GET", base, "/admin/channels?pattern=a", "", nil)
	if loc := resp.Header.Get("Location"); code != http.StatusSeeOther || loc != "/admin/login?next=%2Fadmin%2Fchannels%3Fpattern%3Da" {
		t.Fatalf("page without a session: %d to %q", code, loc)
	}
	if code, _, _ := adminDo(t, "GET", base, "/admin/api/info", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("API without a session: %d", code)
	}
	if code, body, _ := adminDo(t, "GET", base, "/admin/login", "", nil); code != 200 || !strings.Contains(body, `type="password"`) {
		t.Fatalf("login page: %d %.100s", code, body)
	}

	// A wrong password, as a form and as JSON.
	code, body, resp := adminDo(t, "POST", base, "/admin/login", "password=wrong-password", http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
	if code != http.StatusUnauthorized || !strings.Contains(body, "wrong password") || len(resp.Cookies()) != 0 {
		t.Fatalf("wrong password: %d %s %v", code, body, resp.Cookies())
	}
	if code, _, _ := adminDo(t, "POST", base, "/admin/login", `{"password":"`+adminPassword+`x"}`, http.Header{"Content-Type": {"application/json"}}); code != http.StatusUnauthorized {
		t.Fatalf("longer password: %d", code)
	}
	// From a page of another site: refused before the password is read.
	if code, _, _ := adminDo(t, "POST", base, "/admin/login", "password="+adminPassword, http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "Origin": {"https://evil.example"}}); code != http.StatusForbidden {
		t.Fatalf("foreign origin: %d", code)
	}

	// The right one, as a form: the cookie's attributes.
	code, body, resp = adminDo(t, "POST", base, "/admin/login", "password="+adminPassword, http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
	if code != 200 {
		t.Fatalf("login: %d %s", code, body)
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies %v", cookies)
	}
	c := cookies[0]
	if c.Name != "herald_admin" || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/admin" || c.MaxAge != 12*3600 || c.Secure {
		t.Fatalf("cookie %+v", c)
	}
	if exp := time.Until(c.Expires); exp < 11*time.Hour || exp > 13*time.Hour {
		t.Fatalf("cookie expires in %v", exp)
	}
	hdr := http.Header{"Cookie": {c.Name + "=" + c.Value}}
	if code, body, _ := adminDo(t, "GET", base, "/admin/", "", hdr); code != 200 || !strings.Contains(body, "uPlot.iife.min.js") {
		t.Fatalf("overview with a session: %d", code)
	}
	// Behind a TLS-terminating proxy the cookie is Secure.
	_, _, resp = adminDo(t, "POST", base, "/admin/login", "password="+adminPassword, http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "X-Forwarded-Proto": {"https"}})
	if cs := resp.Cookies(); len(cs) != 1 || !cs[0].Secure {
		t.Fatalf("cookie over https: %v", cs)
	}
}

func TestAdminCookieForgedOrExpired(t *testing.T) {
	t.Parallel()
	ts := startServer(t, adminConfig())
	base := "http://" + ts.addr
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	ts.SetAdminClock(clock)

	a := adminLogin(t, base, adminPassword)
	if code := a.get("info", nil, nil); code != 200 {
		t.Fatalf("info: %d", code)
	}
	exp, nonce, mac := cookieParts(t, a.cookie.Value)
	other := startServer(t, func() herald.Config { c := adminConfig(); c.Admin.Password = "another-admin-password"; return c }())
	same := startServer(t, adminConfig()) // another node with the same password
	b := adminLogin(t, "http://"+other.addr, "another-admin-password")
	_, _, otherMAC := cookieParts(t, b.cookie.Value)
	later := fmt.Sprint(now.Add(48 * time.Hour).Unix())
	for name, value := range map[string]string{
		"MAC changed":                  exp + "." + nonce + "." + otherChar(mac[0]) + mac[1:],
		"expiry extended":              later + "." + nonce + "." + mac,
		"nonce changed":                exp + ".AAAA" + nonce[4:] + "." + mac,
		"signed with another password": b.cookie.Value,
		"another password's MAC":       exp + "." + nonce + "." + otherMAC,
		"no MAC":                       exp + "." + nonce,
		"garbage":                      "x",
		"empty":                        "",
	} {
		forged := &admin{t: t, base: base, cookie: &http.Cookie{Name: "herald_admin", Value: value}, csrf: a.csrf}
		if code := forged.get("info", nil, nil); code != http.StatusUnauthorized {
			t.Errorf("cookie %s: %d, want 401", name, code)
		}
		if code, _ := forged.post("publish", map[string]any{"channel": "room:1", "data": 1}, nil); code != http.StatusUnauthorized {
			t.Errorf("cookie %s, publish: %d, want 401", name, code)
		}
	}
	// The same password on another node: the same key, the cookie is good.
	onSame := &admin{t: t, base: "http://" + same.addr, cookie: a.cookie, csrf: a.csrf}
	if code := onSame.get("info", nil, nil); code != 200 {
		t.Errorf("cookie on a node with the same password: %d", code)
	}

	// Expired: a second before the TTL still good, at the TTL not.
	advance(12*time.Hour - time.Second)
	if code := a.get("info", nil, nil); code != 200 {
		t.Fatalf("a second before expiry: %d", code)
	}
	advance(time.Second)
	if code := a.get("info", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("expired cookie: %d, want 401", code)
	}
	code, _, resp := adminDo(t, "GET", base, "/admin/", "", a.header())
	if code != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/admin/login") {
		t.Fatalf("page with an expired cookie: %d %q", code, resp.Header.Get("Location"))
	}
}

func TestAdminCSRF(t *testing.T) {
	t.Parallel()
	ts := startServer(t, adminConfig())
	base := "http://" + ts.addr
	old := adminLogin(t, base, adminPassword)
	a := adminLogin(t, base, adminPassword)
	if old.csrf == a.csrf {
		t.Fatal("two sessions have the same CSRF token")
	}
	pub := map[string]any{"channel": "room:csrf", "data": map[string]int{"n": 1}}
	for name, token := range map[string]string{"missing": "", "stale (an earlier session's)": old.csrf, "mangled": a.csrf[1:] + "A"} {
		h := a.header()
		if token == "" {
			h.Del("X-Herald-Csrf")
		} else {
			h.Set("X-Herald-Csrf", token)
		}
		for _, path := range []string{"/admin/api/publish", "/admin/api/disconnect", "/admin/logout"} {
			if code, body, _ := adminDo(t, "POST", base, path, `{"channel":"room:csrf","data":1,"client":"x"}`, h); code != http.StatusForbidden {
				t.Errorf("%s CSRF token, POST %s: %d %s, want 403", name, path, code, body)
			}
		}
	}
	var res struct {
		Offset uint64 `json:"offset"`
	}
	if code, body := a.post("publish", pub, &res); code != 200 || res.Offset != 1 {
		t.Fatalf("publish with the token: %d %s", code, body)
	}
	// The session endpoint hands the page its token.
	var sess struct {
		CSRF string `json:"csrf"`
	}
	if code := a.get("session", nil, &sess); code != 200 || sess.CSRF != a.csrf {
		t.Fatalf("session: %d %+v", code, sess)
	}
	// Log out: the answer clears the cookie.
	code, _, resp := adminDo(t, "POST", base, "/admin/logout", "", a.header())
	if cs := resp.Cookies(); code != 200 || len(cs) != 1 || cs[0].MaxAge >= 0 {
		t.Fatalf("logout: %d %v", code, cs)
	}
}

func TestAdminLoginRateLimit(t *testing.T) {
	t.Parallel()
	ts := startServer(t, adminConfig())
	base := "http://" + ts.addr
	now := time.Now()
	var mu sync.Mutex
	ts.SetAdminClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	login := func(password string) int {
		code, _, _ := adminDo(t, "POST", base, "/admin/login", "password="+password, http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
		return code
	}

	// A success forgets earlier failures.
	for i := 0; i < 9; i++ {
		if code := login("wrong-password"); code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i+1, code)
		}
	}
	if code := login(adminPassword); code != 200 {
		t.Fatalf("login after 9 failures: %d", code)
	}
	// Ten failures within a minute: the 11th attempt is refused, even with
	// the right password, without looking at it.
	for i := 0; i < 10; i++ {
		advance(5 * time.Second)
		if code := login("wrong-password"); code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i+1, code)
		}
	}
	code, body, resp := adminDo(t, "POST", base, "/admin/login", "password="+adminPassword, http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
	if code != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("11th attempt: %d %s", code, body)
	}
	// A minute after the first of the ten, one slot is free again.
	advance(15 * time.Second)
	if code := login("wrong-password"); code != http.StatusUnauthorized {
		t.Fatalf("after the window moved: %d", code)
	}
	if code := login(adminPassword); code != http.StatusTooManyRequests {
		t.Fatalf("ten failures in the window again: %d", code)
	}
	advance(time.Minute)
	if code := login(adminPassword); code != 200 {
		t.Fatalf("a minute later: %d", code)
	}
}

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	ts := startServer(t, adminConfig())
	a := adminLogin(t, "http://"+ts.addr, adminPassword)

	var info struct {
		Nodes []herald.Info `json:"nodes"`
	}
	if code := a.get("info", nil, &info); code != 200 || len(info.Nodes) != 1 || info.Nodes[0].Node != ts.NodeID() {
		t.Fatalf("info: %d %+v", code, info)
	}

	// Three users in one channel with presence, one of them also elsewhere.
	var users []*client.Client
	for _, u := range []string{"alice", "bob", "carol"} {
		c := dial(t, ts, &client.Options{Token: token(t, u, time.Hour)})
		if _, err := c.Subscribe(ctxT(t), "room:lobby", client.SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
		users = append(users, c)
	}
	if _, err := users[0].Subscribe(ctxT(t), "room:other", client.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}

	var chans herald.ChannelsPage
	if code := a.get("channels", url.Values{"pattern": {"room:*"}, "limit": {"1"}}, &chans); code != 200 ||
		len(chans.Channels) != 1 || chans.Channels[0] != (herald.ChannelCount{Channel: "room:lobby", Subscribers: 3}) || chans.Cursor != "room:lobby" {
		t.Fatalf("channels page 1: %d %+v", code, chans)
	}
	var chans2 herald.ChannelsPage
	if code := a.get("channels", url.Values{"pattern": {"room:*"}, "cursor": {chans.Cursor}}, &chans2); code != 200 ||
		len(chans2.Channels) != 1 || chans2.Channels[0].Channel != "room:other" || chans2.Cursor != "" {
		t.Fatalf("channels page 2: %d %+v", code, chans2)
	}
	if code := a.get("channels", url.Values{"pattern": {"["}}, nil); code != http.StatusBadRequest {
		t.Fatalf("bad pattern: %d", code)
	}

	var ch struct {
		Channel       string                          `json:"channel"`
		Subscribers   int                             `json:"subscribers"`
		Presence      map[string]*protocol.ClientInfo `json:"presence"`
		PresenceStats struct {
			Clients int `json:"num_clients"`
			Users   int `json:"num_users"`
		} `json:"presence_stats"`
		Namespace struct {
			Presence bool `json:"presence"`
			History  bool `json:"history"`
		} `json:"namespace"`
	}
	eventually(t, 5*time.Second, "three members", func() bool {
		return a.get("channel", url.Values{"name": {"room:lobby"}}, &ch) == 200 && len(ch.Presence) == 3
	})
	got := map[string]bool{}
	for _, m := range ch.Presence {
		got[m.User] = true
	}
	if !got["alice"] || !got["bob"] || !got["carol"] || ch.Subscribers != 3 || ch.PresenceStats.Users != 3 || !ch.Namespace.History {
		t.Fatalf("channel: %+v", ch)
	}
	if code := a.get("channel", url.Values{"name": {"<img src=x>"}}, nil); code != http.StatusBadRequest {
		t.Fatalf("invalid channel name: %d", code)
	}

	// Publish as JSON and as text; both reach a subscriber.
	var pubs []client.Publication
	var pubMu sync.Mutex
	if _, err := users[1].Subscribe(ctxT(t), "room:pub", client.SubscribeOptions{OnPublication: func(p client.Publication) {
		pubMu.Lock()
		pubs = append(pubs, p)
		pubMu.Unlock()
	}}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 25; i++ {
		if code, body := a.post("publish", map[string]any{"channel": "room:pub", "data": map[string]int{"seq": i}}, nil); code != 200 {
			t.Fatalf("publish %d: %d %s", i, code, body)
		}
	}
	if code, body := a.post("publish", map[string]any{"channel": "room:pub", "text": "</script><b>x</b>"}, nil); code != 200 {
		t.Fatalf("publish text: %d %s", code, body)
	}
	eventually(t, 5*time.Second, "26 publications", func() bool { pubMu.Lock(); defer pubMu.Unlock(); return len(pubs) == 26 })
	pubMu.Lock()
	if string(pubs[25].Data) != `"\u003c/script\u003e\u003cb\u003ex\u003c/b\u003e"` && string(pubs[25].Data) != `"</script><b>x</b>"` {
		t.Fatalf("text publication %q", pubs[25].Data)
	}
	pubMu.Unlock()
	for name, body := range map[string]any{
		"no data":       map[string]any{"channel": "room:pub"},
		"data and text": map[string]any{"channel": "room:pub", "data": 1, "text": "x"},
		"bad channel":   map[string]any{"channel": "a b", "data": 1},
	} {
		if code, _ := a.post("publish", body, nil); code != http.StatusBadRequest {
			t.Errorf("publish with %s: %d", name, code)
		}
	}

	// History by offset, forward, in the channel's epoch.
	type page struct {
		Publications []protocol.Publication `json:"publications"`
		Epoch        string                 `json:"epoch"`
		Offset       uint64                 `json:"offset"`
	}
	var h, latest page
	if code := a.get("history", url.Values{"channel": {"room:pub"}, "since": {"5"}, "limit": {"10"}}, &h); code != 200 ||
		len(h.Publications) != 10 || h.Publications[0].Offset != 6 || h.Publications[9].Offset != 15 || h.Offset != 26 || h.Epoch == "" {
		t.Fatalf("history since 5: %d %+v", code, h)
	}
	if code := a.get("history", url.Values{"channel": {"room:pub"}, "limit": {"10"}}, &latest); code != 200 ||
		len(latest.Publications) != 10 || latest.Publications[0].Offset != 17 || latest.Publications[9].Offset != 26 {
		t.Fatalf("latest history page: %d %+v", code, latest)
	}
	var end page
	if code := a.get("history", url.Values{"channel": {"room:pub"}, "since": {"26"}}, &end); code != 200 || len(end.Publications) != 0 || end.Offset != 26 {
		t.Fatalf("history past the end: %d %+v", code, end)
	}

	// Connections, by user and by channel.
	var conns herald.ConnectionsPage
	if code := a.get("connections", url.Values{"user": {"alice"}}, &conns); code != 200 || len(conns.Connections) != 1 || conns.Connections[0].Client != users[0].ID() {
		t.Fatalf("alice's connections: %d %+v", code, conns)
	}
	var lobby herald.ConnectionsPage
	if code := a.get("connections", url.Values{"channel": {"room:lobby"}, "limit": {"2"}}, &lobby); code != 200 || len(lobby.Connections) != 2 || lobby.Cursor == "" {
		t.Fatalf("connections in room:lobby: %d %+v", code, lobby)
	}

	// Stats: every node's samples.
	eventually(t, 5*time.Second, "samples", func() bool {
		var st struct {
			Nodes []herald.NodeSeries `json:"nodes"`
		}
		return a.get("stats", nil, &st) == 200 && len(st.Nodes) == 1 && len(st.Nodes[0].Samples) > 0
	})
	if code := a.get("stats", url.Values{"since": {"x"}}, nil); code != http.StatusBadRequest {
		t.Fatalf("stats since x: %d", code)
	}
}

func TestAdminDisconnect(t *testing.T) {
	t.Parallel()
	ts := startServer(t, adminConfig())
	a := adminLogin(t, "http://"+ts.addr, adminPassword)
	events := make(chan client.DisconnectEvent, 10)
	c := dial(t, ts, &client.Options{Token: token(t, "dave", time.Hour), OnDisconnect: func(e client.DisconnectEvent) { events <- e }})
	next := func() client.DisconnectEvent {
		select {
		case e := <-events:
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no disconnect")
		}
		return client.DisconnectEvent{}
	}
	reconnected := func(old string) {
		eventually(t, 10*time.Second, "reconnected", func() bool { return c.State() == client.StateConnected && c.ID() != old })
	}

	id := c.ID()
	var res struct {
		Code uint32 `json:"code"`
	}
	if code, body := a.post("disconnect", map[string]any{"client": id, "reconnect": true}, &res); code != 200 || res.Code != 3007 {
		t.Fatalf("disconnect reconnect: %d %s", code, body)
	}
	if e := next(); e.Code != protocol.DisconnectForceReconnect || !e.Reconnect {
		t.Fatalf("event %+v", e)
	}
	reconnected(id)

	id = c.ID()
	if code, body := a.post("disconnect", map[string]any{"client": id, "code": 4321, "reason": "maintenance"}, nil); code != 200 {
		t.Fatalf("disconnect 4321: %d %s", code, body)
	}
	if e := next(); e.Code != 4321 || e.Reason != "maintenance" || !e.Reconnect {
		t.Fatalf("event %+v", e)
	}
	reconnected(id)

	for name, body := range map[string]any{
		"code out of range": map[string]any{"client": c.ID(), "code": 3000},
		"no client":         map[string]any{"reconnect": true},
	} {
		if code, _ := a.post("disconnect", body, nil); code != http.StatusBadRequest {
			t.Errorf("disconnect with %s: %d", name, code)
		}
	}
	if code, _ := a.post("disconnect", map[string]any{"client": "no-such-client"}, nil); code != http.StatusNotFound {
		t.Errorf("disconnect of an unknown client: %d", code)
	}

	id = c.ID()
	if code, body := a.post("disconnect", map[string]any{"client": id, "reconnect": false}, nil); code != 200 {
		t.Fatalf("disconnect for good: %d %s", code, body)
	}
	if e := next(); e.Code != protocol.DisconnectForceNoReconnect || e.Reconnect {
		t.Fatalf("event %+v", e)
	}
	<-c.Done()
}

// wsStatus sends a WebSocket handshake to /admin/ws and returns the
// answer's status.
func wsStatus(t *testing.T, addr string, header http.Header) int {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req, _ := http.NewRequest("GET", "http://"+addr+"/admin/ws", nil)
	req.Header = header.Clone()
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", protocol.SubprotocolJSON)
	if err := req.Write(nc); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestAdminWebSocket(t *testing.T) {
	t.Parallel()
	ts := startServer(t, adminConfig())
	a := adminLogin(t, "http://"+ts.addr, adminPassword)
	cookie := a.cookie.Name + "=" + a.cookie.Value

	if code := wsStatus(t, ts.addr, http.Header{}); code != http.StatusUnauthorized {
		t.Fatalf("no cookie: %d", code)
	}
	if code := wsStatus(t, ts.addr, http.Header{"Cookie": {"herald_admin=1.2.3"}}); code != http.StatusUnauthorized {
		t.Fatalf("forged cookie: %d", code)
	}
	if code := wsStatus(t, ts.addr, http.Header{"Cookie": {cookie}, "Origin": {"https://evil.example"}}); code != http.StatusForbidden {
		t.Fatalf("foreign origin: %d", code)
	}
	if code := wsStatus(t, ts.addr, http.Header{"Cookie": {cookie}, "Origin": {"http://" + ts.addr}}); code != http.StatusSwitchingProtocols {
		t.Fatalf("same origin: %d", code)
	}

	// An admin session: no token, subscribes to a private channel (a
	// client with a token may not), reads it, and may not publish.
	var got atomic.Int32
	adm, err := client.Dial(ctxT(t), "ws://"+ts.addr+"/admin/ws", &client.Options{Header: http.Header{"Cookie": {cookie}, "Origin": {"http://" + ts.addr}}})
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	alice := dial(t, ts, &client.Options{Token: token(t, "alice", 0)}) // a token without expiry
	if _, err := alice.Subscribe(ctxT(t), "secret:1", client.SubscribeOptions{}); !isCode(err, protocol.ErrPermissionDenied) {
		t.Fatalf("alice on the private channel: %v", err)
	}
	if _, err := adm.Subscribe(ctxT(t), "secret:1", client.SubscribeOptions{OnPublication: func(client.Publication) { got.Add(1) }}); err != nil {
		t.Fatalf("admin subscribe to a private channel: %v", err)
	}
	ts.publish(t, "secret:1", seqData(1))
	eventually(t, 5*time.Second, "the publication at the admin session", func() bool { return got.Load() == 1 })
	if _, err := adm.Publish(ctxT(t), "secret:1", []byte(`{"x":1}`), nil); !isCode(err, protocol.ErrPermissionDenied) {
		t.Fatalf("admin publish: %v, want error 103", err)
	}
	if _, err := adm.Publish(ctxT(t), "room:1", []byte(`{"x":1}`), nil); !isCode(err, protocol.ErrPermissionDenied) {
		t.Fatalf("admin publish on an open channel: %v, want error 103", err)
	}

	// It is no member: not in presence, no join.
	if _, err := adm.Subscribe(ctxT(t), "room:watched", client.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Subscribe(ctxT(t), "room:watched", client.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	members, err := alice.Presence(ctxT(t), "room:watched")
	if err != nil || len(members) != 1 {
		t.Fatalf("presence with an admin watching: %v %v", members, err)
	}
	// It is listed among the connections, marked.
	var conns herald.ConnectionsPage
	if code := a.get("connections", url.Values{"client": {adm.ID()}}, &conns); code != 200 || len(conns.Connections) != 1 || !conns.Connections[0].Admin {
		t.Fatalf("admin connection listed: %d %+v", code, conns)
	}

	// It ends with the login it was opened with: closed as expired
	// (3502) once the session's expiry and the grace have passed.
	ts.SweepAt(time.Now().Add(12*time.Hour + 11*time.Second))
	select {
	case <-adm.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the admin connection outlived its login")
	}
	var te *client.TerminalError
	if err := adm.Err(); !errors.As(err, &te) || te.Code != protocol.DisconnectTokenExpired {
		t.Fatalf("admin connection ended with %v, want 3502", err)
	}
	if alice.State() != client.StateConnected {
		t.Fatalf("alice's connection (no expiry) after the sweep: %v", alice.State())
	}
}

// cookieParts splits a session cookie: expiry, nonce, MAC.
func cookieParts(t *testing.T, v string) (exp, nonce, mac string) {
	t.Helper()
	p := strings.Split(v, ".")
	if len(p) != 3 {
		t.Fatalf("cookie %q: want EXPIRY.NONCE.MAC", v)
	}
	return p[0], p[1], p[2]
}

func isCode(err error, code uint32) bool {
	var pe *protocol.Error
	return errors.As(err, &pe) && pe.Code == code
}

// otherChar is a base64 character other than c. The first character of an
// encoding carries six bits of the first byte: changing it changes the
// decoded value (the last one may carry only padding bits).
func otherChar(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}
