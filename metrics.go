package herald

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus collectors, on a registry it owns.
type metrics struct {
	reg           *prometheus.Registry
	commands      *prometheus.CounterVec
	disconnects   *prometheus.CounterVec
	publications  *prometheus.CounterVec
	bytesIn       prometheus.Counter
	messagesIn    prometheus.Counter
	brokerLatency *prometheus.HistogramVec
	apiRequests   *prometheus.CounterVec
	streams       *prometheus.CounterVec // HTTP fallback streams opened, by transport
	streamPosts   *prometheus.CounterVec // command POSTs of HTTP streaming, by where they went
	undelivered   prometheus.Counter     // publications unacknowledged past their deadline

	webhookEvents, webhookFailures, webhookLost *prometheus.CounterVec
	webhookBacklog                              *prometheus.GaugeVec

	// The series of the API's publish path, looked up once rather than
	// by their labels on every publication.
	apiPublishOK, apiPublications lazy[prometheus.Counter]
	publishLatency                lazy[prometheus.Observer]
}

// lazy is a metric vector's child, made on first use (as WithLabelValues
// makes it: a series never used is not exported) and then kept.
type lazy[T any] struct {
	once sync.Once
	mk   func() T
	v    T
}

func (l *lazy[T]) get() T {
	l.once.Do(l.make)
	return l.v
}

func (l *lazy[T]) make() { l.v = l.mk() }

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.commands = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_commands_total", Help: "Client commands received, by method.",
	}, []string{"method"})
	m.disconnects = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_disconnects_total", Help: "Disconnects initiated by the server, by code.",
	}, []string{"code"})
	m.publications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_publications_total", Help: "Publications accepted, by source (client or api).",
	}, []string{"source"})
	m.bytesIn = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_bytes_in_total", Help: "Message bytes received from clients (WebSocket messages, HTTP streaming commands).",
	})
	m.messagesIn = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_messages_in_total", Help: "Messages received from clients (WebSocket messages, HTTP streaming commands).",
	})
	m.brokerLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "herald_broker_latency_seconds", Help: "Broker call latency, by operation.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"op"})
	m.apiRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_api_requests_total", Help: "Server API requests, by method and outcome code (0 is success).",
	}, []string{"method", "code"})
	m.streams = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_http_streams_total", Help: "HTTP fallback streams opened, by transport (http-stream or sse).",
	}, []string{"transport"})
	m.streamPosts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_stream_posts_total", Help: "Command POSTs of HTTP streaming taken by this node, by route: local (it holds the stream) or forwarded (handed to the node that does, through the broker).",
	}, []string{"route"})
	m.webhookEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_webhook_events_total", Help: "Lifecycle events delivered to a webhook (answered 2xx), by webhook URL.",
	}, []string{"url"})
	m.webhookFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_webhook_failures_total", Help: "Webhook requests that failed (error or non-2xx answer) and will be retried, by webhook URL.",
	}, []string{"url"})
	m.webhookLost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_webhook_lost_events_total", Help: "Lifecycle events a webhook never got: its receiver fell behind the events channel's history.",
	}, []string{"url"})
	m.webhookBacklog = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "herald_webhook_backlog_events", Help: "Lifecycle events published but not yet delivered to a webhook (on the node that sends).",
	}, []string{"url"})
	m.reg.MustRegister(m.webhookEvents, m.webhookFailures, m.webhookLost, m.webhookBacklog,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "herald_events_total", Help: "Lifecycle events this node published."},
			func() float64 {
				if s.events == nil {
					return 0
				}
				return float64(s.events.emitted.Load())
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "herald_events_lost_total", Help: "Lifecycle events this node could not publish (broker unavailable)."},
			func() float64 {
				if s.events == nil {
					return 0
				}
				return float64(s.events.failed.Load())
			}),
	)
	hubStat := func(name, help string, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f()) })
	}
	m.undelivered = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_undelivered_total", Help: "Publications of ack namespaces unacknowledged past ack_deadline, once per user (or anonymous connection), channel and offset on the node.",
	})
	m.reg.MustRegister(m.undelivered, m.commands, m.disconnects, m.publications, m.bytesIn, m.messagesIn, m.brokerLatency, m.apiRequests, m.streams, m.streamPosts,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "herald_connections", Help: "Open client connections."},
			func() float64 { return float64(s.sessions.count()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "herald_subscriptions", Help: "Channel subscriptions on this node."},
			func() float64 { return float64(s.hub.NumSubscriptions()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "herald_channels", Help: "Channels with subscribers on this node."},
			func() float64 { return float64(s.hub.NumChannels()) }),
		hubStat("herald_messages_out_total", "Publication frames queued to clients.", func() uint64 { return s.hub.Stats().Delivered }),
		hubStat("herald_slow_disconnects_total", "Connections closed because their queue overflowed.", func() uint64 { return s.hub.Stats().Slow }),
		hubStat("herald_dropped_publications_total", "Publications dropped for slow clients (drop policy).", func() uint64 { return s.hub.Stats().Dropped }),
		hubStat("herald_stream_gaps_total", "Gaps detected in channel streams from the broker.", func() uint64 { return s.hub.Stats().Gaps }),
		hubStat("herald_compressed_frames_total", "Publication frames compressed (permessage-deflate): one per publication and encoding, whatever the number of subscribers.", func() uint64 { return s.hub.Stats().Compressed }),
		hubStat("herald_filter_evaluations_total", "Subscription filter evaluations: one per publication and distinct filter of its channel on the node, whatever the number of subscribers sharing the filter.", func() uint64 { return s.hub.Stats().FilterEvals }),
		hubStat("herald_deltas_total", "Publication deltas computed: at most one per publication of a channel with delta subscribers on the node, whatever their number.", func() uint64 { return s.hub.Stats().Deltas }),
		hubStat("herald_delta_frames_total", "Publication frames queued as deltas (also counted in herald_messages_out_total).", func() uint64 { return s.hub.Stats().DeltaFrames }),
		hubStat("herald_redelivered_total", "Publications sent again to a subscriber of an ack namespace that did not acknowledge them within ack_timeout.", func() uint64 { return s.hub.Stats().Redelivered }),
		hubStat("herald_unacked_overflows_total", "Publications refused to a subscriber of an ack namespace with ack_max_unacked unacknowledged (its slow policy applied).", func() uint64 { return s.hub.Stats().Unacked }),
		hubStat("herald_conflated_publications_total", "Publications not sent to a conflating subscriber that fell behind because a newer one of the same key replaced them (conflate policy).", func() uint64 { return s.hub.Stats().Conflated }),
		hubStat("herald_bytes_out_total", "Bytes written to client sockets.", s.engineBytesOut),
		hubStat("herald_socket_writes_total", "Write system calls to client sockets: over herald_messages_out_total, how many frames one write carries.", s.engineWrites),
	)
	m.apiPublishOK.mk = func() prometheus.Counter { return m.apiRequests.WithLabelValues("publish", "0") }
	m.apiPublications.mk = func() prometheus.Counter { return m.publications.WithLabelValues("api") }
	m.publishLatency.mk = func() prometheus.Observer { return m.brokerLatency.WithLabelValues("publish") }
	return m
}

func (m *metrics) disconnect(code uint32) {
	m.disconnects.WithLabelValues(strconv.FormatUint(uint64(code), 10)).Inc()
}

// observe records a broker call's latency.
func (s *Server) observe(op string, start time.Time) {
	if op == "publish" {
		s.metrics.publishLatency.get().Observe(time.Since(start).Seconds())
		return
	}
	s.metrics.brokerLatency.WithLabelValues(op).Observe(time.Since(start).Seconds())
}
