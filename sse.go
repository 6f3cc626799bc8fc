package herald

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
)

// Server-Sent Events: GET /sse?channel=A&channel=B lets a plain browser
// EventSource follow channels with no SDK. The token comes in the query
// (token=JWT) or the cookie herald_token; without one the connection is
// anonymous. The server connects the session itself, subscribing to the
// channels listed, and every message is an event whose data is the same
// JSON protocol message as on WebSocket: first the connect reply, then
// publication pushes ({"pub":{...}}), join/leave and disconnect pushes.
//
// Recovery rides on the event id. Every publication event, and the
// connect reply, carries in its id the connection's position in each
// channel, in the order the URL lists them: "EPOCH:OFFSET" per channel
// (the epoch query-escaped, the offset in base 36), joined with commas,
// empty for a channel without history. The browser sends the last id it
// got in the Last-Event-ID header when it reconnects (or a page passes it
// as last_event_id), and the server recovers each channel from its
// position: what was missed comes as ordinary publication events, in
// order, before the live ones. Recovered publications are not inside the
// connect reply on SSE. Where recovery is impossible (outside the history
// window, or a changed epoch) the connect reply's subs say so
// (was_recovering without recovered), as on WebSocket.
//
// The stream cannot carry commands (its session has no key): pings are
// SSE comments that need no answer, and only keep proxies from timing the
// stream out.

// sseState is a Server-Sent Events session's channels, in the URL's
// order, and its position in each as far as events are queued.
type sseState struct {
	mu    sync.Mutex
	chans []string
	pos   []ssePos
}

type ssePos struct {
	epoch  string
	offset uint64
	known  bool // the channel keeps history: the position means something
}

// set records the position of ch.
func (st *sseState) set(ch, epoch string, offset uint64) {
	for i, c := range st.chans {
		if c == ch {
			st.pos[i] = ssePos{epoch: epoch, offset: offset, known: true}
			return
		}
	}
}

// advance moves ch's offset (its epoch stays).
func (st *sseState) advance(ch string, offset uint64) (undo func()) {
	for i, c := range st.chans {
		if c == ch && st.pos[i].known {
			old := st.pos[i].offset
			st.pos[i].offset = offset
			return func() { st.pos[i].offset = old }
		}
	}
	return func() {}
}

// id is the event id of the current positions.
func (st *sseState) id() string {
	return formatEventID(st.pos)
}

func formatEventID(pos []ssePos) string {
	var b strings.Builder
	for i, p := range pos {
		if i > 0 {
			b.WriteByte(',')
		}
		if p.known {
			b.WriteString(url.QueryEscape(p.epoch))
			b.WriteByte(':')
			b.WriteString(strconv.FormatUint(p.offset, 36))
		}
	}
	return b.String()
}

// errEventID is why a Last-Event-ID is refused.
var errEventID = errors.New("herald: bad Last-Event-ID")

// parseEventID parses an event id for n channels: one entry per channel,
// "EPOCH:OFFSET" or empty.
func parseEventID(id string, n int) ([]ssePos, error) {
	parts := strings.Split(id, ",")
	if len(parts) != n {
		return nil, fmt.Errorf("%w: %d positions for %d channels", errEventID, len(parts), n)
	}
	out := make([]ssePos, n)
	for i, p := range parts {
		if p == "" {
			continue
		}
		e, o, ok := strings.Cut(p, ":")
		if !ok {
			return nil, fmt.Errorf("%w: position %d has no offset", errEventID, i+1)
		}
		epoch, err := url.QueryUnescape(e)
		if err != nil || epoch == "" {
			return nil, fmt.Errorf("%w: position %d has a bad epoch", errEventID, i+1)
		}
		off, err := strconv.ParseUint(o, 36, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: position %d has a bad offset", errEventID, i+1)
		}
		out[i] = ssePos{epoch: epoch, offset: off, known: true}
	}
	return out, nil
}

// serveSSE opens a Server-Sent Events stream (GET /sse).
func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	chans := q["channel"]
	if len(chans) == 0 || len(chans) > s.cfg.MaxSubscriptions {
		http.Error(w, fmt.Sprintf("list 1 to %d channels: /sse?channel=A&channel=B", s.cfg.MaxSubscriptions), http.StatusBadRequest)
		return
	}
	seen := make(map[string]bool, len(chans))
	for _, ch := range chans {
		if ch == "" || seen[ch] {
			http.Error(w, "channels must be named, and once each", http.StatusBadRequest)
			return
		}
		seen[ch] = true
	}
	var positions []ssePos
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = q.Get("last_event_id")
	}
	if last != "" {
		var err error
		if positions, err = parseEventID(last, len(chans)); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	tok := q.Get("token")
	if tok == "" {
		if c, err := r.Cookie("herald_token"); err == nil {
			tok = c.Value
		}
	}
	subs := make(map[string]*protocol.SubscribeRequest, len(chans))
	for i, ch := range chans {
		req := &protocol.SubscribeRequest{}
		if positions != nil && positions[i].known {
			req.Recover, req.Epoch, req.Offset = true, positions[i].epoch, positions[i].offset
		}
		subs[ch] = req
	}
	s.openStream(w, r, transport.FramingSSE, "text/event-stream", func(ss *session) {
		st := ss.stream().sse
		st.chans = chans
		st.pos = make([]ssePos, len(chans))
		cmd := &protocol.Command{ID: 1, Connect: &protocol.ConnectRequest{Token: tok, Subs: subs}}
		s.goTracked(func() {
			ss.handle(cmd)
			if ss.state.Load() != stateConnected && !ss.conn.Closing() {
				// The connect was refused (the error reply went out):
				// end the stream rather than leave it to the stale
				// timeout.
				ss.disconnectWith(protocol.DisconnectPermissionDenied, "connect refused", 0, false)
			}
		})
	})
}

// activateSSE is activate for a Server-Sent Events session: the reply
// first, with the positions the client starts from in its id, then each
// channel's recovered publications as events of their own, then the live
// ones held meanwhile. A channel's position moves only as its events are
// queued, under the state's lock, so no event's id is ahead of what was
// queued before it.
func (ss *session) activateSSE(ctx context.Context, reply *protocol.ServerMessage, pending []*pendingSub) {
	st := ss.stream().sse
	recovered := make([][]*protocol.Publication, len(pending))
	st.mu.Lock()
	for i, p := range pending {
		res := p.res
		if !res.Recoverable {
			continue
		}
		start := res.Offset
		if pubs := res.Publications; len(pubs) > 0 {
			recovered[i] = pubs
			start = pubs[0].Offset - 1
			res.Publications = nil
		}
		st.set(p.sub.Channel, res.Epoch, start)
	}
	payload, err := ss.codec().AppendServerMessage(nil, reply)
	if err != nil {
		st.mu.Unlock()
		ss.s.log.Error("encode reply", "err", err)
		ss.disconnect(protocol.DisconnectServerError, 0, true)
		return
	}
	err = ss.conn.Enqueue(transport.SSEEvent(nil, st.id(), payload), nil)
	st.mu.Unlock()
	if err != nil {
		if err == transport.ErrQueueFull {
			ss.disconnect(protocol.DisconnectSlow, 0, true)
		}
		return
	}
	for i, p := range pending {
		st.mu.Lock()
		for _, pub := range recovered[i] {
			push, _ := ss.codec().AppendPublicationPush(nil, pub)
			st.advance(p.sub.Channel, pub.Offset)
			if err = ss.conn.Enqueue(transport.SSEEvent(nil, st.id(), push), nil); err != nil {
				break
			}
		}
		st.mu.Unlock()
		if err != nil {
			if err == transport.ErrQueueFull {
				ss.disconnect(protocol.DisconnectSlow, 0, true)
			}
			return
		}
		if !ss.s.hub.Activate(&p.sub.Sub, nil, p.after) {
			return
		}
	}
	info := ss.clientInfo()
	for _, p := range pending {
		ss.join(ctx, p.sub, info)
	}
}

// sseEvent is the hub's SSEEvent: a live publication for a subscriber on
// Server-Sent Events, with the connection's positions in its id.
func sseEvent(s *hub.Sub, pub *protocol.Publication, payload []byte) error {
	ss, ok := s.Conn.Handler().(*session)
	if !ok || ss.stream() == nil || ss.stream().sse == nil {
		return s.Conn.Enqueue(s.Conn.Frame(false, payload), s)
	}
	st := ss.stream().sse
	st.mu.Lock()
	defer st.mu.Unlock()
	undo := st.advance(s.Channel, pub.Offset)
	err := s.Conn.Enqueue(transport.SSEEvent(nil, st.id(), payload), s)
	if err != nil {
		undo()
	}
	return err
}
