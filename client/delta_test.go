package client_test

import (
	"context"
	"encoding/json"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
	"github.com/heraldhq/herald/protocol/fossil"
)

// fakeServer plays the server side of one WebSocket connection in the
// JSON encoding: the test reads the client's commands and writes replies
// and pushes.
type fakeServer struct {
	t    *testing.T
	ln   net.Listener
	conn net.Conn
	cmds chan *protocol.Command
	// accept waits for the client's connection, upgraded.
	accept func() net.Conn
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{t: t, ln: ln, cmds: make(chan *protocol.Command, 64)}
	accepted := make(chan net.Conn, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		u := ws.Upgrader{Protocol: func(p []byte) bool { return string(p) == protocol.SubprotocolJSON }}
		if _, err := u.Upgrade(c); err != nil {
			c.Close()
			close(accepted)
			return
		}
		accepted <- c
		for {
			b, err := wsutil.ReadClientText(c)
			if err != nil {
				close(f.cmds)
				return
			}
			var cmd protocol.Command
			if err := json.Unmarshal(b, &cmd); err == nil {
				f.cmds <- &cmd
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		if f.conn != nil {
			f.conn.Close()
		}
		wg.Wait()
	})
	f.accept = func() net.Conn {
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("no connection")
			return nil
		}
	}
	return f
}

func (f *fakeServer) url() string { return "ws://" + f.ln.Addr().String() + "/ws" }

// next returns the client's next command.
func (f *fakeServer) next() *protocol.Command {
	f.t.Helper()
	select {
	case c, ok := <-f.cmds:
		if !ok {
			f.t.Fatal("connection ended")
		}
		return c
	case <-time.After(5 * time.Second):
		f.t.Fatal("no command")
		return nil
	}
}

func (f *fakeServer) send(m any) {
	f.t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := wsutil.WriteServerText(f.conn, b); err != nil {
		f.t.Fatal(err)
	}
}

// TestDeltaThatDoesNotApplyResubscribes: a subscription with deltas
// applies them; a delta whose checksum fails (applied to another source)
// is not delivered, and the subscription unsubscribes and subscribes
// again, recovering from the last offset delivered.
func TestDeltaThatDoesNotApplyResubscribes(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t)
	var (
		mu  sync.Mutex
		got []client.Publication
	)
	done := make(chan *client.Client, 1)
	go func() {
		c, err := client.Dial(context.Background(), f.url(), &client.Options{})
		if err != nil {
			t.Error(err)
			done <- nil
			return
		}
		done <- c
	}()
	f.conn = f.accept()
	connect := f.next()
	f.send(&protocol.ServerMessage{ID: connect.ID, Connect: &protocol.ConnectResult{Client: "c1", Version: "test"}})
	c := <-done
	if c == nil {
		return
	}
	defer c.Close()
	subDone := make(chan error, 1)
	go func() {
		_, err := c.Subscribe(context.Background(), "doc", client.SubscribeOptions{Delta: true, OnPublication: func(p client.Publication) {
			mu.Lock()
			got = append(got, p)
			mu.Unlock()
		}})
		subDone <- err
	}()
	sub := f.next()
	if sub.Subscribe == nil || sub.Subscribe.Delta != protocol.DeltaFossil {
		t.Fatalf("subscribe %+v: want delta fossil", sub.Subscribe)
	}
	f.send(&protocol.ServerMessage{ID: sub.ID, Subscribe: &protocol.SubscribeResult{Recoverable: true, Epoch: "E", Offset: 5, Delta: true}})
	if err := <-subDone; err != nil {
		t.Fatal(err)
	}
	docs := [][]byte{
		[]byte(`{"n":6,"text":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}`),
		[]byte(`{"n":7,"text":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"}`),
		[]byte(`{"n":8,"text":"dddddddddddddddddddddddddddddddddddddddddddddddddd"}`),
	}
	pub := func(off uint64, data []byte, delta bool) {
		f.send(&protocol.ServerMessage{Pub: &protocol.Publication{Channel: "doc", Offset: off, Data: data, Delta: delta}})
	}
	pub(6, docs[0], false)
	pub(7, fossil.Create(docs[0], docs[1]), true)
	// A delta made against another source, which copies a run of it: on
	// docs[1] its checksum fails.
	other := []byte(`{"n":5,"text":"dddddddddddddddddddddddddddddddddddddddddddddddddd"}`)
	pub(8, fossil.Create(other, docs[2]), true)
	unsub := f.next()
	if unsub.Unsubscribe == nil {
		t.Fatalf("after a delta that does not apply: %+v, want unsubscribe", unsub)
	}
	f.send(&protocol.ServerMessage{ID: unsub.ID, Unsubscribe: &protocol.UnsubscribeResult{}})
	re := f.next()
	if re.Subscribe == nil || !re.Subscribe.Recover || re.Subscribe.Offset != 7 || re.Subscribe.Delta != protocol.DeltaFossil {
		t.Fatalf("resubscribe %+v: want recover from offset 7 with delta", re.Subscribe)
	}
	f.send(&protocol.ServerMessage{ID: re.ID, Subscribe: &protocol.SubscribeResult{Recoverable: true, Epoch: "E", Offset: 8, Delta: true,
		WasRecovering: true, Recovered: true, Publications: []*protocol.Publication{{Offset: 8, Data: docs[2]}}}})
	pub(9, docs[0], false)
	pub(10, fossil.Create(docs[0], docs[1]), true)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d publications delivered, want 5", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []struct {
		off  uint64
		data []byte
	}{{6, docs[0]}, {7, docs[1]}, {8, docs[2]}, {9, docs[0]}, {10, docs[1]}}
	if len(got) != len(want) {
		t.Fatalf("%d publications, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].Offset != w.off || string(got[i].Data) != string(w.data) {
			t.Fatalf("publication %d: offset %d data %s, want %d %s", i, got[i].Offset, got[i].Data, w.off, w.data)
		}
	}
}
