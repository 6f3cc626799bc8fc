package herald

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
)

// session states
const (
	stateNew int32 = iota
	stateConnected
	stateClosed
)

// session is one client connection's protocol state. The transport calls
// OnMessage for it one message at a time, so commands run in order; the
// sweeper, the hub and cleanup touch it concurrently through the atomics
// and mu.
type session struct {
	s       *Server
	conn    *transport.Conn
	id      string
	created int64

	peer   *peerInfo // nil unless the configuration needs it
	bucket bucket    // command rate; used by the reader only

	state atomic.Int32
	flags sessionFlags
	ci    uint8 // protocol.CodecIndex of the connection's codec
	// userSlot: holds a per-user connection slot (guarded by mu).
	userSlot bool
	// admin: a session of the admin UI's /admin/ws (admin_ws.go). Set
	// before the session starts, then only read.
	admin bool
	// backend: connected with an API key (connect.api_key): like the
	// admin's, a read-only observer of every channel, the events channel
	// included. Guarded by mu.
	backend  bool
	nextPing atomic.Int64 // unix nanos
	pongDue  atomic.Int64 // unix nanos; 0: no ping outstanding
	expires  atomic.Int64 // unix seconds; 0: never

	mu   sync.Mutex
	user string
	info protocol.Data
	subs []*subscription // few per connection: a slice is smaller than a map
}

// peerInfo is what only some sessions need, kept apart so that the
// others (a node holds a session per connection) do without: the
// client's IP (per-IP limits, the connect proxy), forwarded headers (the
// connect proxy; dropped at connect), and the state of a session on an
// HTTP fallback (stream.go). Set before the session starts.
type peerInfo struct {
	ip      string
	headers map[string]string
	stream  *stream
}

// setPeer keeps ip and headers, if any.
func (ss *session) setPeer(ip string, headers map[string]string) {
	if ip != "" || headers != nil {
		if ss.peer == nil {
			ss.peer = &peerInfo{}
		}
		ss.peer.ip, ss.peer.headers = ip, headers
	}
}

// setStream makes ss a session of an HTTP fallback.
func (ss *session) setStream(st *stream) {
	if ss.peer == nil {
		ss.peer = &peerInfo{}
	}
	ss.peer.stream = st
}

// stream is the session's HTTP fallback state, nil on WebSocket.
func (ss *session) stream() *stream {
	if ss.peer == nil {
		return nil
	}
	return ss.peer.stream
}

func (ss *session) ip() string {
	if ss.peer == nil {
		return ""
	}
	return ss.peer.ip
}

// headers are the forwarded headers for the connect proxy (nil after
// connect).
func (ss *session) headers() map[string]string {
	if ss.peer == nil {
		return nil
	}
	return ss.peer.headers
}

// sessionFlags are a session's atomic booleans in one word (a node holds a
// session per connection, so its size counts).
type sessionFlags struct{ v atomic.Uint32 }

const (
	// flagNotified: the refresh push for the current expiry went out.
	flagNotified uint32 = 1 << iota
	// flagProxyExpiry: the connect proxy set the expiry, so the refresh
	// proxy (not the client) extends it.
	flagProxyExpiry
	// flagRefreshing: a refresh proxy call is in flight.
	flagRefreshing
	// flagFirstSub: the session is a wsSession whose first subscription
	// (allocated with it) is not taken yet.
	flagFirstSub
)

func (f *sessionFlags) has(b uint32) bool { return f.v.Load()&b != 0 }

func (f *sessionFlags) set(b uint32, on bool) {
	if on {
		f.v.Or(b)
	} else {
		f.v.And(^b)
	}
}

// setIfClear sets b and reports whether it was clear.
func (f *sessionFlags) setIfClear(b uint32) bool { return f.v.Or(b)&b == 0 }

// clearIfSet clears b and reports whether it was set.
func (f *sessionFlags) clearIfSet(b uint32) bool { return f.v.And(^b)&b != 0 }

func newSession(s *Server, codec protocol.Codec) *session {
	return &session{s: s, ci: uint8(protocol.CodecIndex(codec)), id: newClientID(), created: time.Now().UnixNano()}
}

// wsSession is a WebSocket session, its connection, its client id's bytes
// and its first subscription in one object (416 bytes, a size class of its
// own). Allocated apart, each was a long-lived object among the garbage
// that connecting leaves in its size class (commands, replies, frames):
// after a collection, a span of connections, ids or subscriptions held one
// survivor every few slots, and its pages stayed.
type wsSession struct {
	session
	conn transport.Conn
	id   [clientIDLen]byte
	// sub0 is the first subscription (newSubscription), never reused: the
	// hub and the broker's callbacks may still hold it after it ends.
	sub0 subscription
}

// newWSSession is newSession for a WebSocket session; the caller
// initializes its conn.
func newWSSession(s *Server, codec protocol.Codec) *wsSession {
	w := &wsSession{}
	w.s, w.ci, w.created = s, uint8(protocol.CodecIndex(codec)), time.Now().UnixNano()
	// The id's bytes are never written again: a string of them is as
	// immutable as any.
	id := clientID(&w.id)
	w.session.id = unsafe.String(&id[0], len(id))
	w.session.conn = &w.conn
	w.flags.set(flagFirstSub, true)
	return w
}

// newSubscription returns a zero subscription for ss: the one allocated
// with a WebSocket session the first time, a new one after.
func (ss *session) newSubscription() *subscription {
	if ss.flags.clearIfSet(flagFirstSub) {
		// Only newWSSession sets the flag: ss is the first field of a
		// wsSession.
		return &(*wsSession)(unsafe.Pointer(ss)).sub0
	}
	return new(subscription)
}

func (ss *session) codec() protocol.Codec { return protocol.CodecAt(ss.ci) }

func (ss *session) clientInfo() *protocol.ClientInfo {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return &protocol.ClientInfo{Client: ss.id, User: ss.user, ConnInfo: ss.info}
}

// observer reports whether the session watches channels without being a
// member and without publishing: the admin UI's live tail, and backends
// connected with an API key.
func (ss *session) observer() bool {
	if ss.admin {
		return true
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.backend
}

func (ss *session) presenceSubs() []*subscription {
	if ss.observer() {
		return nil // an admin session is no channel member
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	var out []*subscription
	for _, sub := range ss.subs {
		if sub.ns.Presence {
			out = append(out, sub)
		}
	}
	return out
}

// OnMessage decodes and runs one command.
func (ss *session) OnMessage(_ *transport.Conn, msg []byte, _ bool) {
	m := ss.s.metrics
	m.messagesIn.Inc()
	m.bytesIn.Add(float64(len(msg)))
	// Any traffic proves the client alive.
	ss.pongDue.Store(0)
	if isPong(ss.codec(), msg) {
		return // the most frequent message by far: no decoding
	}
	var cmd protocol.Command
	if err := ss.codec().DecodeCommand(msg, &cmd); err != nil {
		ss.disconnect(protocol.DisconnectBadRequest, 0, true)
		return
	}
	ss.handle(&cmd)
}

var pongJSON, pongMsgpack = func() ([]byte, []byte) {
	cmd := &protocol.Command{Pong: &protocol.Empty{}}
	j, _ := protocol.JSON.AppendCommand(nil, cmd)
	m, _ := protocol.Msgpack.AppendCommand(nil, cmd)
	return j, m
}()

// isPong recognises the canonical encoding of a pong; others are decoded.
func isPong(c protocol.Codec, msg []byte) bool {
	if c.Binary() {
		return string(msg) == string(pongMsgpack)
	}
	return string(msg) == string(pongJSON)
}

// testHookSessionClose, when a test sets it, runs first in OnClose.
var testHookSessionClose atomic.Pointer[func(node string)]

// OnClose starts the session's cleanup. It runs on a transport goroutine,
// which must not block on the broker, so cleanup runs on its own.
func (ss *session) OnClose(_ *transport.Conn, code ws.StatusCode, _ error) {
	if f := testHookSessionClose.Load(); f != nil {
		(*f)(ss.s.nodeID)
	}
	prev := ss.state.Swap(stateClosed)
	if prev == stateClosed {
		return
	}
	if !ss.s.goTracked(func() { ss.cleanup(prev == stateConnected, uint32(code)) }) {
		// Shutdown waits for every session's cleanup before it stops
		// tracking goroutines: this cannot happen.
		ss.s.log.Error("session closed after shutdown; cleanup skipped", "client", ss.id)
	}
}

// cleanup releases what a closed session held. code is its close code
// (why it ended).
func (ss *session) cleanup(wasConnected bool, code uint32) {
	ss.mu.Lock()
	subs := ss.subs
	ss.subs = nil
	user := ss.user
	slot := ss.userSlot
	ss.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reason := protocol.DisconnectReason(code)
	for _, sub := range subs {
		ss.release(ctx, sub, code, reason)
	}
	if slot {
		if err := ss.s.presence.RemovePresence(ctx, userConnsChannel(user), ss.id); err != nil {
			ss.s.log.Warn("release user slot", "err", err)
		}
	}
	if wasConnected {
		last := user != "" && ss.s.sessions.removeUser(user, ss)
		if ss.s.events != nil && !ss.observer() {
			ss.s.events.disconnected(ss, user, last, code, reason)
		}
		if u := ss.s.cfg.Proxy.DisconnectURL; u != "" && !ss.observer() {
			ss.s.notifyProxy(u, &proxyRequest{Client: ss.id, User: user, Code: code, Reason: reason})
		}
	}
	ss.s.perIP.release(ss.ip())
	if ss.stream() != nil {
		ss.s.streams.remove(ss)
	}
	ss.s.sessions.remove(ss)
}

// frame frames an encoded message for the session's connection.
func (ss *session) frame(payload []byte) []byte { return ss.conn.Frame(ss.codec().Binary(), payload) }

// reply queues a reply, or a push, for the connection.
func (ss *session) reply(m *protocol.ServerMessage) {
	payload, err := ss.codec().AppendServerMessage(nil, m)
	if err != nil {
		ss.s.log.Error("encode reply", "err", err)
		ss.disconnect(protocol.DisconnectServerError, 0, true)
		return
	}
	if err := ss.conn.Enqueue(ss.frame(payload), nil); err == transport.ErrQueueFull {
		ss.disconnect(protocol.DisconnectSlow, 0, true)
	}
}

func (ss *session) replyError(id uint64, e *protocol.Error) {
	ss.reply(&protocol.ServerMessage{ID: id, Error: e})
}

// disconnect closes the connection with a Herald code, telling the client
// whether and when to reconnect. discard drops what is still queued (slow
// clients); otherwise the queue flushes first (drain).
func (ss *session) disconnect(code uint32, after time.Duration, discard bool) {
	ss.disconnectWith(code, protocol.DisconnectReason(code), after, discard)
}

func (ss *session) disconnectWith(code uint32, reason string, after time.Duration, discard bool) {
	if code == 0 {
		code = protocol.DisconnectForceNoReconnect
	}
	if reason == "" {
		reason = protocol.DisconnectReason(code)
	}
	push := &protocol.DisconnectPush{Code: code, Reason: reason, Reconnect: protocol.DisconnectReconnects(code)}
	if after > 0 {
		push.ReconnectAfter = uint32(after / time.Millisecond)
	}
	payload, _ := ss.codec().AppendServerMessage(nil, &protocol.ServerMessage{Disconnect: push})
	if !ss.conn.Closed() {
		ss.s.metrics.disconnect(code)
	}
	last := ss.frame(payload)
	if ss.conn.Framing() == transport.FramingSSE && push.ReconnectAfter > 0 {
		// An EventSource reconnects by itself: its retry field makes it
		// wait out the hint, so a drain spreads SSE reconnects too.
		last = transport.SSEEventRetry(nil, push.ReconnectAfter, payload)
	}
	ss.conn.Close(ws.StatusCode(code), reason, last, discard)
}
