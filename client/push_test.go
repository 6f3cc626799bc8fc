package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

// Server pushes: the server API's subscribe, unsubscribe and send reach
// the SDK as server-side subscriptions, ends of subscriptions and
// messages.

var codecs = []struct {
	name   string
	binary bool
}{{"json", false}, {"msgpack", true}}

// withPrivate adds the namespace "private", where clients may not
// subscribe by themselves: only the server API subscribes them.
func withPrivate(cfg *herald.Config) {
	cfg.Namespaces = append(cfg.Namespaces, herald.Namespace{Name: "private", HistorySize: 100})
}

// recorder keeps what a client's handlers receive.
type recorder struct {
	mu           sync.Mutex
	pubs         []string // "channel data@offset"
	subscribed   []client.SubscribedEvent
	unsubscribed []client.UnsubscribedEvent
	messages     [][]byte
	connected    int
}

func (r *recorder) options(o *client.Options) *client.Options {
	o.OnServerPublication = func(p client.Publication) {
		r.mu.Lock()
		r.pubs = append(r.pubs, fmt.Sprintf("%s %s@%d", p.Channel, p.Data, p.Offset))
		r.mu.Unlock()
	}
	o.OnServerSubscribed = func(e client.SubscribedEvent) {
		r.mu.Lock()
		r.subscribed = append(r.subscribed, e)
		r.mu.Unlock()
	}
	o.OnServerUnsubscribed = func(e client.UnsubscribedEvent) {
		r.mu.Lock()
		r.unsubscribed = append(r.unsubscribed, e)
		r.mu.Unlock()
	}
	o.OnMessage = func(b []byte) {
		r.mu.Lock()
		r.messages = append(r.messages, b)
		r.mu.Unlock()
	}
	state := o.OnState
	o.OnState = func(s client.State) {
		r.mu.Lock()
		if s == client.StateConnected {
			r.connected++
		}
		r.mu.Unlock()
		if state != nil {
			state(s)
		}
	}
	return o
}

// has reports whether the publications received include want.
func (r *recorder) has(want string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.pubs, want)
}

func (r *recorder) count(f func(*recorder) int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return f(r)
}

// marker sends data to user's connections through the API and waits for
// the message: pushes of one connection arrive in order, so anything the
// server sent that connection before is in by then.
func marker(t *testing.T, addr, user string, r *recorder, data string) {
	t.Helper()
	apiCall(t, addr, "send", `{"user":"`+user+`","data":"`+data+`"}`)
	waitFor(t, 10*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return slices.ContainsFunc(r.messages, func(b []byte) bool { return string(b) == `"`+data+`"` })
	})
}

// TestAPISubscribeRecovers: the server API subscribes a user to a channel
// the client could not subscribe to itself. The SDK reports it and gets
// its publications; the connection is cut while publications go on, and
// after the reconnect the SDK has every publication once, in order: the
// channel came back through connect with its position.
func TestAPISubscribeRecovers(t *testing.T) {
	t.Parallel()
	for _, cc := range codecs {
		t.Run(cc.name, func(t *testing.T) {
			t.Parallel()
			addr := server(t, withPrivate)
			user := "ann-" + cc.name
			const ch = "private:feed"
			apiPublish(t, addr, ch, "0") // offset 1, before the subscription
			var rec recorder
			lost := make(chan struct{})
			resume := make(chan struct{})
			c, err := client.Dial(context.Background(), "ws://"+addr+"/ws", rec.options(&client.Options{
				Token: mint(t, user, 0), Binary: cc.binary, ReconnectBase: time.Millisecond, ReconnectMax: 10 * time.Millisecond,
				OnState: func(s client.State) {
					if s == client.StateConnecting && rec.count(func(r *recorder) int { return r.connected }) == 1 {
						// The first connection ended: hold the reconnect
						// until the test has published what the client
						// must recover.
						close(lost)
						<-resume
					}
				},
			}))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Subscribe(context.Background(), ch, client.SubscribeOptions{}); err == nil {
				t.Fatal("the client subscribed to a private channel by itself")
			}

			apiCall(t, addr, "subscribe", `{"user":"`+user+`","channel":"`+ch+`"}`)
			waitFor(t, 10*time.Second, func() bool { return rec.count(func(r *recorder) int { return len(r.subscribed) }) == 1 })
			rec.mu.Lock()
			if e := rec.subscribed[0]; e.Channel != ch || !e.Recoverable || e.WasRecovering || e.Position.Offset != 1 {
				t.Fatalf("subscribed event %+v", e)
			}
			rec.mu.Unlock()
			for i := 1; i <= 3; i++ {
				apiPublish(t, addr, ch, fmt.Sprint(i))
			}
			waitFor(t, 10*time.Second, func() bool { return rec.has(ch + " 3@4") })

			apiDisconnect(t, addr, user, 4000)
			select {
			case <-lost:
			case <-time.After(10 * time.Second):
				t.Fatal("the connection did not end")
			}
			for i := 4; i <= 10; i++ {
				apiPublish(t, addr, ch, fmt.Sprint(i))
			}
			close(resume)
			waitFor(t, 10*time.Second, func() bool { return rec.count(func(r *recorder) int { return r.connected }) == 2 })
			apiPublish(t, addr, ch, "11")
			waitFor(t, 10*time.Second, func() bool { return rec.has(ch + " 11@12") })
			// Published once 11 arrived, 12 follows anything the reconnect
			// could still deliver twice.
			apiPublish(t, addr, ch, "12")
			waitFor(t, 10*time.Second, func() bool { return rec.has(ch + " 12@13") })

			rec.mu.Lock()
			defer rec.mu.Unlock()
			var want []string
			for i := 1; i <= 12; i++ {
				want = append(want, fmt.Sprintf("%s %d@%d", ch, i, i+1))
			}
			if strings.Join(rec.pubs, ", ") != strings.Join(want, ", ") {
				t.Fatalf("publications\n got %v\nwant %v", rec.pubs, want)
			}
			if n := len(rec.subscribed); n != 2 {
				t.Fatalf("%d subscribed events: %+v", n, rec.subscribed)
			}
			if e := rec.subscribed[1]; e.Channel != ch || !e.WasRecovering || !e.Recovered || e.Position.Offset != 11 {
				t.Fatalf("subscribed event after the reconnect %+v", e)
			}
		})
	}
}

// TestAPIUnsubscribeServerSide: the server API ends a server-side
// subscription with 2000: the SDK reports the code and reason, gets no
// more publications, and does not ask for the channel when it reconnects
// (the channel is one the client could subscribe to, so the server would
// give it back if asked).
func TestAPIUnsubscribeServerSide(t *testing.T) {
	t.Parallel()
	addr := server(t, nil)
	const user, ch = "bo", "open"
	var rec recorder
	c, err := client.Dial(context.Background(), "ws://"+addr+"/ws", rec.options(&client.Options{
		Token: mint(t, user, 0), ReconnectBase: time.Millisecond, ReconnectMax: 10 * time.Millisecond,
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	apiCall(t, addr, "subscribe", `{"user":"`+user+`","channel":"`+ch+`"}`)
	apiPublish(t, addr, ch, "1")
	waitFor(t, 10*time.Second, func() bool { return rec.has(ch + " 1@1") })

	apiCall(t, addr, "unsubscribe", `{"user":"`+user+`","channel":"`+ch+`","reason":"bye"}`)
	waitFor(t, 10*time.Second, func() bool { return rec.count(func(r *recorder) int { return len(r.unsubscribed) }) == 1 })
	rec.mu.Lock()
	if e := rec.unsubscribed[0]; e.Channel != ch || e.Code != protocol.UnsubscribeServer || e.Reason != "bye" || e.Resubscribe ||
		!e.Recoverable || e.Position.Offset != 1 {
		t.Fatalf("unsubscribed event %+v", e)
	}
	rec.mu.Unlock()
	apiPublish(t, addr, ch, "2")
	marker(t, addr, user, &rec, "m1")

	apiDisconnect(t, addr, user, 4000)
	waitFor(t, 10*time.Second, func() bool { return rec.count(func(r *recorder) int { return r.connected }) == 2 })
	apiPublish(t, addr, ch, "3")
	marker(t, addr, user, &rec, "m2")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.pubs) != 1 || len(rec.subscribed) != 1 {
		t.Fatalf("after the unsubscribe: publications %v, subscribed events %+v", rec.pubs, rec.subscribed)
	}
}

// TestAPIUnsubscribeClientSubscription: the server API ends a
// subscription the application made. With 2000 it is over: the handlers
// say so with the code and reason. With 2500 the SDK
// subscribes again and recovers what was published in between, with no
// gap and no duplicate.
func TestAPIUnsubscribeClientSubscription(t *testing.T) {
	t.Parallel()
	for _, code := range []uint32{protocol.UnsubscribeServer, protocol.UnsubscribeResubscribe} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			t.Parallel()
			addr := server(t, nil)
			user := fmt.Sprint("cy-", code)
			const ch = "news"
			var rec recorder
			c, err := client.Dial(context.Background(), "ws://"+addr+"/ws", rec.options(&client.Options{Token: mint(t, user, 0)}))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var (
				mu     sync.Mutex
				got    []string
				events []client.SubscribedEvent
				unsubs []client.UnsubscribedEvent
				ended  error
			)
			unsubscribed := make(chan struct{})
			resume := make(chan struct{})
			_, err = c.Subscribe(context.Background(), ch, client.SubscribeOptions{
				OnPublication: func(p client.Publication) {
					mu.Lock()
					got = append(got, fmt.Sprintf("%s@%d", p.Data, p.Offset))
					mu.Unlock()
				},
				OnSubscribed: func(e client.SubscribedEvent) {
					mu.Lock()
					events = append(events, e)
					mu.Unlock()
				},
				OnServerUnsubscribed: func(e client.UnsubscribedEvent) {
					mu.Lock()
					unsubs = append(unsubs, e)
					mu.Unlock()
					// Hold the resubscription until the test has
					// published what the client must recover.
					close(unsubscribed)
					<-resume
				},
				OnUnsubscribed: func(err error) {
					mu.Lock()
					ended = err
					mu.Unlock()
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			apiPublish(t, addr, ch, "1")
			waitFor(t, 10*time.Second, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) == 1
			})
			apiCall(t, addr, "unsubscribe", fmt.Sprintf(`{"user":%q,"channel":%q,"code":%d,"reason":"r"}`, user, ch, code))
			<-unsubscribed
			for i := 2; i <= 4; i++ {
				apiPublish(t, addr, ch, fmt.Sprint(i))
			}
			close(resume)

			if code == protocol.UnsubscribeServer {
				waitFor(t, 10*time.Second, func() bool {
					mu.Lock()
					defer mu.Unlock()
					return ended != nil
				})
				marker(t, addr, user, &rec, "m")
				mu.Lock()
				defer mu.Unlock()
				var pe *client.Error
				if !errors.As(ended, &pe) || pe.Code != code || pe.Message != "r" {
					t.Fatalf("OnUnsubscribed(%v)", ended)
				}
				if len(got) != 1 || len(events) != 1 {
					t.Fatalf("after the end: publications %v, subscribed events %d", got, len(events))
				}
				if len(rec.pubs) != 0 {
					t.Fatalf("publications of the channel reached the server-side handler: %v", rec.pubs)
				}
			} else {
				waitFor(t, 10*time.Second, func() bool {
					mu.Lock()
					defer mu.Unlock()
					return len(got) == 4
				})
				apiPublish(t, addr, ch, "5")
				waitFor(t, 10*time.Second, func() bool {
					mu.Lock()
					defer mu.Unlock()
					return len(got) >= 5 && got[len(got)-1] == "5@5"
				})
				mu.Lock()
				defer mu.Unlock()
				if s := strings.Join(got, " "); s != "1@1 2@2 3@3 4@4 5@5" {
					t.Fatalf("publications %s", s)
				}
				if ended != nil {
					t.Fatalf("the subscription ended: %v", ended)
				}
				if len(events) != 2 || !events[1].WasRecovering || !events[1].Recovered {
					t.Fatalf("subscribed events %+v", events)
				}
			}
			if len(unsubs) != 1 || unsubs[0].Code != code || unsubs[0].Reason != "r" || unsubs[0].Channel != ch ||
				unsubs[0].Resubscribe != (code == protocol.UnsubscribeResubscribe) || unsubs[0].Position.Offset != 1 {
				t.Fatalf("server unsubscribed events %+v", unsubs)
			}
		})
	}
}

// TestAPISendMessage: data sent to a user reaches OnMessage as the bytes
// sent, JSON or binary, on both encodings.
func TestAPISendMessage(t *testing.T) {
	t.Parallel()
	addr := server(t, nil)
	for _, cc := range codecs {
		t.Run(cc.name, func(t *testing.T) {
			t.Parallel()
			user := "dee-" + cc.name
			var rec recorder
			c, err := client.Dial(context.Background(), "ws://"+addr+"/ws", rec.options(&client.Options{Token: mint(t, user, 0), Binary: cc.binary}))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			bin := []byte{0, 1, 2, 0xff, '"', '{'}
			apiCall(t, addr, "send", `{"user":"`+user+`","data":{"k":[1,"v"]}}`)
			apiCall(t, addr, "send", `{"user":"`+user+`","b64data":"AAEC/yJ7"}`)
			apiCall(t, addr, "send", `{"user":"`+user+`","data":"text"}`)
			waitFor(t, 10*time.Second, func() bool { return rec.count(func(r *recorder) int { return len(r.messages) }) == 3 })
			rec.mu.Lock()
			defer rec.mu.Unlock()
			for i, want := range [][]byte{[]byte(`{"k":[1,"v"]}`), bin, []byte(`"text"`)} {
				if !bytes.Equal(rec.messages[i], want) {
					t.Errorf("message %d: %q, want %q", i, rec.messages[i], want)
				}
			}
		})
	}
}

// TestAPISubscribeWithoutHistoryComesBack: a channel without history that
// the server API subscribed a user to is asked for again at reconnect
// (with no position) and comes back, though the client could not
// subscribe to it by itself.
func TestAPISubscribeWithoutHistoryComesBack(t *testing.T) {
	t.Parallel()
	addr := server(t, func(cfg *herald.Config) {
		cfg.Namespaces = append(cfg.Namespaces, herald.Namespace{Name: "alerts"})
	})
	const user, ch = "eli", "alerts:eli"
	var rec recorder
	c, err := client.Dial(context.Background(), "ws://"+addr+"/ws", rec.options(&client.Options{
		Token: mint(t, user, 0), ReconnectBase: time.Millisecond, ReconnectMax: 10 * time.Millisecond,
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	apiCall(t, addr, "subscribe", `{"user":"`+user+`","channel":"`+ch+`"}`)
	waitFor(t, 10*time.Second, func() bool { return rec.count(func(r *recorder) int { return len(r.subscribed) }) == 1 })
	apiDisconnect(t, addr, user, 4000)
	waitFor(t, 10*time.Second, func() bool { return rec.count(func(r *recorder) int { return len(r.subscribed) }) == 2 })
	apiPublish(t, addr, ch, "1")
	waitFor(t, 10*time.Second, func() bool { return rec.has(ch + " 1@0") })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, e := range rec.subscribed {
		if e.Channel != ch || e.Recoverable {
			t.Fatalf("subscribed events %+v", rec.subscribed)
		}
	}
}

// TestRefusedSubscribeLeavesNoTrace: once Subscribe has returned its
// refusal, the channel is no longer the client's: subscribing again at
// once is refused for the same reason, not as "already subscribed" (the
// refused subscription used to leave the client's table only after
// Subscribe returned; a server-side subscribe push in that moment was
// dropped as the client subscription's own result).
func TestRefusedSubscribeLeavesNoTrace(t *testing.T) {
	t.Parallel()
	addr := server(t, withPrivate)
	c, err := client.Dial(context.Background(), "ws://"+addr+"/ws", &client.Options{Token: mint(t, "refused", 0)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const ch = "private:refused"
	var first error
	for i := range 150 { // within the command burst (200)
		_, err := c.Subscribe(context.Background(), ch, client.SubscribeOptions{})
		if err == nil {
			t.Fatal("the client subscribed to a private channel by itself")
		}
		if i == 0 {
			first = err
			continue
		}
		if err.Error() != first.Error() {
			t.Fatalf("subscribe %d right after a refused one: %v (the first was refused with %v)", i+1, err, first)
		}
	}
}
