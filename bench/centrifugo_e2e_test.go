package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// fakeCentrifugo is a tiny server speaking the documented frames of
// Centrifugo's JSON client protocol at /connection/websocket and its HTTP
// API (publish, broadcast, info with X-API-Key), so that the Centrifugo
// target is tested without the real binary. Like Centrifugo it sends a
// ping ({}) the client must answer with {}, puts several messages in one
// frame (newline separated) when they queue up, and gives publications of
// channels offsets.
type fakeCentrifugo struct {
	errorf func(format string, args ...any)
	ln     net.Listener
	srv    *http.Server
	url    string
	api    string

	mu       sync.Mutex
	conns    map[*fakeConn]bool
	subs     map[string]map[*fakeConn]bool
	offsets  map[string]uint64
	closed   bool
	wg       sync.WaitGroup
	pongs    atomic.Int64
	commands atomic.Int64
	// rejectAPI makes the API answer every publish with an error.
	rejectAPI atomic.Bool
}

type fakeConn struct {
	nc   net.Conn
	out  chan []byte // messages to write; closed when the connection ends
	done chan struct{}
	once sync.Once
}

func startFakeCentrifugo(t *testing.T) *fakeCentrifugo {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, stop := serveFakeCentrifugo(ln, t.Errorf)
	t.Cleanup(stop)
	return f
}

// serveFakeCentrifugo serves on ln until stop is called.
func serveFakeCentrifugo(ln net.Listener, errorf func(string, ...any)) (f *fakeCentrifugo, stop func()) {
	f = &fakeCentrifugo{errorf: errorf, ln: ln, conns: map[*fakeConn]bool{},
		subs: map[string]map[*fakeConn]bool{}, offsets: map[string]uint64{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/connection/websocket", f.serveWS)
	mux.HandleFunc("/api/", f.serveAPI)
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("{}")) })
	f.srv = &http.Server{Handler: mux}
	served := make(chan struct{})
	go func() { defer close(served); _ = f.srv.Serve(ln) }()
	f.url = "ws://" + ln.Addr().String() + "/connection/websocket"
	f.api = "http://" + ln.Addr().String()
	return f, func() {
		_ = f.srv.Close() // listener and API connections
		<-served
		f.mu.Lock()
		f.closed = true
		for c := range f.conns {
			c.close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	}
}

func (c *fakeConn) close() {
	c.once.Do(func() {
		close(c.done)
		_ = c.nc.Close()
	})
}

func (f *fakeCentrifugo) serveWS(w http.ResponseWriter, r *http.Request) {
	u := ws.HTTPUpgrader{Protocol: func(p string) bool { return p == centrifugoSubprotocol }}
	nc, _, _, err := u.Upgrade(r, w)
	if err != nil {
		return
	}
	c := &fakeConn{nc: nc, out: make(chan []byte, 1024), done: make(chan struct{})}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		nc.Close()
		return
	}
	f.conns[c] = true
	f.wg.Add(2)
	f.mu.Unlock()
	go f.writeLoop(c)
	go f.readLoop(c)
}

// writeLoop writes queued messages, joining those that are waiting into
// one frame as Centrifugo does.
func (f *fakeCentrifugo) writeLoop(c *fakeConn) {
	defer f.wg.Done()
	var frame []byte
	for {
		var msg []byte
		select {
		case msg = <-c.out:
		case <-c.done:
			return
		}
		frame = append(frame[:0], msg...)
	more:
		for len(frame) < 16<<10 {
			select {
			case msg = <-c.out:
				frame = append(append(frame, '\n'), msg...)
			default:
				break more
			}
		}
		if err := wsutil.WriteServerText(c.nc, frame); err != nil {
			c.close()
			return
		}
	}
}

// send queues one message; a connection that cannot keep up is closed
// (3008 in Centrifugo: slow).
func (f *fakeCentrifugo) send(c *fakeConn, msg []byte) {
	select {
	case c.out <- msg:
	case <-c.done:
	default:
		f.errorf("fake centrifugo: outbound queue full")
		c.close()
	}
}

type fakeCommand struct {
	ID        uint64           `json:"id"`
	Connect   *json.RawMessage `json:"connect"`
	Subscribe *struct {
		Channel string `json:"channel"`
	} `json:"subscribe"`
	Publish *struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	} `json:"publish"`
}

func (f *fakeCentrifugo) readLoop(c *fakeConn) {
	defer f.wg.Done()
	defer func() {
		c.close()
		f.mu.Lock()
		delete(f.conns, c)
		for _, m := range f.subs {
			delete(m, c)
		}
		f.mu.Unlock()
	}()
	connected := false
	for {
		data, op, err := wsutil.ReadClientData(c.nc)
		if err != nil {
			return
		}
		if op != ws.OpText {
			f.errorf("fake centrifugo: %v frame", op)
			return
		}
		for _, line := range bytes.Split(data, []byte("\n")) {
			var cmd fakeCommand
			if err := json.Unmarshal(line, &cmd); err != nil {
				f.errorf("fake centrifugo: bad command %q: %v", line, err)
				return
			}
			f.commands.Add(1)
			id := strconv.FormatUint(cmd.ID, 10)
			switch {
			case cmd.ID == 0 && cmd.Connect == nil && cmd.Subscribe == nil && cmd.Publish == nil:
				f.pongs.Add(1) // {}: the answer to a ping
			case cmd.Connect != nil:
				connected = true
				f.send(c, []byte(`{"id":`+id+`,"connect":{"client":"fake-`+id+`","version":"0.0.0","ping":25,"pong":true}}`))
				f.send(c, []byte(`{}`)) // a ping right away: the client must answer
			case !connected:
				_ = ws.WriteFrame(c.nc, ws.NewCloseFrame(ws.NewCloseFrameBody(3501, "bad request")))
				return
			case cmd.Subscribe != nil:
				f.mu.Lock()
				m := f.subs[cmd.Subscribe.Channel]
				if m == nil {
					m = map[*fakeConn]bool{}
					f.subs[cmd.Subscribe.Channel] = m
				}
				m[c] = true
				f.mu.Unlock()
				f.send(c, []byte(`{"id":`+id+`,"subscribe":{}}`))
				// Something the bench ignores.
				f.send(c, []byte(`{"push":{"channel":"`+cmd.Subscribe.Channel+`","join":{"info":{"user":"","client":"x"}}}}`))
			case cmd.Publish != nil:
				// Client publications carry info, between data and offset.
				off := f.publish(cmd.Publish.Channel, cmd.Publish.Data, `"info":{"user":"","client":"fake-pub"}`)
				f.send(c, []byte(`{"id":`+id+`,"publish":{"offset":`+strconv.FormatUint(off, 10)+`}}`))
			default:
				f.send(c, []byte(`{"id":`+id+`,"error":{"code":104,"message":"method not found"}}`))
			}
		}
	}
}

// publish assigns the channel's next offset and queues the publication to
// every subscriber, in offset order.
func (f *fakeCentrifugo) publish(channel string, data []byte, info string) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.offsets[channel]++
	off := f.offsets[channel]
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"push":{"channel":"%s","pub":{"data":%s`, channel, data)
	if info != "" {
		b.WriteString("," + info)
	}
	fmt.Fprintf(&b, `,"offset":%d}}}`, off)
	msg := b.Bytes()
	for c := range f.subs[channel] {
		f.send(c, msg)
	}
	return off
}

func (f *fakeCentrifugo) serveAPI(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-API-Key") != "k" {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var req struct {
		Channel  string          `json:"channel"`
		Channels []string        `json:"channels"`
		Data     json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	switch r.URL.Path {
	case "/api/info":
		f.mu.Lock()
		n := len(f.conns)
		f.mu.Unlock()
		fmt.Fprintf(w, `{"result":{"nodes":[{"uid":"x","name":"fake","num_clients":%d}]}}`, n)
	case "/api/publish":
		if f.rejectAPI.Load() {
			fmt.Fprint(w, `{"error":{"code":102,"message":"unknown channel"}}`)
			return
		}
		off := f.publish(req.Channel, req.Data, "")
		fmt.Fprintf(w, `{"result":{"offset":%d,"epoch":"fake"}}`, off)
	case "/api/broadcast":
		var b bytes.Buffer
		b.WriteString(`{"result":{"responses":[`)
		for i, ch := range req.Channels {
			if i > 0 {
				b.WriteByte(',')
			}
			if f.rejectAPI.Load() && i%2 == 1 {
				b.WriteString(`{"error":{"code":102,"message":"unknown channel"}}`)
				continue
			}
			fmt.Fprintf(&b, `{"result":{"offset":%d,"epoch":"fake"}}`, f.publish(ch, req.Data, ""))
		}
		b.WriteString(`]}}`)
		_, _ = w.Write(b.Bytes())
	default:
		http.NotFound(w, r)
	}
}

func centrifugoArgs(f *fakeCentrifugo, args ...string) []string {
	return append([]string{"--target", "centrifugo", "--server-pid", strconv.Itoa(os.Getpid()), "--settle", "1s"}, args...)
}

func TestCentrifugoFanoutEndToEnd(t *testing.T) {
	f := startFakeCentrifugo(t)
	rep := runBench(t, f.url, centrifugoArgs(f, "--scenario", "fanout", "--conns", "20", "--channels", "2",
		"--rate", "0", "--messages", "300", "--duration", "20s", "--inflight", "4", "--window", "20")...)
	checkDelivery(t, rep, 300, 10)
	if rep.Target != "centrifugo" || rep.Params.API != f.api {
		t.Errorf("target %q api %q", rep.Target, rep.Params.API)
	}
	if rep.Connect.Connected != 20 || rep.Server.NumClients != 20 {
		t.Errorf("connected %d, server reports %d clients", rep.Connect.Connected, rep.Server.NumClients)
	}
	if rep.Server.CPU == nil || rep.Server.RSS == 0 {
		t.Errorf("no server figures from --server-pid: %+v", rep.Server)
	}
	// Every connection got a ping right after connecting and answered it.
	if n := f.pongs.Load(); n < 20 {
		t.Errorf("%d pongs from 20 connections", n)
	}
}

func TestCentrifugoClientPublishAndBroadcast(t *testing.T) {
	f := startFakeCentrifugo(t)
	rep := runBench(t, f.url, centrifugoArgs(f, "--scenario", "fanout", "--conns", "12", "--channels", "3",
		"--rate", "400", "--messages", "60", "--duration", "20s", "--publish", "client", "--inflight", "2")...)
	checkDelivery(t, rep, 60, 4)

	rep = runBench(t, f.url, centrifugoArgs(f, "--scenario", "channels", "--conns", "30",
		"--rate", "0", "--messages", "150", "--batch", "7", "--duration", "20s")...)
	checkDelivery(t, rep, 150, 1)
	if rep.Publish.Requests >= 150 {
		t.Errorf("%d requests for 150 messages in batches of 7", rep.Publish.Requests)
	}
}

func TestCentrifugoAPIErrors(t *testing.T) {
	f := startFakeCentrifugo(t)
	f.rejectAPI.Store(true)
	o, err := parseFlags(append([]string{"--url", f.url, "--key", "k", "--quiet"}, centrifugoArgs(f, "--scenario", "channels", "--conns", "8",
		"--rate", "0", "--messages", "16", "--batch", "4", "--duration", "3s", "--drain", "1s")...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	rep, err := run(ctx, o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// Every other channel of each broadcast fails: half the messages.
	if p, d := rep.Publish, rep.Delivery; p.Failed != 8 || p.Messages != 8 || d.Expected != 8 || d.Received != 8 || d.Lost != 0 {
		t.Errorf("publish %+v delivery %+v", p, d)
	}
}

func TestCentrifugoIdleAndConnect(t *testing.T) {
	f := startFakeCentrifugo(t)
	rep := runBench(t, f.url, centrifugoArgs(f, "--scenario", "idle", "--conns", "25", "--duration", "1500ms", "--settle", "200ms")...)
	if rep.Idle == nil || rep.Idle.Lost != 0 || len(rep.Idle.RSSSamples) == 0 || rep.Connect.Connected != 25 {
		t.Errorf("idle: %+v %+v", rep.Idle, rep.Connect)
	}
	rep = runBench(t, f.url, centrifugoArgs(f, "--scenario", "connect", "--conns", "25", "--procs", "2")...)
	if c := rep.Connect; c.Connected != 25 || c.Failed != 0 || c.Rate <= 0 || c.Latency.Count != 25 {
		t.Errorf("connect: %+v", c)
	}
	// A wrong key: the run still works, without the API's client count.
	api := newAPIClient(f.api, "wrong", 1)
	defer api.Close()
	if _, err := (centrifugoTarget{}).Info(t.Context(), api); err == nil {
		t.Errorf("info with a wrong key succeeded")
	}
}
