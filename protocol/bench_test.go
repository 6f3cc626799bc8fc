package protocol_test

import (
	"testing"

	"github.com/heraldhq/herald/protocol"
)

// The codec benchmarks compare JSON and MessagePack on the two hot paths:
// encoding a publication push (once per publication, for all subscribers)
// and decoding a client command (once per command).

var benchPub = &protocol.Publication{
	Channel: "chat:room-42",
	Offset:  123456,
	Data:    protocol.Data(`{"user":"alice","text":"hello there, how is everyone doing today?","ts":1764100000}`),
	Time:    1764100000000,
}

func BenchmarkEncodePublication(b *testing.B) {
	for _, c := range codecs {
		b.Run(c.Name(), func(b *testing.B) {
			var buf []byte
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				buf, _ = c.AppendPublicationPush(buf[:0], benchPub)
			}
			b.ReportMetric(float64(len(buf)), "bytes/msg")
		})
	}
}

func BenchmarkDecodePublish(b *testing.B) {
	for _, c := range codecs {
		msg, _ := c.AppendCommand(nil, &protocol.Command{ID: 42, Publish: &protocol.PublishRequest{Channel: "chat:room-42", Data: benchPub.Data}})
		b.Run(c.Name(), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				var cmd protocol.Command
				if err := c.DecodeCommand(msg, &cmd); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(msg)), "bytes/msg")
		})
	}
}

func BenchmarkDecodePush(b *testing.B) {
	for _, c := range codecs {
		msg, _ := c.AppendPublicationPush(nil, benchPub)
		b.Run(c.Name(), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				var m protocol.ServerMessage
				if err := c.DecodeServerMessage(msg, &m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
