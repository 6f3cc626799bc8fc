package herald

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// originPattern is one allowed origin: scheme, and a host that is exact or
// has one leading wildcard label ("*.example.com").
type originPattern struct {
	any      bool
	scheme   string
	host     string // lower case, with port if given
	wildcard bool   // host is the suffix after "*."
}

func compileOrigin(s string) (originPattern, error) {
	if s == "*" {
		return originPattern{any: true}, nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return originPattern{}, fmt.Errorf("origin %q: want scheme://host[:port], optionally with *. before the host", s)
	}
	p := originPattern{scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Host)}
	if rest, ok := strings.CutPrefix(p.host, "*."); ok {
		p.wildcard, p.host = true, rest
	}
	if strings.Contains(p.host, "*") {
		return originPattern{}, fmt.Errorf("origin %q: only one leading *. is allowed", s)
	}
	return p, nil
}

func (p originPattern) match(scheme, host string) bool {
	if p.any {
		return true
	}
	if scheme != p.scheme {
		return false
	}
	if p.wildcard {
		return strings.HasSuffix(host, "."+p.host)
	}
	return host == p.host
}

// originOK checks an Origin header value against the allow-list, or
// against the request's Host when there is no list: the check against
// cross-site WebSocket hijacking.
func (s *Server) originOK(origin, reqHost string) bool {
	if origin == "" {
		return true // not a browser: nothing to hijack
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	if len(s.origins) == 0 {
		return sameHost(host, strings.ToLower(reqHost))
	}
	for _, p := range s.origins {
		if p.match(scheme, host) {
			return true
		}
	}
	return false
}

// sameHost compares host[:port] values, treating a missing port as equal
// to any (browsers omit default ports in Origin).
func sameHost(a, b string) bool {
	if a == b {
		return true
	}
	ah, ap, aerr := net.SplitHostPort(a)
	bh, bp, berr := net.SplitHostPort(b)
	if aerr != nil {
		ah, ap = a, ""
	}
	if berr != nil {
		bh, bp = b, ""
	}
	return ah == bh && (ap == "" || bp == "" || ap == bp)
}
