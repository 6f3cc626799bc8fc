package herald

import (
	"context"
	"errors"
	"strings"

	"github.com/heraldhq/herald/auth"
	"github.com/heraldhq/herald/protocol"
)

// mayRead checks the right to subscribe to, and read the history and
// presence of, a channel: user-limited channel names first, then a
// subscription token, the namespace's rules, or the subscribe proxy.
func (ss *session) mayRead(ctx context.Context, ns *namespace, ch, subToken string) *protocol.Error {
	if ss.observer() {
		return nil // the admin UI and backends read every channel
	}
	ss.mu.Lock()
	user := ss.user
	ss.mu.Unlock()
	if !userAllowed(ns, ch, user) {
		return protocol.NewError(protocol.ErrPermissionDenied, "channel limited to other users")
	}
	if subToken != "" {
		c, err := ss.s.verifier.Verify(ctx, subToken)
		if errors.Is(err, auth.ErrTokenExpired) {
			return protocol.NewError(protocol.ErrTokenExpired, "subscription token expired")
		}
		if err != nil || c.Channel != ch || c.Client != ss.id || c.Subject != user {
			return protocol.NewError(protocol.ErrPermissionDenied, "invalid subscription token")
		}
		return nil
	}
	if user == "" {
		if ns.AllowAnonymousSubscribe {
			return nil
		}
	} else if ns.AllowSubscribe {
		return nil
	}
	return protocol.NewError(protocol.ErrPermissionDenied, "permission denied")
}

// maySubscribe is mayRead, or the application's answer for namespaces with
// proxy_subscribe.
func (ss *session) maySubscribe(ctx context.Context, ns *namespace, ch, subToken string) *protocol.Error {
	if ss.observer() || !ns.ProxySubscribe || ss.s.cfg.Proxy.SubscribeURL == "" || subToken != "" {
		return ss.mayRead(ctx, ns, ch, subToken)
	}
	ss.mu.Lock()
	user := ss.user
	ss.mu.Unlock()
	if !userAllowed(ns, ch, user) {
		return protocol.NewError(protocol.ErrPermissionDenied, "channel limited to other users")
	}
	if _, err := ss.s.callProxy(ctx, ss.s.cfg.Proxy.SubscribeURL, &proxyRequest{Client: ss.id, User: user, Channel: ch}); err != nil {
		if perr := ss.proxyError(err); perr != nil {
			return perr
		}
		return protocol.NewError(protocol.ErrPermissionDenied, "disconnected")
	}
	return nil
}

// userAllowed applies user-limited channel names: "#" followed by a
// comma-separated user list in any channel, and the whole name after the
// namespace in namespaces with user_limited.
func userAllowed(ns *namespace, ch, user string) bool {
	if i := strings.LastIndexByte(ch, '#'); i >= 0 {
		if !listed(ch[i+1:], user) {
			return false
		}
	}
	if ns.UserLimited {
		rest := ch
		if i := strings.IndexByte(ch, ':'); i >= 0 {
			rest = ch[i+1:]
		}
		if i := strings.IndexByte(rest, '#'); i >= 0 {
			rest = rest[:i]
		}
		return listed(rest, user)
	}
	return true
}

func listed(list, user string) bool {
	if user == "" {
		return false
	}
	for _, u := range strings.Split(list, ",") {
		if u == user {
			return true
		}
	}
	return false
}
