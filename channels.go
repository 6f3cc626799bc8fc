package herald

import (
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/protocol"
)

// namespace is a Namespace compiled for lookups.
type namespace struct {
	Namespace
	policy  hub.Policy
	history bool
	// conflate is the hub's configuration of the conflate policy, shared
	// by the namespace's subscriptions; nil under other policies.
	conflate *hub.Conflate
}

func compileNamespace(ns Namespace) *namespace {
	n := &namespace{Namespace: ns, history: ns.HistorySize > 0 || ns.HistoryTTL > 0}
	if ns.Ack {
		n.setAckDefaults()
	}
	switch ns.SlowPolicy {
	case "drop":
		n.policy = hub.PolicyDrop
	case "conflate":
		n.policy = hub.PolicyConflate
		n.conflate = &hub.Conflate{Key: ns.ConflateKey, Rate: ns.ConflateRate, MaxKeys: ns.ConflateMaxKeys}
	}
	return n
}

func (n *namespace) publishOptions(idemKey string, window time.Duration) broker.PublishOptions {
	return broker.PublishOptions{
		HistorySize:       n.HistorySize,
		HistoryTTL:        n.HistoryTTL,
		IdempotencyKey:    idemKey,
		IdempotencyWindow: window,
	}
}

// channelChar reports whether b may appear in a channel name: ASCII
// letters, digits and _ - : . @ / = , # ! ~ + ;
func channelChar(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("_-:.@/=,#!~+;", b) >= 0
}

func validChannelName(name string, max int) bool {
	if name == "" || len(name) > max {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !channelChar(name[i]) {
			return false
		}
	}
	return true
}

// resolve validates a channel name and returns its namespace.
func (s *Server) resolve(channel string) (*namespace, *protocol.Error) {
	if ns, ok := s.eventsNamespace(channel); ok {
		return ns, nil
	}
	if !validChannelName(channel, s.cfg.MaxChannelLength) {
		return nil, protocol.NewError(protocol.ErrInvalidChannel,
			"invalid channel name: 1 to "+strconv.Itoa(s.cfg.MaxChannelLength)+" characters of A-Z a-z 0-9 _-:.@/=,#!~+;")
	}
	name := ""
	if i := strings.IndexByte(channel, ':'); i >= 0 {
		name = channel[:i]
	}
	if ns, ok := s.namespaces[name]; ok {
		return ns, nil
	}
	if s.cfg.UnknownNamespacesAsDefault {
		if ns, ok := s.namespaces[""]; ok {
			return ns, nil
		}
	}
	return nil, protocol.NewError(protocol.ErrUnknownChannel, "unknown namespace "+strconv.Quote(name))
}
