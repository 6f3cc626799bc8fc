package redis

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/heraldhq/herald/internal/mpwire"
	"github.com/heraldhq/herald/protocol"
	"github.com/vmihailenco/msgpack/v5"
)

// Wire format of what the broker puts in Redis.
//
// A publication body is the MessagePack encoding of protocol.Publication
// without Channel and Offset (the channel is implied by the key, the offset
// by the stream entry ID). History stores the body; live messages wrap it:
//
//	p<offset>:<epoch>:<body>   publication (offset 0 and epoch "" without history)
//	b<offset>:<epoch>:<body>...  publications appended together, with consecutive
//	                           offsets from <offset> (all 0 without history); the
//	                           bodies follow each other (MessagePack is self-delimiting)
//	j<ClientInfo msgpack>      join
//	l<ClientInfo msgpack>      leave
//
// The publish script writes the "p<offset>:<epoch>:" header itself, since
// only it knows the offset. Control messages travel raw on their own name.
const (
	kindPub   = 'p'
	kindBatch = 'b'
	kindJoin  = 'j'
	kindLeave = 'l'
)

var errMalformed = errors.New("herald: redis: malformed message")

type encoder struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = msgpack.NewEncoder(&e.buf)
	e.enc.UseCompactInts(true)
	return e
}}

// encode appends kind (if not 0) and v's MessagePack encoding to a new
// string.
func encode(kind byte, v any) (string, error) {
	e := encoders.Get().(*encoder)
	defer func() {
		if e.buf.Cap() <= 64<<10 {
			encoders.Put(e)
		}
	}()
	e.buf.Reset()
	if kind != 0 {
		e.buf.WriteByte(kind)
	}
	if err := e.enc.Encode(v); err != nil {
		return "", err
	}
	return e.buf.String(), nil
}

// wireBody is a publication body: the client-facing fields of
// protocol.Publication under the same keys, and the trace context.
type wireBody struct {
	Data  protocol.Data        `msgpack:"data"`
	Info  *protocol.ClientInfo `msgpack:"info,omitempty"`
	Tags  map[string]string    `msgpack:"tags,omitempty"`
	Time  int64                `msgpack:"time,omitempty"`
	Trace string               `msgpack:"tr,omitempty"`
}

// encodeBody encodes pub for history and live delivery.
func encodeBody(pub *protocol.Publication) (string, error) {
	if len(pub.Data) > 0 && pub.Info == nil && pub.Tags == nil && pub.Trace == "" && pub.Time >= 0 {
		return plainBody(pub.Data, pub.Time), nil
	}
	return encode(0, &wireBody{Data: pub.Data, Info: pub.Info, Tags: pub.Tags, Time: pub.Time, Trace: pub.Trace})
}

// plainBody is encode's result for a wireBody of data and time alone (a
// time of 0 is omitted), written without reflection: the form of every
// publication of the server API without tags.
func plainBody(data []byte, ms int64) string {
	var b strings.Builder
	b.Grow(len(data) + 24)
	if ms > 0 {
		b.WriteByte(0x82) // map of 2
	} else {
		b.WriteByte(0x81)
	}
	b.WriteString("\xa4data")
	var h [5]byte
	b.Write(mpwire.AppendBinHeader(h[:0], len(data)))
	b.Write(data)
	if ms > 0 {
		b.WriteString("\xa4time")
		// A compact unsigned integer, as UseCompactInts writes it.
		switch u := uint64(ms); {
		case u <= 0x7f:
			b.WriteByte(byte(u))
		case u <= 0xff:
			b.Write([]byte{0xcc, byte(u)})
		case u <= 0xffff:
			b.Write([]byte{0xcd, byte(u >> 8), byte(u)})
		case u <= 0xffffffff:
			b.Write([]byte{0xce, byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
		default:
			b.Write([]byte{0xcf, byte(u >> 56), byte(u >> 48), byte(u >> 40), byte(u >> 32), byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
		}
	}
	return b.String()
}

func decode(b string, v any) error {
	d := msgpack.NewDecoder(strings.NewReader(b))
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	return nil
}

// decodeBody decodes a stored or live publication body.
func decodeBody(ch string, offset uint64, body string) (*protocol.Publication, error) {
	var w wireBody
	if err := decode(body, &w); err != nil {
		return nil, err
	}
	return &protocol.Publication{Channel: ch, Offset: offset, Data: w.Data, Info: w.Info, Tags: w.Tags, Time: w.Time, Trace: w.Trace}, nil
}

// decodePlain reads a body of data and time alone (either may be
// missing), the form plainBody writes, by hand: the same result as the
// library's decoding, with Data a slice of b. ok is false for any other
// body, which the caller then decodes with the library.
func decodePlain(b []byte) (w wireBody, rest []byte, ok bool) {
	n, b, ok := mpwire.ReadMapLen(b)
	if !ok {
		return w, b, false
	}
	for range n {
		var k []byte
		if k, b, ok = mpwire.ReadStr(b); !ok {
			return w, b, false
		}
		switch string(k) {
		case "data":
			var d []byte
			// An empty bin is left to the library (an empty slice, not nil).
			if d, b, ok = mpwire.ReadBin(b); !ok || len(d) == 0 {
				return w, b, false
			}
			w.Data = d
		case "time":
			if w.Time, b, ok = mpwire.ReadInt(b); !ok {
				return w, b, false
			}
		default:
			return w, b, false
		}
	}
	return w, b, true
}

// decodeWire decodes the body at the start of b with the library.
func decodeWire(b []byte) (w wireBody, rest []byte, err error) {
	r := bytes.NewReader(b)
	if err := msgpack.NewDecoder(r).Decode(&w); err != nil {
		return w, nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return w, b[len(b)-r.Len():], nil
}

// decodeBodies decodes the bodies of a live message, which follow each
// other: one (kindPub) or up to maxLiveBatch (kindBatch), the first at
// offset (then the next ones at the offsets after it), or all at 0.
// Plain bodies are read by hand, others by the library.
func decodeBodies(ch string, offset uint64, body string, batch bool) ([]*protocol.Publication, error) {
	b := []byte(body)             // one copy: the publications' data are slices of it
	var ps []protocol.Publication // one allocation for them all, mostly
	for len(b) > 0 {
		if len(ps) == maxLiveBatch {
			return nil, fmt.Errorf("%w: more than %d publications in a batch", errMalformed, maxLiveBatch)
		}
		w, rest, ok := decodePlain(b)
		if !ok {
			var err error
			if w, rest, err = decodeWire(b); err != nil {
				return nil, err
			}
		}
		if ps == nil {
			// The bodies of a batch are mostly of one size: room for as
			// many as the first's size says.
			n := 1
			if batch {
				n = min(len(b)/max(len(b)-len(rest), 1)+1, maxLiveBatch)
			}
			ps = make([]protocol.Publication, 0, n)
		}
		off := offset
		if offset != 0 {
			off += uint64(len(ps))
		}
		ps = append(ps, protocol.Publication{Channel: ch, Offset: off, Data: w.Data, Info: w.Info, Tags: w.Tags, Time: w.Time, Trace: w.Trace})
		b = rest
		if !batch {
			break
		}
	}
	if len(ps) == 0 {
		return nil, errMalformed
	}
	pubs := make([]*protocol.Publication, len(ps))
	for i := range ps {
		pubs[i] = &ps[i]
	}
	return pubs, nil
}

// liveMessage is a decoded message of a channel's pub/sub name.
type liveMessage struct {
	kind  byte
	pubs  []*protocol.Publication // kindPub (one), kindBatch (one or more)
	epoch string                  // kindPub, kindBatch
	info  *protocol.ClientInfo    // kindJoin, kindLeave
}

// maxLiveBatch bounds the publications a batch message may carry, as the
// broker bounds what it sends.
const maxLiveBatch = 4096

// decodeLive decodes a message received on the channel's pub/sub name.
func decodeLive(ch, msg string) (liveMessage, error) {
	if msg == "" {
		return liveMessage{}, errMalformed
	}
	m := liveMessage{kind: msg[0]}
	switch m.kind {
	case kindPub, kindBatch:
		rest := msg[1:]
		i := strings.IndexByte(rest, ':')
		if i < 0 {
			return m, errMalformed
		}
		offset, err := strconv.ParseUint(rest[:i], 10, 64)
		if err != nil {
			return m, errMalformed
		}
		rest = rest[i+1:]
		j := strings.IndexByte(rest, ':')
		if j < 0 {
			return m, errMalformed
		}
		m.epoch = rest[:j]
		if (offset == 0) != (m.epoch == "") {
			return m, errMalformed
		}
		rest = rest[j+1:]
		m.pubs, err = decodeBodies(ch, offset, rest, m.kind == kindBatch)
		return m, err
	case kindJoin, kindLeave:
		m.info = new(protocol.ClientInfo)
		return m, decode(msg[1:], m.info)
	default:
		return m, fmt.Errorf("%w: kind %q", errMalformed, m.kind)
	}
}
