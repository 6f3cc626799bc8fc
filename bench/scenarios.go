package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// settle waits until the server stops sending the subscribers other
// messages (join pushes of the subscriptions just made), at most Settle.
func (r *runner) settle(ctx context.Context) {
	start := time.Now()
	end := start.Add(r.o.Settle)
	last := r.progress().Other
	quiet := time.Now()
	for time.Now().Before(end) && ctx.Err() == nil {
		sleepCtx(ctx, 50*time.Millisecond)
		if o := r.progress().Other; o != last {
			last, quiet = o, time.Now()
		} else if time.Since(quiet) >= 300*time.Millisecond {
			r.logf("settled in %s (%d other messages received since connecting)", time.Since(start).Round(time.Millisecond), last)
			return
		}
	}
	r.warn("the server was still sending other messages (%d so far) when publishing started: raise --settle", last)
}

// idle holds the connections for the duration and samples the server's
// RSS once a second after the settle time.
func (r *runner) idle(ctx context.Context) error {
	o := r.o
	m := r.mark()
	end := m.t.Add(o.Duration)
	sleepCtx(ctx, min(o.Settle, o.Duration))
	r.logf("idle: holding %d connections for %s, sampling server RSS", r.nsubs, o.Duration)
	st := &IdleStats{}
	for ctx.Err() == nil {
		if v := r.rss(); v > 0 {
			st.RSSSamples = append(st.RSSSamples, v)
			if st.RSSMin == 0 || v < st.RSSMin {
				st.RSSMin = v
			}
		}
		if time.Until(end) < time.Second {
			break
		}
		sleepCtx(ctx, time.Second)
	}
	sleepCtx(ctx, time.Until(end))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	st.Hold = round3(r.measure(m).Seconds())
	srv := r.rep.Server
	srv.RSS = r.rss()
	srv.RSSMax = srv.RSS
	for _, v := range st.RSSSamples {
		srv.RSSMax = max(srv.RSSMax, v)
	}
	if st.RSSMin > 0 && srv.RSSBaseline > 0 {
		per := func(v int64) float64 { return round3(float64(v-srv.RSSBaseline) / float64(r.nsubs)) }
		st.RSSPerConn, st.RSSPerConnEnd, st.RSSPerConnMax = per(st.RSSMin), per(srv.RSS), per(srv.RSSMax)
		if st.RSSPerConn <= 0 {
			r.warn("RSS did not grow: the server kept memory from earlier load; measure on a fresh server")
		}
	}
	r.rep.Idle = st
	return nil
}

// publish runs the fanout and channels scenarios: publish for the duration,
// then wait for the deliveries.
func (r *runner) publish(ctx context.Context) error {
	o := r.o
	r.settle(ctx)
	channels := make([]string, o.Channels)
	for i := range channels {
		channels[i] = channelName(o.Prefix, i)
	}
	ips := make([]net.IP, 0, len(o.sourceIPs))
	for _, s := range o.sourceIPs {
		ips = append(ips, net.ParseIP(s))
	}
	p := &publisher{
		plan: pubPlan{
			mode: o.Publish, channels: channels, subs: r.subs, rate: o.Rate,
			duration: o.Duration, messages: o.Messages, size: o.Size, shape: o.Payload, batch: o.Batch, inflight: o.Inflight,
			window: o.Window, stall: 5 * time.Second,
		},
		tgt: r.tgt, api: r.api,
		// Publisher connections (--publish client) go to the first node,
		// as API publishes go to one.
		d: &dialer{urls: o.urls[:1], channels: 1, tgt: r.tgt, timeout: o.ConnTimeout, readBuf: 64 << 10,
			sourceIPs: ips, compression: o.Compression},
		delivered: func() uint64 { return r.progress().Delivered },
	}
	if o.SpreadPublish && o.Publish == "api" {
		seen := map[string]bool{}
		for _, u := range o.urls {
			base, _ := apiBase(u) // checked by validate
			if !seen[base] {
				seen[base] = true
				c := newAPIClient(base, o.Key, o.Inflight+2)
				defer c.Close()
				p.apis = append(p.apis, c)
			}
		}
		r.logf("publishing through %d nodes' APIs", len(p.apis))
	}
	srv := r.rep.Server
	var rssMu sync.Mutex
	sampleRSS := func() {
		if v := r.rss(); v > 0 {
			rssMu.Lock()
			srv.RSSMax = max(srv.RSSMax, v)
			rssMu.Unlock()
		}
	}
	sampleRSS()
	stopRSS := every(500*time.Millisecond, sampleRSS)
	defer stopRSS()
	start := r.progress()
	stopLog := every(time.Second, func() {
		pr := r.progress()
		r.logf("published %d, delivered %d, open %d", p.messages.Load(), pr.Delivered-start.Delivered, pr.Conns)
	})
	defer stopLog()

	m := r.mark()
	r.logf("publishing for %s: rate %g/s, %d channels, %d subscribers", o.Duration, o.Rate, o.Channels, r.nsubs)
	ps, err := p.run(ctx)
	if err != nil {
		return err
	}
	expected := uint64(max(p.issued.Load(), 0))
	// Drain: wait for the expected deliveries, at most Drain (a second if
	// the run was interrupted), and give up sooner when nothing arrives for
	// a while.
	drain := o.Drain
	if ctx.Err() != nil {
		r.warn("interrupted: publishing stopped early")
		drain = min(drain, time.Second)
	}
	drained := false
	dend := time.Now().Add(drain)
	last, lastChange := r.progress().Delivered, time.Now()
	for {
		d := r.progress().Delivered - start.Delivered
		if d >= expected {
			drained = true
			break
		}
		if !time.Now().Before(dend) {
			break
		}
		if d != last {
			last, lastChange = d, time.Now()
		} else if time.Since(lastChange) > min(3*time.Second, drain) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.measure(m)
	stopRSS()
	srv.RSS = r.rss()
	srv.RSSMax = max(srv.RSSMax, srv.RSS)
	stopLog()
	r.rep.Publish = &ps
	r.rep.Delivery = &DeliveryStats{Subscribers: r.nsubs, Expected: expected, Drained: drained,
		WireBytes: r.progress().Wire - start.Wire}
	if !drained {
		r.warn("drain ended before every expected delivery arrived")
	}
	r.pubStart = ps.start
	return nil
}

// finish closes the workers' connections and merges their results into
// the report.
func (r *runner) finish(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var merged workerResult
	var errs []error
	for _, w := range r.workers {
		res, err := w.finish(fctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		merged.Seq.Add(res.Seq)
		merged.Latency.Merge(res.Latency)
		merged.LastRecv = max(merged.LastRecv, res.LastRecv)
		merged.Lost += res.Lost
		for k, v := range res.Endings {
			if merged.Endings == nil {
				merged.Endings = map[string]int{}
			}
			merged.Endings[k] += v
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("collecting results: %w", err)
	}
	if st := r.rep.Idle; st != nil {
		st.Lost, st.Endings = merged.Lost, merged.Endings
	}
	d := r.rep.Delivery
	if d == nil {
		return nil
	}
	s := merged.Seq
	d.Received, d.Distinct, d.Duplicates, d.OutOfOrder, d.BadPayload, d.Deltas = s.Received, s.Distinct, s.Duplicates, s.OutOfOrder, s.Bad, s.Deltas
	if s.Distinct < d.Expected {
		d.Lost = d.Expected - s.Distinct
	} else {
		d.Unexpected = s.Distinct - d.Expected
	}
	d.LostConns, d.Endings = merged.Lost, merged.Endings
	if merged.LastRecv > 0 && !r.pubStart.IsZero() {
		el := time.Unix(0, merged.LastRecv).Sub(r.pubStart)
		d.Elapsed = round3(el.Seconds())
		if el > 0 {
			d.Rate = round1(float64(s.Received) / el.Seconds())
		}
	}
	if s.Received > 0 && d.WireBytes > 0 {
		d.WireBytesPerDelivery = round1(float64(d.WireBytes) / float64(s.Received))
	}
	if c := r.rep.Server.CPU; c != nil && s.Received > 0 {
		d.ServerCPUPerDelivery = round3(c.Total * 1e6 / float64(s.Received))
	}
	if b := r.rep.Broker; b != nil && b.CPU != nil && s.Received > 0 {
		d.BrokerCPUPerDelivery = round3(b.CPU.Total * 1e6 / float64(s.Received))
	}
	lat := merged.Latency.Summary()
	r.rep.Latency = &lat
	return nil
}
