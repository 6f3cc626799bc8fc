package herald

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/protocol"
)

// Tracing of publications with OpenTelemetry, when Config.TracerProvider
// is set. A publication's trace has three kinds of span:
//
//	herald.publish       the API call or client command (a child of the
//	                     caller's span when the API request carries a W3C
//	                     traceparent header)
//	herald.broker.append its child: the broker call that assigns the
//	                     position and appends to history
//	herald.fanout        on every node with subscribers, a child of the
//	                     append: the subscribers and bytes queued there
//
// The append span's context travels with the publication through the
// broker (Publication.Trace), only for sampled traces, so that unsampled
// publications cost one branch per node.

const tracerName = "github.com/heraldhq/herald"

var traceContext = propagation.TraceContext{}

// tracer is the server's tracer, or nil without tracing.
func newTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(tracerName, trace.WithInstrumentationVersion(Version))
}

// traceHTTP returns ctx with the remote span context of r's traceparent
// header, if tracing is on and it has one.
func (s *Server) traceHTTP(ctx context.Context, r *http.Request) context.Context {
	if s.tracer == nil || r.Header.Get("Traceparent") == "" {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.HeaderCarrier(r.Header))
}

// startPublish starts the publish and append spans of pub (no-ops without
// tracing) and, for a sampled trace, puts the append span's context in
// pub.Trace. end must be called with the outcome.
func (s *Server) startPublish(ctx context.Context, ch, source string, pub *protocol.Publication) (end func(pos protocol.StreamPosition, err error)) {
	if s.tracer == nil {
		return func(protocol.StreamPosition, error) {}
	}
	ctx, pspan := s.tracer.Start(ctx, "herald.publish", trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		attribute.String("herald.channel", ch), attribute.String("herald.source", source),
		attribute.Int("herald.bytes", len(pub.Data)), attribute.String("herald.node", s.nodeID)))
	_, aspan := s.tracer.Start(ctx, "herald.broker.append", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("herald.broker", brokerName(s.broker))))
	if sc := aspan.SpanContext(); sc.IsSampled() {
		carrier := propagation.MapCarrier{}
		traceContext.Inject(trace.ContextWithSpanContext(context.Background(), sc), carrier)
		pub.Trace = carrier["traceparent"]
	}
	return func(pos protocol.StreamPosition, err error) {
		if err != nil {
			aspan.RecordError(err)
			pspan.RecordError(err)
		} else if pos.Offset != 0 {
			aspan.SetAttributes(attribute.Int64("herald.offset", int64(pos.Offset)), attribute.String("herald.epoch", pos.Epoch))
		}
		aspan.End()
		pspan.End()
	}
}

// traceFanout records a node's fan-out of a traced publication.
func (s *Server) traceFanout(ch string, pub *protocol.Publication, fan func() hub.Fanout) {
	ctx := traceContext.Extract(context.Background(), propagation.MapCarrier{"traceparent": pub.Trace})
	_, span := s.tracer.Start(ctx, "herald.fanout", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		attribute.String("herald.channel", ch), attribute.String("herald.node", s.nodeID)))
	f := fan()
	span.SetAttributes(attribute.Int("herald.subscribers", f.Queued), attribute.Int("herald.bytes", f.Bytes))
	if pub.Offset != 0 {
		span.SetAttributes(attribute.Int64("herald.offset", int64(pub.Offset)))
	}
	span.End()
}
