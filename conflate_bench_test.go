package herald_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/protocol"
)

// BenchmarkConflation measures the conflate policy on loopback, in one
// process: a publisher sends 2,000 publications/s (1 KiB of data each)
// over 100 keys for 10 s
// (batches of 20 every 10 ms through the server API) to 100 fast raw
// subscribers, with ("slow") or without ("none") one more subscriber that
// reads 5 messages/s while the publisher runs, then reads what is left at
// full speed. It reports the fast subscribers' delivery latency (p50,
// p99, from the publisher's timestamp in the data), and for the slow one
// how many publications it received, whether its final value per key
// equals the publisher's last (it fails otherwise), its connection's
// queue at most (frames and bytes, sampled every 50 ms) and the most
// publications (and data bytes) the server kept aside for it. Run with
// -benchtime 1x; the sub-benchmarks alternate with -count.
func BenchmarkConflation(b *testing.B) {
	for _, slow := range []bool{false, true} {
		name := "none"
		if slow {
			name = "slow"
		}
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				runConflation(b, slow)
			}
		})
	}
}

type rawSub struct {
	nc net.Conn
	id string
}

func dialSub(tb testing.TB, ts *testServer, ch string) *rawSub {
	tb.Helper()
	nc, _, _, err := ws.Dialer{}.Dial(context.Background(), ts.wsURL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { nc.Close() })
	read := func() *protocol.ServerMessage {
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		data, err := wsutil.ReadServerText(nc)
		if err != nil {
			tb.Fatal(err)
		}
		var m protocol.ServerMessage
		if err := json.Unmarshal(data, &m); err != nil {
			tb.Fatal(err)
		}
		return &m
	}
	_ = wsutil.WriteClientText(nc, []byte(`{"id":1,"connect":{}}`))
	m := read()
	if m.Connect == nil {
		tb.Fatalf("connect: %+v", m.Error)
	}
	_ = wsutil.WriteClientText(nc, []byte(`{"id":2,"subscribe":{"channel":"`+ch+`"}}`))
	if m := read(); m.Subscribe == nil || !m.Subscribe.Conflated {
		tb.Fatalf("subscribe: %+v", m)
	}
	_ = nc.SetReadDeadline(time.Time{})
	return &rawSub{nc: nc, id: m.Connect.Client}
}

// confData is a publication's data: the publisher's clock and the round.
type confData struct {
	T     int64  `json:"t"`
	Round int    `json:"round"`
	Pad   string `json:"pad"`
}

// conflationPad is the padding of each publication's data: 1 KiB, a small
// state document, so that 10 s of publications (20 MiB) are more than the
// loopback socket buffers hold for a reader of 5 messages/s.
var conflationPad = strings.Repeat("x", 1<<10)

func runConflation(b *testing.B, slow bool) {
	b.StopTimer()
	ts := startServer(b, conflateConfig(1000))
	const ch, keys, fast, perBatch, rounds = "cf:prices", 100, 100, 20, 1000 // 1,000 batches of 20 every 10 ms: 10 s at 2,000/s

	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	var got atomic.Int64 // publications the fast subscribers received or skipped
	var fastSkipped atomic.Int64
	subs := make([]*rawSub, fast)
	for i := range subs {
		subs[i] = dialSub(b, ts, ch)
	}
	for _, s := range subs {
		wg.Add(1)
		go func(s *rawSub) {
			defer wg.Done()
			var mine []time.Duration
			for {
				data, err := wsutil.ReadServerText(s.nc)
				if err != nil {
					break
				}
				// A light parse, so that 100 readers in the server's
				// process keep up: the publisher's clock, and skipped.
				t, ok := intAfter(data, `"t":`)
				if !ok {
					continue
				}
				mine = append(mine, time.Duration(time.Now().UnixNano()-t))
				n, _ := intAfter(data, `"skipped":`)
				got.Add(1 + n)
				fastSkipped.Add(n)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(s)
	}

	var sl *rawSub
	last := map[string]int{} // the slow subscriber's final value per key
	sent := map[string]int{} // the publisher's
	received, skipped := 0, 0
	queueFrames, queueBytes := 0, 0
	readSlow := func() error {
		_ = sl.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		data, err := wsutil.ReadServerText(sl.nc)
		if err != nil {
			return err
		}
		var m protocol.ServerMessage
		if err := json.Unmarshal(data, &m); err != nil {
			return err
		}
		if m.Pub != nil {
			var d confData
			_ = json.Unmarshal(m.Pub.Data, &d)
			last[m.Pub.Tags["key"]] = d.Round
			received++
			skipped += int(m.Pub.Skipped)
		}
		return nil
	}
	stop := make(chan struct{})
	var slowDone sync.WaitGroup
	if slow {
		sl = dialSub(b, ts, ch)
		slowDone.Add(1)
		go func() { // reads 5 messages/s and samples its queue every 50 ms
			defer slowDone.Done()
			read := time.NewTicker(200 * time.Millisecond)
			sample := time.NewTicker(50 * time.Millisecond)
			defer read.Stop()
			defer sample.Stop()
			for {
				select {
				case <-stop:
					return
				case <-read.C:
					if err := readSlow(); err != nil {
						b.Error(err)
						return
					}
				case <-sample.C:
					page, err := ts.Connections(context.Background(), herald.ConnectionsQuery{Client: sl.id})
					if err == nil && len(page.Connections) == 1 {
						queueFrames = max(queueFrames, page.Connections[0].QueueFrames)
						queueBytes = max(queueBytes, page.Connections[0].QueueBytes)
					}
				}
			}
		}()
	}

	type cmd struct {
		Method string         `json:"method"`
		Params map[string]any `json:"params"`
	}
	tick := time.NewTicker(10 * time.Millisecond)
	b.StartTimer()
	k := 0
	for r := 1; r <= rounds; r++ {
		<-tick.C
		cmds := make([]cmd, perBatch)
		for i := range cmds {
			key := "k" + strconv.Itoa(k%keys)
			round := k/keys + 1
			k++
			sent[key] = round
			d, _ := json.Marshal(confData{T: time.Now().UnixNano(), Round: round, Pad: conflationPad})
			cmds[i] = cmd{"publish", map[string]any{"channel": ch, "tags": map[string]string{"key": key}, "data": json.RawMessage(d)}}
		}
		if code := ts.api(b, "batch", map[string]any{"commands": cmds}, nil); code != 200 {
			b.Fatalf("batch publish: HTTP %d", code)
		}
	}
	b.StopTimer()
	tick.Stop()
	close(stop)
	slowDone.Wait()
	if slow {
		slowDuring := received
		for !equalState(last, sent) {
			if err := readSlow(); err != nil {
				b.Fatal(err)
			}
		}
		conflated, pendingMax, pendingBytes := ts.ConflateStats()
		b.ReportMetric(float64(slowDuring), "slow-received-while-publishing")
		b.ReportMetric(float64(received), "slow-received")
		b.ReportMetric(float64(received+skipped), "slow-received+skipped")
		b.ReportMetric(float64(conflated), "conflated")
		b.ReportMetric(float64(queueFrames), "slow-queue-max-frames")
		b.ReportMetric(float64(queueBytes), "slow-queue-max-bytes")
		b.ReportMetric(float64(pendingMax), "slow-aside-max-pubs")
		b.ReportMetric(float64(pendingBytes), "slow-aside-max-data-bytes")
		if received+skipped != k {
			b.Errorf("slow subscriber: received %d + skipped %d != published %d", received, skipped, k)
		}
	}
	eventually(b, 60*time.Second, "the fast subscribers' deliveries", func() bool { return got.Load() >= int64(fast*k) })
	for _, s := range subs {
		s.nc.Close()
	}
	wg.Wait()
	if got.Load() != int64(fast*k) {
		b.Errorf("fast subscribers got or skipped %d publications, want %d", got.Load(), fast*k)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "fast-p50-ms")
	b.ReportMetric(q(0.99), "fast-p99-ms")
	b.ReportMetric(float64(len(lat)), "fast-deliveries")
	b.ReportMetric(float64(fastSkipped.Load()), "fast-skipped")
}

// intAfter parses the decimal integer after the first occurrence of key
// in b.
func intAfter(b []byte, key string) (int64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	n, ok := int64(0), false
	for _, c := range b[i+len(key):] {
		if c < '0' || c > '9' {
			break
		}
		n, ok = n*10+int64(c-'0'), true
	}
	return n, ok
}

func equalState(got, want map[string]int) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}
