package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldhq/herald/protocol"
)

// Client is a connection to a Herald server that reconnects by itself.
type Client struct {
	url   string
	opts  Options
	codec protocol.Codec
	op    ws.OpCode

	nextID atomic.Uint64

	mu          sync.Mutex
	state       State
	conn        *wsConn
	connected   chan struct{} // closed while connected; replaced on disconnect
	subs        map[string]*Subscription
	id          string
	token       string
	err         error // why the client closed
	closed      chan struct{}
	closeOnce   sync.Once
	wg          sync.WaitGroup
	onServerPub func(Publication)
	onServerSub func(SubscribedEvent)

	posts         *http.Client // HTTP streaming's POSTs, made on first use
	onServerUnsub func(UnsubscribedEvent)
	onMessage     func([]byte)
	// serverSubs holds each server-side subscription (channels the server
	// subscribed the connection to: the token's channels claim, the server
	// API's subscribe) and its position, so that the next connect asks for
	// them again and recovers what was missed in between.
	serverSubs map[string]serverSub

	// Acknowledgements batched for the next ack command (ack.go).
	ackMu    sync.Mutex
	acks     map[string]uint64
	ackCount int
	ackTimer *time.Timer
}

// wsConn is one WebSocket connection and its reader.
type wsConn struct {
	nc      net.Conn
	wmu     sync.Mutex
	pmu     sync.Mutex
	pending map[uint64]*call
	done    chan struct{} // closed when the reader exits
	ping    atomic.Int64  // server ping interval, nanoseconds
	discon  atomic.Pointer[protocol.DisconnectPush]
	readErr error         // set before done closes
	refresh chan struct{} // the server asked for a token refresh
	hs      *httpStream   // HTTP streaming (stream.go); nil on WebSocket
}

type call struct {
	ch     chan *protocol.ServerMessage
	inline func(*protocol.ServerMessage) // runs on the reader, before ch
}

// Dial connects to url (ws:// or wss://, path /ws) and returns a client
// that stays connected until Close or a terminal disconnect. The first
// attempt is made now: its failure is returned.
func Dial(ctx context.Context, url string, opts *Options) (*Client, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	o = o.withDefaults()
	switch o.Transport {
	case "", TransportWebSocket:
	case TransportHTTPStream:
		if o.Binary {
			return nil, errors.New("herald client: HTTP streaming speaks JSON only")
		}
	default:
		return nil, fmt.Errorf("herald client: unknown transport %q", o.Transport)
	}
	c := &Client{
		url: url, opts: o, codec: protocol.JSON, op: ws.OpText,
		connected: make(chan struct{}), subs: make(map[string]*Subscription),
		serverSubs: make(map[string]serverSub),
		token:      o.Token, closed: make(chan struct{}),
		onServerPub: o.OnServerPublication, onServerSub: o.OnServerSubscribed,
		onServerUnsub: o.OnServerUnsubscribed, onMessage: o.OnMessage,
	}
	if o.Binary {
		c.codec, c.op = protocol.Msgpack, ws.OpBinary
	}
	conn, err := c.connect(ctx)
	if err != nil {
		c.setState(StateClosed)
		return nil, err
	}
	c.wg.Add(1)
	go c.run(conn)
	return c, nil
}

// ID returns the client id of the current connection.
func (c *Client) ID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.id
}

// State returns the connection state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Err returns why the client closed (nil while open or after Close).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done is closed when the client has closed for good.
func (c *Client) Done() <-chan struct{} { return c.closed }

func (c *Client) setState(s State) {
	c.mu.Lock()
	changed := c.state != s && c.state != StateClosed
	if changed {
		c.state = s
	}
	c.mu.Unlock()
	if changed && c.opts.OnState != nil {
		c.opts.OnState(s)
	}
}

// Close disconnects and stops reconnecting. It waits for the client's
// goroutines.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.mu.Lock()
		conn := c.conn
		c.mu.Unlock()
		if conn != nil {
			conn.close(ws.StatusNormalClosure)
		}
	})
	c.wg.Wait()
	c.stopAcks()
	c.mu.Lock()
	if c.posts != nil {
		c.posts.CloseIdleConnections()
	}
	c.mu.Unlock()
	c.setState(StateClosed)
	return nil
}

func (c *Client) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// run keeps the client connected: serve a connection until it ends, wait
// the backoff, dial again.
func (c *Client) run(conn *wsConn) {
	defer c.wg.Done()
	attempt := 0
	var hint time.Duration
	for {
		if conn != nil {
			ev := c.serve(conn)
			if c.opts.OnDisconnect != nil {
				c.opts.OnDisconnect(ev)
			}
			if c.isClosed() {
				return
			}
			if ev.Code == protocol.DisconnectTokenExpired && c.opts.GetToken != nil {
				// A refresh was missed (sleep, network): a fresh token gets
				// a new connection, which recovers the subscriptions.
				if tok, err := c.freshToken(); err == nil {
					c.mu.Lock()
					c.token = tok
					c.mu.Unlock()
					ev.Reconnect = true
				}
			}
			if !ev.Reconnect {
				c.terminate(&TerminalError{Code: ev.Code, Reason: ev.Reason})
				return
			}
			hint = ev.ReconnectAfter
			attempt = 0
			conn = nil
		}
		c.setState(StateConnecting)
		wait := backoff(attempt, c.opts.ReconnectBase, c.opts.ReconnectMax)
		if hint > wait {
			wait = hint
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-c.closed:
			t.Stop()
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-c.closed:
				cancel()
			case <-ctx.Done():
			}
		}()
		var err error
		conn, err = c.connect(ctx)
		cancel()
		if err != nil {
			var te *TerminalError
			if errors.As(err, &te) {
				c.terminate(err)
				return
			}
			if c.isClosed() {
				return
			}
			attempt++
			hint = 0
			conn = nil
		}
	}
}

func (c *Client) freshToken() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.DialTimeout)
	defer cancel()
	return c.opts.GetToken(ctx)
}

// backoff returns a full-jitter delay for attempt n: uniform in
// [0, min(limit, base*2^n)).
func backoff(n int, base, limit time.Duration) time.Duration {
	d := base
	for i := 0; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d)))
}

func (c *Client) terminate(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
	c.closeOnce.Do(func() { close(c.closed) })
	c.setState(StateClosed)
}

// connect dials, sends connect, and resubscribes every subscription.
func (c *Client) connect(ctx context.Context) (*wsConn, error) {
	c.setState(StateConnecting)
	ctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	var conn *wsConn
	if c.opts.Transport == TransportHTTPStream {
		nc, hs, err := c.dialStream(ctx)
		if err != nil {
			return nil, err
		}
		conn = &wsConn{nc: nc, hs: hs, pending: make(map[uint64]*call), done: make(chan struct{}), refresh: make(chan struct{}, 1)}
		c.wg.Add(2)
		go c.read(conn)
		go c.sender(conn)
	} else {
		d := ws.Dialer{Protocols: []string{c.codec.Name()}, Header: ws.HandshakeHeaderHTTP(c.opts.Header)}
		nc, br, _, err := d.Dial(ctx, c.url)
		if err != nil {
			return nil, err
		}
		if br != nil {
			ws.PutReader(br) // the server does not speak first
		}
		conn = &wsConn{nc: nc, pending: make(map[uint64]*call), done: make(chan struct{}), refresh: make(chan struct{}, 1)}
		c.wg.Add(1)
		go c.read(conn)
	}

	c.mu.Lock()
	token := c.token
	positions := c.serverPositions()
	c.mu.Unlock()
	refreshed := false
	for {
		req := &protocol.ConnectRequest{Token: token, APIKey: c.opts.APIKey, Name: c.opts.Name, Subs: positions}
		m, err := c.roundTrip(ctx, conn, &protocol.Command{Connect: req}, func(m *protocol.ServerMessage) {
			if m.Connect != nil {
				c.applyServerSubs(conn, m.Connect.Subs)
			}
		})
		if err != nil {
			var pe *protocol.Error
			if errors.As(err, &pe) && pe.Code == protocol.ErrTokenExpired && c.opts.GetToken != nil && !refreshed {
				refreshed = true
				if token, err = c.opts.GetToken(ctx); err == nil {
					c.mu.Lock()
					c.token = token
					c.mu.Unlock()
					continue
				}
			}
			if errors.As(err, &pe) && pe.Code != protocol.ErrTokenExpired && positions != nil {
				// The server refused a position (for example a token
				// that no longer grants the channel): connect again on
				// this socket without them; server-side subscriptions
				// then start from now.
				positions = nil
				continue
			}
			conn.close(ws.StatusNormalClosure)
			<-conn.done
			if d := conn.discon.Load(); d != nil && !d.Reconnect {
				return nil, &TerminalError{Code: d.Code, Reason: d.Reason}
			}
			if errors.As(err, &pe) && pe.Code == protocol.ErrTokenExpired {
				return nil, &TerminalError{Code: protocol.DisconnectTokenExpired, Reason: "token expired"}
			}
			return nil, err
		}
		res := m.Connect
		if res == nil {
			conn.close(ws.StatusProtocolError)
			return nil, errors.New("herald client: connect reply without result")
		}
		conn.ping.Store(int64(res.Ping) * int64(time.Second))
		_ = conn.nc.SetReadDeadline(c.deadline(conn))
		c.mu.Lock()
		if c.isClosed() {
			c.mu.Unlock()
			conn.close(ws.StatusNormalClosure)
			return nil, ErrClosed
		}
		c.id = res.Client
		c.conn = conn
		c.state = StateConnected
		close(c.connected)
		subs := make([]*Subscription, 0, len(c.subs))
		for _, s := range c.subs {
			subs = append(subs, s)
		}
		c.mu.Unlock()
		if c.opts.OnState != nil {
			c.opts.OnState(StateConnected)
		}
		if res.Expires {
			c.wg.Add(1)
			go c.refreshLoop(conn, time.Duration(res.TTL)*time.Second)
		}
		for _, s := range subs {
			s.resubscribe(conn)
		}
		return conn, nil
	}
}

// serve waits for the connection to end and reports how it ended.
func (c *Client) serve(conn *wsConn) DisconnectEvent {
	<-conn.done
	c.mu.Lock()
	if c.conn == conn {
		c.conn = nil
		c.connected = make(chan struct{})
		if c.state != StateClosed {
			c.state = StateDisconnected
		}
	}
	c.mu.Unlock()
	if c.opts.OnState != nil && !c.isClosed() {
		c.opts.OnState(StateDisconnected)
	}
	for _, s := range c.subscriptions() {
		s.disconnected()
	}
	if c.isClosed() {
		return DisconnectEvent{Code: uint32(ws.StatusNormalClosure), Reason: "client closed"}
	}
	if d := conn.discon.Load(); d != nil {
		return DisconnectEvent{Code: d.Code, Reason: d.Reason, Reconnect: d.Reconnect, ReconnectAfter: time.Duration(d.ReconnectAfter) * time.Millisecond}
	}
	var ce wsutil.ClosedError
	if errors.As(conn.readErr, &ce) {
		code := uint32(ce.Code)
		return DisconnectEvent{Code: code, Reason: ce.Reason, Reconnect: protocol.DisconnectReconnects(code)}
	}
	reason := "connection lost"
	if conn.readErr != nil {
		reason += ": " + conn.readErr.Error()
	}
	return DisconnectEvent{Code: uint32(ws.StatusAbnormalClosure), Reason: reason, Reconnect: true}
}

func (c *Client) subscriptions() []*Subscription {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Subscription, 0, len(c.subs))
	for _, s := range c.subs {
		out = append(out, s)
	}
	return out
}

// refreshLoop refreshes the token over the open connection before it
// expires, if the application gave GetToken.
func (c *Client) refreshLoop(conn *wsConn, ttl time.Duration) {
	defer c.wg.Done()
	for c.opts.GetToken != nil {
		// Refresh a fifth of the lifetime early (at most 10s early), and not
		// in a tight loop whatever the server says.
		wait := max(ttl-min(ttl/5, 10*time.Second), 500*time.Millisecond)
		t := time.NewTimer(wait)
		select {
		case <-conn.done:
			t.Stop()
			return
		case <-conn.refresh:
			t.Stop()
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.DialTimeout)
		token, err := c.opts.GetToken(ctx)
		if err != nil {
			cancel()
			return
		}
		m, err := c.roundTrip(ctx, conn, &protocol.Command{Refresh: &protocol.RefreshRequest{Token: token}}, nil)
		cancel()
		if err != nil || m.Refresh == nil || !m.Refresh.Expires {
			return
		}
		c.mu.Lock()
		c.token = token
		c.mu.Unlock()
		ttl = time.Duration(m.Refresh.TTL) * time.Second
	}
}

func (c *Client) deadline(conn *wsConn) time.Time {
	p := time.Duration(conn.ping.Load())
	if p == 0 {
		return time.Now().Add(c.opts.DialTimeout)
	}
	return time.Now().Add(p + c.opts.PingMargin)
}

// read is the connection's reader: replies go to their callers, pushes to
// subscriptions, in order.
func (c *Client) read(conn *wsConn) {
	defer c.wg.Done()
	defer func() {
		conn.nc.Close()
		if conn.hs != nil {
			conn.hs.body.Close()
			conn.hs.cancel()
		}
		conn.pmu.Lock()
		for id, cl := range conn.pending {
			close(cl.ch)
			delete(conn.pending, id)
		}
		conn.pmu.Unlock()
		close(conn.done)
	}()
	for {
		_ = conn.nc.SetReadDeadline(c.deadline(conn))
		var data []byte
		var err error
		if conn.hs != nil {
			data, err = conn.hs.readMessage()
		} else {
			data, _, err = wsutil.ReadServerData(conn.nc)
		}
		if err != nil {
			conn.readErr = err
			return
		}
		var m protocol.ServerMessage
		if err := c.codec.DecodeServerMessage(data, &m); err != nil {
			conn.readErr = err
			return
		}
		if m.ID != 0 {
			conn.pmu.Lock()
			cl := conn.pending[m.ID]
			delete(conn.pending, m.ID)
			conn.pmu.Unlock()
			if cl != nil {
				if cl.inline != nil {
					cl.inline(&m)
				}
				cl.ch <- &m
			}
			continue
		}
		c.push(conn, &m)
	}
}

func (c *Client) push(conn *wsConn, m *protocol.ServerMessage) {
	switch {
	case m.Ping != nil:
		b, _ := c.codec.AppendCommand(nil, &protocol.Command{Pong: &protocol.Empty{}})
		_ = conn.write(c.op, b)
	case m.Pub != nil:
		c.mu.Lock()
		s := c.subs[m.Pub.Channel]
		f := c.onServerPub
		verdict := offsetNext
		if s == nil {
			verdict = c.serverPublication(m.Pub)
		}
		c.mu.Unlock()
		switch {
		case s != nil:
			s.onPublication(conn, m.Pub)
		case verdict == offsetGap:
			// Publications of a server-side subscription were skipped
			// (for example dropped for a slow client): a new connection
			// recovers them from the position held.
			conn.nc.Close()
		case verdict == offsetNext && f != nil:
			f(toPublication(m.Pub))
		}
	case m.Join != nil, m.Leave != nil:
		ev := m.Join
		if ev == nil {
			ev = m.Leave
		}
		c.mu.Lock()
		s := c.subs[ev.Channel]
		c.mu.Unlock()
		if s != nil {
			s.onPresence(m.Join != nil, ev.Info)
		}
	case m.PresenceStale != nil:
		c.mu.Lock()
		s := c.subs[m.PresenceStale.Channel]
		c.mu.Unlock()
		if s != nil {
			s.onPresenceStale()
		}
	case m.PresenceSync != nil:
		c.mu.Lock()
		s := c.subs[m.PresenceSync.Channel]
		c.mu.Unlock()
		if s != nil {
			s.onPresenceSync(m.PresenceSync.Presence)
		}
	case m.Unsubscribe != nil:
		c.mu.Lock()
		s := c.subs[m.Unsubscribe.Channel]
		c.mu.Unlock()
		if s != nil {
			s.serverUnsubscribed(conn, m.Unsubscribe)
		} else {
			c.serverUnsubscribed(m.Unsubscribe)
		}
	case m.Subscribe != nil && m.Subscribe.Channel != "":
		c.serverSubscribed(conn, m.Subscribe.Channel, m.Subscribe)
	case m.Message != nil:
		c.message(m.Message)
	case m.Disconnect != nil:
		conn.discon.Store(m.Disconnect)
	case m.Refresh != nil:
		select {
		case conn.refresh <- struct{}{}:
		default:
		}
	}
}

func (w *wsConn) write(op ws.OpCode, payload []byte) error {
	if w.hs != nil {
		return w.hs.send(payload)
	}
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_ = w.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return wsutil.WriteClientMessage(w.nc, op, payload)
}

func (w *wsConn) close(code ws.StatusCode) {
	if w.hs != nil {
		w.nc.Close() // the server sees the stream end
		return
	}
	w.wmu.Lock()
	_ = w.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = ws.WriteFrame(w.nc, ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(code, ""))))
	w.wmu.Unlock()
	w.nc.Close()
}

// roundTrip sends cmd on conn and waits for its reply. inline, if set,
// runs on the reader goroutine before any later message is processed.
func (c *Client) roundTrip(ctx context.Context, conn *wsConn, cmd *protocol.Command, inline func(*protocol.ServerMessage)) (*protocol.ServerMessage, error) {
	cmd.ID = c.nextID.Add(1)
	b, err := c.codec.AppendCommand(nil, cmd)
	if err != nil {
		return nil, err
	}
	cl := &call{ch: make(chan *protocol.ServerMessage, 1), inline: inline}
	conn.pmu.Lock()
	select {
	case <-conn.done:
		conn.pmu.Unlock()
		return nil, ErrDisconnected
	default:
	}
	conn.pending[cmd.ID] = cl
	conn.pmu.Unlock()
	if err := conn.write(c.op, b); err != nil {
		conn.pmu.Lock()
		delete(conn.pending, cmd.ID)
		conn.pmu.Unlock()
		return nil, ErrDisconnected
	}
	select {
	case m, ok := <-cl.ch:
		if !ok {
			return nil, ErrDisconnected
		}
		if m.Error != nil {
			return m, m.Error
		}
		return m, nil
	case <-ctx.Done():
		conn.pmu.Lock()
		delete(conn.pending, cmd.ID)
		conn.pmu.Unlock()
		return nil, ctx.Err()
	}
}

// waitConn returns the current connection, waiting for one if needed.
func (c *Client) waitConn(ctx context.Context) (*wsConn, error) {
	for {
		c.mu.Lock()
		if c.state == StateClosed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		conn, ready := c.conn, c.connected
		c.mu.Unlock()
		if conn != nil {
			return conn, nil
		}
		select {
		case <-ready:
		case <-c.closed:
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// call sends a command on the current connection (waiting for one) and
// returns the reply.
func (c *Client) call(ctx context.Context, cmd *protocol.Command) (*protocol.ServerMessage, error) {
	conn, err := c.waitConn(ctx)
	if err != nil {
		return nil, err
	}
	return c.roundTrip(ctx, conn, cmd, nil)
}
