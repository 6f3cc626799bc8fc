package herald

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
)

// HTTP streaming: the fallback for networks that break WebSocket upgrades.
//
// GET /stream opens a session whose server-to-client half is the body of
// one long response: chunked, one protocol message per chunk, each followed
// by a newline (newline-delimited JSON). The response head carries the
// session token (header Herald-Session), NODE.KEY: the node that holds the
// stream and a random key only this client knows. After the head the
// connection is handed to the transport engine like an upgraded WebSocket,
// so an idle stream holds no goroutine on the epoll engine, and the same
// queue, slow-client policies, pings and drain apply.
//
// The client-to-server half is POST /stream/send?session=TOKEN&seq=N with
// one or more commands, one per line. Any node may take it: one that does
// not hold the stream hands it to the node named in the token through the
// broker (a directed node query, nodes.go), so no sticky sessions are
// needed. N numbers the client's POSTs from 1; the holding node runs the
// batches in that order whatever order they arrive in, so commands are
// answered in order on the stream, and a batch it has already taken is
// acknowledged again without running twice (a client may retry a POST
// whose answer it did not get). The POST is answered once the holding
// node has taken the batch (204), not once it ran.

const (
	// streamWindow bounds the batches a stream holds that came early or
	// wait to run: a POST past it is answered 429 and may be retried.
	streamWindow = 64
	// maxBatchCommands bounds the commands of one POST.
	maxBatchCommands = 100
	// sessionHeader carries the stream's session token.
	sessionHeader = "Herald-Session"
)

// stream is the state of a session on an HTTP fallback: its key, and the
// command batches taken from POSTs that wait to run in order. A session
// holds one only on those transports (session.stream() is nil on WebSocket).
type stream struct {
	key string

	mu      sync.Mutex
	next    uint64            // the next batch number to take
	early   map[uint64][]byte // batches that came before their turn
	ready   [][]byte          // batches taken, waiting to run
	running bool              // a goroutine runs ready

	sse *sseState // Server-Sent Events only (sse.go)
}

// streams maps the keys of this node's streams to their sessions.
type streams struct {
	mu sync.Mutex
	m  map[string]*session
}

func (t *streams) add(ss *session) {
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[string]*session)
	}
	t.m[ss.stream().key] = ss
	t.mu.Unlock()
}

func (t *streams) remove(ss *session) {
	t.mu.Lock()
	if t.m[ss.stream().key] == ss {
		delete(t.m, ss.stream().key)
	}
	t.mu.Unlock()
}

func (t *streams) get(key string) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[key]
}

func newStreamKey() string {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// serveStream opens an HTTP stream (GET /stream).
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if enc := r.URL.Query().Get("encoding"); enc != "" && enc != "json" {
		http.Error(w, "HTTP streaming speaks JSON only", http.StatusBadRequest)
		return
	}
	s.openStream(w, r, transport.FramingStream, "application/x-ndjson", nil)
}

// openStream answers a stream request with the head of its response and
// hands the connection to the transport engine. start, if not nil, runs
// once the session is registered (SSE connects with it).
func (s *Server) openStream(w http.ResponseWriter, r *http.Request, f transport.Framing, contentType string, start func(ss *session)) {
	if !s.enter() {
		http.Error(w, "server is draining", http.StatusServiceUnavailable)
		return
	}
	defer s.handlers.Done()
	origin := r.Header.Get("Origin")
	ip, no := s.admit(origin, r.Host, func() string { return remoteIP(r) })
	if no != nil {
		http.Error(w, no.reason, no.status)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		s.perIP.release(ip)
		http.Error(w, "streaming needs HTTP/1.1", http.StatusHTTPVersionNotSupported)
		return
	}
	nc, rw, err := hj.Hijack()
	if err != nil {
		s.perIP.release(ip)
		return
	}
	if rw.Reader.Buffered() > 0 {
		// A pipelined request behind this one: nothing may follow a
		// stream's request on its connection.
		s.perIP.release(ip)
		_, _ = io.WriteString(nc, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
		nc.Close()
		return
	}
	if pc, ok := nc.(*prefixConn); ok && len(pc.prefix) == 0 {
		nc = pc.Conn // the socket itself, for the epoll engine
	}
	key := newStreamKey()
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 200 OK\r\nContent-Type: ")
	head.WriteString(contentType)
	head.WriteString("\r\nCache-Control: no-store\r\nX-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n")
	if f == transport.FramingStream {
		head.WriteString(sessionHeader + ": " + s.nodeID + "." + key + "\r\n")
	}
	if origin != "" {
		// admit accepted the origin: let its scripts read the stream.
		head.WriteString("Access-Control-Allow-Origin: " + origin + "\r\nAccess-Control-Allow-Credentials: true\r\nAccess-Control-Expose-Headers: " + sessionHeader + "\r\nVary: Origin\r\n")
	}
	head.WriteString("\r\n")
	_ = nc.SetDeadline(time.Time{})
	var headers map[string]string
	if names := s.forwardedHeaders(); names != nil {
		for k, v := range r.Header {
			if len(v) > 0 {
				forwardHeader(&headers, names, k, v[0])
			}
		}
	}
	ss := newSession(s, protocol.JSON)
	ss.setPeer(ip, headers)
	ss.setStream(&stream{key: key, next: 1})
	if start != nil {
		ss.stream().sse = &sseState{}
	}
	c := transport.NewStreamConn(nc, f, s.topts, ss)
	ss.conn = c
	s.sessions.add(ss)
	s.streams.add(ss) // the key is known once the head is out
	if err := s.engine.Serve(c, nil); err != nil {
		s.streams.remove(ss)
		s.sessions.remove(ss)
		s.perIP.release(ip)
		nc.Close()
		return
	}
	s.metrics.streams.WithLabelValues(f.String()).Inc()
	// The head goes out through the engine, first: nothing else can be
	// queued before, as no one knows the key yet and the sweep and
	// Shutdown leave new sessions alone until then.
	_ = c.EnqueueHead(head.Bytes())
	if start != nil {
		start(ss)
	}
}

// streamSend is a batch of commands for a stream, as one node hands it to
// another.
type streamSend struct {
	Key  string `json:"key"`
	Seq  uint64 `json:"seq"`
	Body []byte `json:"body"`
}

// streamAnswer is the holding node's answer: an HTTP status.
type streamAnswer struct {
	Status int    `json:"status"`
	Error  string `json:"error,omitempty"`
}

// serveStreamSend takes a POST of commands for a stream (POST /stream/send).
func (s *Server) serveStreamSend(w http.ResponseWriter, r *http.Request) {
	if origin := r.Header.Get("Origin"); origin != "" {
		if !s.originOK(origin, r.Host) {
			http.Error(w, "origin not allowed", http.StatusForbidden)
			return
		}
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Set("Access-Control-Allow-Credentials", "true")
		w.Header().Set("Vary", "Origin")
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	node, key, ok := strings.Cut(q.Get("session"), ".")
	if !ok || node == "" || key == "" {
		http.Error(w, "session required", http.StatusBadRequest)
		return
	}
	seq, err := strconv.ParseUint(q.Get("seq"), 10, 64)
	if err != nil || seq == 0 {
		http.Error(w, "seq required: 1, 2, ... per POST", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxMessageSize)))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	if _, err := splitCommands(body, s.cfg.MaxMessageSize); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var ans streamAnswer
	if node == s.nodeID {
		s.metrics.streamPosts.WithLabelValues("local").Inc()
		ans = s.takeBatch(key, seq, body)
	} else {
		s.metrics.streamPosts.WithLabelValues("forwarded").Inc()
		ans = s.forwardBatch(r.Context(), node, &streamSend{Key: key, Seq: seq, Body: body})
	}
	if ans.Status == http.StatusNoContent {
		w.WriteHeader(ans.Status)
		return
	}
	http.Error(w, ans.Error, ans.Status)
}

// forwardBatch hands a batch to the node that holds its stream.
func (s *Server) forwardBatch(ctx context.Context, node string, b *streamSend) streamAnswer {
	body, err := s.askNode(ctx, node, "stream", b)
	if err != nil {
		return streamAnswer{Status: http.StatusServiceUnavailable, Error: "the node holding the stream did not answer"}
	}
	var ans streamAnswer
	if err := json.Unmarshal(body, &ans); err != nil || ans.Status == 0 {
		return streamAnswer{Status: http.StatusBadGateway, Error: "bad answer from the node holding the stream"}
	}
	return ans
}

// takeBatch takes batch seq of the stream key on this node.
func (s *Server) takeBatch(key string, seq uint64, body []byte) streamAnswer {
	ss := s.streams.get(key)
	if ss == nil || ss.state.Load() == stateClosed {
		return streamAnswer{Status: http.StatusNotFound, Error: "no such stream"}
	}
	st := ss.stream()
	st.mu.Lock()
	switch {
	case seq < st.next:
		st.mu.Unlock()
		return streamAnswer{Status: http.StatusNoContent} // taken before: a retry
	case seq >= st.next+streamWindow || len(st.ready)+len(st.early) >= streamWindow:
		st.mu.Unlock()
		return streamAnswer{Status: http.StatusTooManyRequests, Error: "too many batches in flight"}
	case seq > st.next:
		if st.early == nil {
			st.early = make(map[uint64][]byte)
		}
		st.early[seq] = body
		st.mu.Unlock()
		return streamAnswer{Status: http.StatusNoContent}
	}
	st.ready = append(st.ready, body)
	st.next++
	for {
		b, ok := st.early[st.next]
		if !ok {
			break
		}
		delete(st.early, st.next)
		st.ready = append(st.ready, b)
		st.next++
	}
	start := !st.running
	st.running = true
	st.mu.Unlock()
	if start && !s.goTracked(func() { ss.runBatches() }) {
		return streamAnswer{Status: http.StatusServiceUnavailable, Error: "server is stopping"}
	}
	return streamAnswer{Status: http.StatusNoContent}
}

// runBatches runs the stream's ready batches in order, one command at a
// time, like a WebSocket connection's reader; it ends when none is left.
func (ss *session) runBatches() {
	st := ss.stream()
	for {
		st.mu.Lock()
		if len(st.ready) == 0 {
			st.running = false
			st.mu.Unlock()
			return
		}
		b := st.ready[0]
		st.ready[0] = nil
		st.ready = st.ready[1:]
		st.mu.Unlock()
		cmds, _ := splitCommands(b, ss.s.cfg.MaxMessageSize) // checked when taken
		for _, cmd := range cmds {
			if ss.conn.Closing() {
				break
			}
			ss.OnMessage(ss.conn, cmd, false)
		}
	}
}

// errBatch is why a POST body is not a batch of commands.
var errBatch = errors.New("herald: a batch holds 1 to 100 commands, one per line")

// splitCommands splits a POST body into its commands: one per line, empty
// lines ignored. Each must fit max bytes; there must be 1 to
// maxBatchCommands of them. The commands are decoded when they run.
func splitCommands(body []byte, max int) ([][]byte, error) {
	var out [][]byte
	for len(body) > 0 {
		line, rest, _ := bytes.Cut(body, []byte("\n"))
		body = rest
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if len(line) > max {
			return nil, fmt.Errorf("%w: a command is larger than %d bytes", errBatch, max)
		}
		if len(out) == maxBatchCommands {
			return nil, errBatch
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		return nil, errBatch
	}
	return out, nil
}

// askNode asks one node the query kind with params and returns its
// answer: a directed node query, which only the node named answers.
func (s *Server) askNode(ctx context.Context, node, kind string, params any) (json.RawMessage, error) {
	body, err := json.Marshal(params)
	if err != nil {
		return nil, err
	}
	t := &s.nodes
	ch := make(chan nodeAnswer, 1)
	t.mu.Lock()
	t.nextID++
	id := t.nextID
	t.pending[id] = ch
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.pending, id)
		t.mu.Unlock()
	}()
	b, _ := json.Marshal(&control{Op: "query", From: s.nodeID, To: node, ID: id, Query: kind, Body: body})
	if err := s.broker.PublishControl(ctx, b); err != nil {
		return nil, err
	}
	timer := time.NewTimer(s.cfg.QueryTimeout)
	defer timer.Stop()
	for {
		select {
		case a := <-ch:
			if a.node == node {
				return a.body, nil
			}
		case <-timer.C:
			return nil, errors.New("herald: node " + node + " did not answer")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// answerStream answers another node's batch for a stream this node holds.
// Taking a batch never blocks, so it runs on the broker's delivery
// goroutine; only the answer's publish goes to its own goroutine.
func (s *Server) answerStream(c *control) {
	var b streamSend
	ans := streamAnswer{Status: http.StatusBadRequest, Error: "bad batch"}
	if err := json.Unmarshal(c.Body, &b); err == nil {
		if _, err := splitCommands(b.Body, s.cfg.MaxMessageSize); err == nil {
			ans = s.takeBatch(b.Key, b.Seq, b.Body)
		}
	}
	body, _ := json.Marshal(&ans)
	s.goTracked(func() {
		s.broadcast(&control{Op: "answer", From: s.nodeID, To: c.From, ID: c.ID, Body: body})
	})
}
