package herald

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/protocol"
)

// Admin authentication, without state shared between nodes:
//
//   - The login form posts the password; it is compared in constant time
//     (passwordOK). Failed logins are counted per client address: after
//     maxFailedLogins within loginWindow the next attempt gets 429 without
//     the password being looked at.
//   - A login sets a session cookie "EXPIRY.NONCE.MAC": the expiry (unix
//     seconds), 16 random bytes, and an HMAC-SHA256 of both under a key
//     derived from the password with PBKDF2. Every node derives the same
//     key, so the cookie is valid on all of them; a new password gives a
//     new key, which ends every session. The cookie is HttpOnly,
//     SameSite=Strict, Path=/admin, Secure over TLS, and lasts SessionTTL.
//   - Every state-changing request carries the session's CSRF token (an
//     HMAC of the cookie's expiry and nonce under a second key) in the
//     X-Herald-CSRF header; the pages get it from /admin/api/session.

const (
	adminCookie     = "herald_admin"
	csrfHeader      = "X-Herald-CSRF"
	maxFailedLogins = 10
	loginWindow     = time.Minute
	// maxLoginAddrs bounds the addresses whose failed logins are
	// remembered; when it is full of recent failures, logins from new
	// addresses are refused (429) rather than forgotten.
	maxLoginAddrs = 10000
	// adminKDFIterations makes a guess at the password from a stolen
	// cookie cost as much as PBKDF2-HMAC-SHA256 at OWASP's recommendation.
	adminKDFIterations = 600_000
)

// adminKeys are derived from the admin password once, at New.
type adminKeys struct {
	password [32]byte // SHA-256 of the password, for the comparison
	session  []byte   // MAC key of session cookies
	csrf     []byte   // MAC key of CSRF tokens
}

func deriveAdminKeys(password string) adminKeys {
	return deriveAdminKeysWith(password, adminKDFIterations)
}

func deriveAdminKeysWith(password string, iterations int) adminKeys {
	master, err := pbkdf2.Key(sha256.New, password, []byte("herald admin session v1"), iterations, 32)
	if err != nil {
		panic(err) // only for FIPS-mode parameter limits, which these are within
	}
	sub := func(label string) []byte {
		m := hmac.New(sha256.New, master)
		m.Write([]byte(label))
		return m.Sum(nil)
	}
	return adminKeys{password: sha256.Sum256([]byte(password)), session: sub("session"), csrf: sub("csrf")}
}

// passwordOK compares a login's password with the configured one in
// constant time: both are hashed to 32 bytes first, so not even the
// length of the configured password shows in the timing.
func (k *adminKeys) passwordOK(given string) bool {
	sum := sha256.Sum256([]byte(given))
	return subtle.ConstantTimeCompare(sum[:], k.password[:]) == 1
}

// adminSession is a valid session cookie's content.
type adminSession struct {
	expires int64  // unix seconds
	nonce   string // base64url
}

func (k *adminKeys) mac(key []byte, sess adminSession) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(strconv.FormatInt(sess.expires, 10) + "." + sess.nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (k *adminKeys) cookieValue(sess adminSession) string {
	return strconv.FormatInt(sess.expires, 10) + "." + sess.nonce + "." + k.mac(k.session, sess)
}

// parseCookie checks a cookie value's MAC and expiry.
func (k *adminKeys) parseCookie(v string, now time.Time) (adminSession, bool) {
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return adminSession{}, false
	}
	exp, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil {
		return adminSession{}, false
	}
	sess := adminSession{expires: exp, nonce: parts[1]}
	if !hmac.Equal([]byte(parts[2]), []byte(k.mac(k.session, sess))) || now.Unix() >= exp {
		return adminSession{}, false
	}
	return sess, true
}

func (k *adminKeys) csrfToken(sess adminSession) string { return k.mac(k.csrf, sess) }

// session returns the request's valid session, if it has one.
func (a *adminUI) session(r *http.Request) (adminSession, bool) {
	c, err := r.Cookie(adminCookie)
	if err != nil {
		return adminSession{}, false
	}
	return a.keys.parseCookie(c.Value, a.clock())
}

func (a *adminUI) csrfOK(sess adminSession, token string) bool {
	return token != "" && hmac.Equal([]byte(token), []byte(a.keys.csrfToken(sess)))
}

// secure reports whether the request came over TLS: directly, through
// Serve's TLS listener, or from a proxy that says so (a false claim only
// makes the cookie stricter).
func secure(r *http.Request) bool {
	return r.TLS != nil || r.Context().Value(tlsConnKey{}) != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func (a *adminUI) setCookie(w http.ResponseWriter, r *http.Request, value string, expires time.Time, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: adminCookie, Value: value, Path: "/admin", Expires: expires, MaxAge: maxAge,
		HttpOnly: true, Secure: secure(r), SameSite: http.SameSiteStrictMode,
	})
}

// sameOrigin accepts requests without Origin (not from a browser page)
// and those whose Origin is the host they were sent to.
func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	return sameHost(strings.ToLower(u.Host), strings.ToLower(r.Host))
}

// login answers POST /admin/login: the password as a form field or JSON
// {"password"}. 200 with the cookie, 401 for a wrong password, 429 past
// the failed-login limit, 403 from a page of another site.
func (a *adminUI) login(w http.ResponseWriter, r *http.Request) {
	ip := remoteIP(r)
	if !sameOrigin(r) {
		a.audit(r, slog.LevelWarn, "login", "refused: foreign origin")
		adminError(w, http.StatusForbidden, protocol.NewError(protocol.ErrPermissionDenied, "origin not allowed"))
		return
	}
	now := a.clock()
	if !a.logins.allow(ip, now) {
		a.audit(r, slog.LevelWarn, "login", "refused: too many failed logins")
		w.Header().Set("Retry-After", strconv.Itoa(int(loginWindow/time.Second)))
		adminError(w, http.StatusTooManyRequests, protocol.NewError(protocol.ErrTooManyRequests, "too many failed logins: try again in a minute"))
		return
	}
	password, ok := loginPassword(w, r)
	if !ok {
		adminError(w, http.StatusBadRequest, protocol.NewError(protocol.ErrBadRequest, "password required"))
		return
	}
	if !a.keys.passwordOK(password) {
		a.logins.failed(ip, now)
		a.audit(r, slog.LevelWarn, "login", "wrong password")
		adminError(w, http.StatusUnauthorized, protocol.NewError(protocol.ErrUnauthorized, "wrong password"))
		return
	}
	a.logins.succeeded(ip)
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	expires := now.Add(a.ttl)
	sess := adminSession{expires: expires.Unix(), nonce: base64.RawURLEncoding.EncodeToString(nonce[:])}
	a.setCookie(w, r, a.keys.cookieValue(sess), expires, int(a.ttl/time.Second))
	a.audit(r, slog.LevelInfo, "login", "ok")
	writeJSON(w, http.StatusOK, map[string]any{"csrf": a.keys.csrfToken(sess), "expires": sess.expires * 1000})
}

// loginPassword reads the password of a login request, a form or JSON.
func loginPassword(w http.ResponseWriter, r *http.Request) (string, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/json" {
		var body struct {
			Password string `json:"password"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Password == "" {
			return "", false
		}
		return body.Password, true
	}
	if err := r.ParseForm(); err != nil {
		return "", false
	}
	p := r.PostForm.Get("password")
	return p, p != ""
}

// logout clears the cookie. The cookie itself stays valid until it
// expires (nothing is stored): a copy taken before the logout still works
// that long; changing the password ends every session at once.
func (a *adminUI) logout(w http.ResponseWriter, r *http.Request, _ adminSession) {
	a.setCookie(w, r, "", time.Unix(0, 0), -1)
	a.audit(r, slog.LevelInfo, "logout", "ok")
	writeJSON(w, http.StatusOK, struct{}{})
}

// loginLimiter remembers, per client address, the times of its recent
// failed logins (at most maxFailedLogins each, for at most maxLoginAddrs
// addresses).
type loginLimiter struct {
	mu        sync.Mutex
	fails     map[string]*loginFails
	lastPrune time.Time
}

type loginFails struct {
	at   [maxFailedLogins]int64 // unix nanoseconds, a ring
	next int
	n    int
}

// recent counts the failures within loginWindow before now.
func (f *loginFails) recent(now time.Time) int {
	c := 0
	for i := 0; i < f.n; i++ {
		if now.UnixNano()-f.at[i] < int64(loginWindow) {
			c++
		}
	}
	return c
}

func (l *loginLimiter) init() { l.fails = make(map[string]*loginFails) }

// allow reports whether ip may try a password now.
func (l *loginLimiter) allow(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.fails[ip]; f != nil {
		return f.recent(now) < maxFailedLogins
	}
	if len(l.fails) >= maxLoginAddrs && now.Sub(l.lastPrune) > time.Second {
		l.prune(now)
	}
	return len(l.fails) < maxLoginAddrs
}

func (l *loginLimiter) failed(ip string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.fails[ip]
	if f == nil {
		if len(l.fails) >= maxLoginAddrs {
			return // allow refuses new addresses while full
		}
		f = &loginFails{}
		l.fails[ip] = f
	}
	f.at[f.next] = now.UnixNano()
	f.next = (f.next + 1) % maxFailedLogins
	f.n = min(f.n+1, maxFailedLogins)
	if now.Sub(l.lastPrune) > loginWindow {
		l.prune(now)
	}
}

func (l *loginLimiter) succeeded(ip string) {
	l.mu.Lock()
	delete(l.fails, ip)
	l.mu.Unlock()
}

// prune forgets addresses without a failure within the window. l.mu must
// be held.
func (l *loginLimiter) prune(now time.Time) {
	l.lastPrune = now
	for ip, f := range l.fails {
		if f.recent(now) == 0 {
			delete(l.fails, ip)
		}
	}
}
