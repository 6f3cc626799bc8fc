package herald

import (
	"net"
	"net/http"
	"strings"
)

// Connection admission: the checks every WebSocket handshake passes before
// it is upgraded, on both paths into the server (the listener path of
// Serve, handshake.go, and the net/http path, serveWS): the Origin check
// against cross-site WebSocket hijacking, the per-IP connection limit, and
// the choice of handshake headers forwarded to the connect proxy.

// refusal is why a handshake is refused: the HTTP status and a reason.
type refusal struct {
	status int
	reason string
}

// admit checks a handshake with the given Origin and Host header values.
// remoteIP returns the client's address; it is called only when the per-IP
// limit or the connect proxy needs it. On success ip is that address
// ("" when not needed), and it holds a per-IP slot that the caller must
// release with s.perIP.release when the connection ends or its upgrade
// fails.
func (s *Server) admit(origin, host string, remoteIP func() string) (ip string, no *refusal) {
	if !s.originOK(origin, host) {
		return "", &refusal{http.StatusForbidden, "origin not allowed"}
	}
	if s.perIP.max > 0 || s.cfg.Proxy.ConnectURL != "" {
		ip = remoteIP()
	}
	if !s.perIP.acquire(ip) {
		return "", &refusal{http.StatusTooManyRequests, "too many connections from this address"}
	}
	return ip, nil
}

// forwardedHeaders lists the handshake headers copied for the connect
// proxy: Proxy.ForwardHeaders, by default Cookie and Authorization; none
// without a connect proxy.
func (s *Server) forwardedHeaders() []string {
	if s.cfg.Proxy.ConnectURL == "" {
		return nil
	}
	if s.cfg.Proxy.ForwardHeaders == nil {
		return defaultForwardHeaders
	}
	return s.cfg.Proxy.ForwardHeaders
}

var defaultForwardHeaders = []string{"Cookie", "Authorization"}

// forwardHeader records the handshake header name: value in *into if it is
// one of names (compared without case), under its configured spelling.
func forwardHeader(into *map[string]string, names []string, name, value string) {
	for _, n := range names {
		if strings.EqualFold(name, n) {
			if *into == nil {
				*into = make(map[string]string, len(names))
			}
			(*into)[n] = value
			return
		}
	}
}

// remoteIP is the client's address of a net/http request.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// hostOf is the IP of a connection's remote address.
func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}
