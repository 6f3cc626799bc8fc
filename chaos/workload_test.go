package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/client"
)

// channels of a run: two in the default namespace (slow policy
// disconnect) and one in "drop" (slow policy drop).
var channels = []string{"c0", "c1", "drop:c2"}

// workload drives the clients of a run and records what they see.
type workload struct {
	e    *env
	h    *history
	pace time.Duration // between two publishes of one publisher

	stop chan struct{} // closed to stop publishers, churn and reads
	wg   sync.WaitGroup

	mu   sync.Mutex
	subs []*subscriber
	errs []string // setup failures that end the run
}

// subscriber is one logical subscriber: a client subscribed to every
// channel, which the churn may replace by a new client that subscribes
// from the positions the old one reached.
type subscriber struct {
	name    string
	url     string
	streams map[string]*stream
	h       *history

	mu sync.Mutex
	c  *client.Client
}

func clientOptions() *client.Options {
	return &client.Options{ReconnectBase: 50 * time.Millisecond, ReconnectMax: time.Second,
		DialTimeout: 5 * time.Second, PingMargin: 5 * time.Second}
}

// connect dials a new client and subscribes it to every channel, from the
// streams' positions if they have one. It retries for up to two minutes,
// also after the workload stops: a subscriber must be there at the end.
func (s *subscriber) connect(first bool) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c, err := s.dialOnce(first)
		if err == nil {
			s.mu.Lock()
			s.c = c
			s.mu.Unlock()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: could not subscribe again within 2 minutes: %v", s.name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *subscriber) dialOnce(first bool) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, s.url, clientOptions())
	if err != nil {
		return nil, err
	}
	for _, ch := range channels {
		st := s.streams[ch]
		opts := client.SubscribeOptions{
			OnSubscribed: func(ev client.SubscribedEvent) {
				st.add(streamEvent{T: s.h.clock.now(), Client: c.ID(), Sub: true,
					WasRecovering: ev.WasRecovering, Recovered: ev.Recovered, Pos: ev.Position})
			},
			OnPublication: func(p client.Publication) {
				st.add(streamEvent{T: s.h.clock.now(), Client: c.ID(), Offset: p.Offset, ID: dataID(p.Data), Gap: p.Gap})
			},
		}
		if !first {
			p := st.position()
			opts.Since = &p
		} else {
			st.Start = s.h.clock.now()
		}
		if _, err := c.Subscribe(ctx, ch, opts); err != nil {
			c.Close()
			return nil, fmt.Errorf("subscribe %s: %w", ch, err)
		}
	}
	return c, nil
}

// churn closes the client and connects a new one.
func (s *subscriber) churn() error {
	s.mu.Lock()
	old := s.c
	s.mu.Unlock()
	old.Close()
	return s.connect(false)
}

func (s *subscriber) client() *client.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c
}

// startWorkload subscribes nSubs clients through the balancer and nSlow
// through the slow balancer, then starts the publishers (two through the
// server API, two through client publish), the churn and the reader.
func startWorkload(e *env, seed uint64, nSubs, nSlow int, pace time.Duration) (*workload, error) {
	w := &workload{e: e, h: e.h, pace: pace, stop: make(chan struct{})}
	add := func(name, url string) error {
		s := &subscriber{name: name, url: url, streams: map[string]*stream{}, h: e.h}
		for _, ch := range channels {
			st := &stream{Name: name, Channel: ch, Live: true}
			s.streams[ch] = st
			e.h.addStream(st)
		}
		if err := s.connect(true); err != nil {
			return err
		}
		w.subs = append(w.subs, s)
		return nil
	}
	for i := 0; i < nSubs; i++ {
		if err := add(fmt.Sprintf("sub%d", i), "ws://"+e.lb.Addr()+"/ws"); err != nil {
			w.close()
			return nil, err
		}
	}
	for i := 0; i < nSlow; i++ {
		if err := add(fmt.Sprintf("slow%d", i), "ws://"+e.slow.Addr()+"/ws"); err != nil {
			w.close()
			return nil, err
		}
	}
	for i := 0; i < 2; i++ {
		w.wg.Add(1)
		go w.apiPublisher(fmt.Sprintf("api%d", i), rand.New(rand.NewPCG(seed, uint64(10+i))))
	}
	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := client.Dial(ctx, "ws://"+e.lb.Addr()+"/ws", clientOptions())
		cancel()
		if err != nil {
			w.close()
			return nil, fmt.Errorf("publisher client: %w", err)
		}
		w.wg.Add(1)
		go w.clientPublisher(fmt.Sprintf("cli%d", i), c, rand.New(rand.NewPCG(seed, uint64(20+i))))
	}
	w.wg.Add(2)
	go w.churner(rand.New(rand.NewPCG(seed, 30)))
	go w.reader(rand.New(rand.NewPCG(seed, 31)))
	return w, nil
}

func (w *workload) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

func (w *workload) sleep(d time.Duration) bool {
	select {
	case <-w.stop:
		return false
	case <-time.After(d):
		return true
	}
}

// payload is a publication's data: its id and padding, so that slow
// clients fall behind.
func payload(id string) []byte {
	return []byte(`{"id":"` + id + `","pad":"` + strings.Repeat("x", 400) + `"}`)
}

// publish runs one logical publish: attempts with the same idempotency
// key until one is acknowledged, for at most 40s (after the workload
// stops, 20s more at most).
func (w *workload) publish(name string, seq int, rng *rand.Rand, attempt func(ctx context.Context, ch, id string) (pos, error)) {
	ch := channels[rng.IntN(len(channels))]
	id := name + "-" + strconv.Itoa(seq)
	op := &publishOp{Channel: ch, ID: id, Via: strings.TrimRight(name, "0123456789"), Call: w.h.clock.now()}
	w.h.addPublish(op)
	start := time.Now()
	var stopAt time.Time
	for n := 1; ; n++ {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		p, err := attempt(ctx, ch, id)
		cancel()
		if err == nil {
			w.h.ackPublish(op, p, n)
			return
		}
		if stopAt.IsZero() && w.stopped() {
			stopAt = time.Now()
		}
		if time.Since(start) > 40*time.Second || (!stopAt.IsZero() && time.Since(stopAt) > 20*time.Second) {
			w.h.failPublish(op, n)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (w *workload) apiPublisher(name string, rng *rand.Rand) {
	defer w.wg.Done()
	for seq := 1; !w.stopped(); seq++ {
		w.publish(name, seq, rng, func(ctx context.Context, ch, id string) (pos, error) {
			n := w.e.nodes[rng.IntN(len(w.e.nodes))]
			var out struct {
				Epoch  string `json:"epoch"`
				Offset uint64 `json:"offset"`
			}
			err := api(ctx, n.front.Addr(), "publish", map[string]any{
				"channel": ch, "data": jsonRaw(payload(id)), "idempotency_key": id}, &out)
			if err == nil && (out.Epoch == "" || out.Offset == 0) {
				err = fmt.Errorf("publish answered no position: %+v", out)
			}
			return pos{Epoch: out.Epoch, Offset: out.Offset}, err
		})
		if !w.sleep(w.pace) {
			return
		}
	}
}

func (w *workload) clientPublisher(name string, c *client.Client, rng *rand.Rand) {
	defer w.wg.Done()
	defer c.Close()
	for seq := 1; !w.stopped(); seq++ {
		w.publish(name, seq, rng, func(ctx context.Context, ch, id string) (pos, error) {
			return c.Publish(ctx, ch, payload(id), &client.PublishOptions{IdempotencyKey: id})
		})
		if !w.sleep(w.pace) {
			return
		}
	}
}

// churner replaces a random subscriber's client every 1-4s.
func (w *workload) churner(rng *rand.Rand) {
	defer w.wg.Done()
	for w.sleep(time.Duration(1000+rng.IntN(3000)) * time.Millisecond) {
		s := w.subs[rng.IntN(len(w.subs))]
		w.h.addFault("churn", "%s closes its client and subscribes again from its positions", s.name)
		if err := s.churn(); err != nil {
			w.mu.Lock()
			w.errs = append(w.errs, err.Error())
			w.mu.Unlock()
			return
		}
	}
}

// reader reads a random channel's position on a random node every 100ms.
func (w *workload) reader(rng *rand.Rand) {
	defer w.wg.Done()
	for w.sleep(100 * time.Millisecond) {
		ch := channels[rng.IntN(len(channels))]
		n := w.e.nodes[rng.IntN(len(w.e.nodes))]
		var out struct {
			Epoch  string `json:"epoch"`
			Offset uint64 `json:"offset"`
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		call := w.h.clock.now()
		err := api(ctx, n.front.Addr(), "history", map[string]any{"channel": ch}, &out)
		ret := w.h.clock.now()
		cancel()
		if err == nil {
			w.h.addRead(readOp{Channel: ch, Call: call, Return: ret, Pos: pos{Epoch: out.Epoch, Offset: out.Offset}})
		}
	}
}

// finish stops publishing, churn and reads, and waits for them.
func (w *workload) finish() []string {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.errs
}

// close closes every subscriber's client.
func (w *workload) close() {
	w.finish()
	for _, s := range w.subs {
		if c := s.client(); c != nil {
			c.Close()
		}
	}
}

type jsonRaw []byte

func (j jsonRaw) MarshalJSON() ([]byte, error) { return j, nil }
