package nats

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/heraldhq/herald/internal/mpwire"
	"github.com/heraldhq/herald/protocol"
)

// Headers Herald sets on its NATS messages.
const (
	hdrKind   = "Herald-Kind"   // kindPub, kindMark, kindJoin, kindLeave, kindHead
	hdrEpoch  = "Herald-Epoch"  // history messages and markers
	hdrOffset = "Herald-Offset" // history messages: the last offset they carry; "0" on markers
	hdrCount  = "Herald-Count"  // history messages carrying several publications: how many
	hdrSize   = "Herald-Size"   // HistorySize in force when the message was written
	hdrTTL    = "Herald-TTL"    // HistoryTTL in force, in milliseconds
	hdrNonce  = "Herald-Nonce"  // history messages: the append's random name, to know it again after a send got no answer

	kindPub   = "pub"
	kindMark  = "mark"
	kindHead  = "head" // on a live subject: the channel's history reaches Herald-Epoch, Herald-Offset
	kindJoin  = "join"
	kindLeave = "leave"
)

// names holds every stream name and subject prefix of one Config.Prefix.
type names struct {
	histStream, presStream, idemStream, cursStream string
	// Subject prefixes; a token follows.
	hist, live, pres, idem, curs string
	ctl                          string
}

func newNames(prefix string) names {
	return names{
		histStream: prefix + "-history",
		presStream: prefix + "-presence",
		idemStream: prefix + "-idempotency",
		cursStream: prefix + "-cursors",
		hist:       prefix + ".hist.",
		live:       prefix + ".live.",
		pres:       prefix + ".pres.",
		idem:       prefix + ".idem.",
		curs:       prefix + ".curs.",
		ctl:        prefix + ".ctl",
	}
}

// errEmptyName is returned for an empty channel name or client id: neither
// can be a subject token.
var errEmptyName = errors.New("herald: nats broker: empty channel name or client id")

// tokenByte reports whether b may stand in a subject token as itself. The
// set is Herald's channel alphabet without '.', the subject separator.
func tokenByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("_-:@/=,#!~+;", b) >= 0
}

// token escapes s into a single subject token: bytes outside tokenByte,
// '%' included, become %XX. The mapping is injective, so two channels never
// share a subject, and names in Herald's alphabet stay readable.
func token(s string) (string, error) {
	if s == "" {
		return "", errEmptyName
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if !tokenByte(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s, nil
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if tokenByte(c) {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	return string(b), nil
}

// keyToken hashes an idempotency key into a token of fixed length, so that
// long client-chosen keys do not make long subjects.
func keyToken(key string) string {
	sum := sha256.Sum256([]byte(key))
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// newEpoch returns a random stream epoch.
func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
}

// wirePub is a publication's body on the wire. Channel, offset and epoch
// travel in the subject and headers.
type wirePub struct {
	Data  protocol.Data        `msgpack:"d"`
	Info  *protocol.ClientInfo `msgpack:"i,omitempty"`
	Tags  map[string]string    `msgpack:"t,omitempty"`
	Time  int64                `msgpack:"tm,omitempty"`
	Trace string               `msgpack:"tr,omitempty"`
	// Key is keyToken of the publication's idempotency key: a retry whose
	// claim was left pending looks for it in the history.
	Key string `msgpack:"k,omitempty"`
}

func (w *wirePub) pub(ch string, offset uint64) *protocol.Publication {
	return &protocol.Publication{Channel: ch, Offset: offset, Data: w.Data, Info: w.Info, Tags: w.Tags, Time: w.Time, Trace: w.Trace}
}

func encodePub(p *protocol.Publication, key string) ([]byte, error) {
	if len(p.Data) > 0 && p.Info == nil && p.Tags == nil && p.Trace == "" {
		return plainPub(p.Data, p.Time, key), nil
	}
	return msgpack.Marshal(&wirePub{Data: p.Data, Info: p.Info, Tags: p.Tags, Time: p.Time, Trace: p.Trace, Key: key})
}

// plainPub is msgpack.Marshal's result for a wirePub of data, time and
// key alone (a time of 0 and an empty key are omitted), written without
// reflection: the form of every publication of the server API without
// tags.
func plainPub(data []byte, ms int64, key string) []byte {
	n := 1
	if ms != 0 {
		n++
	}
	if key != "" {
		n++
	}
	b := make([]byte, 0, len(data)+len(key)+24)
	b = append(b, 0x80|byte(n), 0xa1, 'd')
	b = mpwire.AppendBinHeader(b, len(data))
	b = append(b, data...)
	if ms != 0 {
		u := uint64(ms)
		b = append(b, 0xa2, 't', 'm', 0xd3, byte(u>>56), byte(u>>48), byte(u>>40), byte(u>>32), byte(u>>24), byte(u>>16), byte(u>>8), byte(u))
	}
	if key != "" {
		b = append(b, 0xa1, 'k')
		b = mpwire.AppendStrHeader(b, len(key))
		b = append(b, key...)
	}
	return b
}

// maxBatch bounds the publications of one history message.
const maxBatch = 1024

// encodeBatch returns the body of a message carrying bodies, each an
// encoded wirePub: the body itself for one, a MessagePack array of them
// for more (the message then has a Herald-Count header).
func encodeBatch(bodies [][]byte) []byte {
	if len(bodies) == 1 {
		return bodies[0]
	}
	n := 5
	for _, b := range bodies {
		n += len(b)
	}
	out := make([]byte, 0, n)
	switch l := len(bodies); {
	case l < 16:
		out = append(out, 0x90|byte(l))
	case l < 1<<16:
		out = append(out, 0xdc, byte(l>>8), byte(l))
	default:
		out = append(out, 0xdd, byte(l>>24), byte(l>>16), byte(l>>8), byte(l))
	}
	for _, b := range bodies {
		out = append(out, b...)
	}
	return out
}

// decodeEntries decodes a publication message: its publications, the
// offset of the first (0 without history) and the epoch ("" without
// history). A message carries one publication, or Herald-Count of them
// with consecutive offsets ending at Herald-Offset.
func decodeEntries(h natsgo.Header, body []byte) (ws []wirePub, first uint64, epoch string, err error) {
	n := 1
	if v := h.Get(hdrCount); v != "" {
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > maxBatch {
			return nil, 0, "", fmt.Errorf("decode publication: bad %s %q", hdrCount, v)
		}
	}
	ws = make([]wirePub, n)
	if n == 1 {
		_, err = decodePub(body, &ws[0])
	} else {
		// The array's length must be the count (which is bounded): a
		// corrupt length sizes nothing.
		l, rest, ok := mpwire.ReadArrayLen(body)
		if !ok {
			r := bytes.NewReader(body)
			if l, err = msgpack.NewDecoder(r).DecodeArrayLen(); err == nil {
				rest = body[len(body)-r.Len():]
			}
		}
		if err == nil && l != n {
			err = fmt.Errorf("%d publications, %s says %d", l, hdrCount, n)
		}
		for i := 0; err == nil && i < n; i++ {
			rest, err = decodePub(rest, &ws[i])
		}
	}
	if err != nil {
		return nil, 0, "", fmt.Errorf("decode publication: %w", err)
	}
	epoch = h.Get(hdrEpoch)
	if epoch != "" {
		last, err := strconv.ParseUint(h.Get(hdrOffset), 10, 64)
		if err != nil {
			return nil, 0, "", fmt.Errorf("decode publication offset: %w", err)
		}
		if last < uint64(n) {
			return nil, 0, "", fmt.Errorf("decode publication: offset %d with %d publications", last, n)
		}
		first = last - uint64(n) + 1
	}
	return ws, first, epoch, nil
}

// decodePub decodes the publication body at the start of b into w and
// returns what follows it. A body of data, time and key alone (the form
// plainPub writes) is read by hand, the same as the library reads it but
// with Data a slice of b; others by the library.
func decodePub(b []byte, w *wirePub) (rest []byte, err error) {
	if rest, ok := decodePlainPub(b, w); ok {
		return rest, nil
	}
	*w = wirePub{}
	r := bytes.NewReader(b)
	if err := msgpack.NewDecoder(r).Decode(w); err != nil {
		return nil, err
	}
	return b[len(b)-r.Len():], nil
}

// decodePlainPub reads a body of data, time and key alone (any of them
// may be missing) into w; ok is false for any other body, w then
// partly filled.
func decodePlainPub(b []byte, w *wirePub) (rest []byte, ok bool) {
	n, b, ok := mpwire.ReadMapLen(b)
	if !ok {
		return b, false
	}
	for range n {
		var k []byte
		if k, b, ok = mpwire.ReadStr(b); !ok {
			return b, false
		}
		switch string(k) {
		case "d":
			var d []byte
			// An empty bin is left to the library (an empty slice, not nil).
			if d, b, ok = mpwire.ReadBin(b); !ok || len(d) == 0 {
				return b, false
			}
			w.Data = d
		case "tm":
			if w.Time, b, ok = mpwire.ReadInt(b); !ok {
				return b, false
			}
		case "k":
			var key []byte
			if key, b, ok = mpwire.ReadStr(b); !ok {
				return b, false
			}
			w.Key = string(key)
		default:
			return b, false
		}
	}
	return b, true
}

// head is what the last message of a channel's history subject says.
type head struct {
	epoch  string
	offset uint64 // 0 for a marker
	seq    uint64 // stream sequence of the message
	size   int
	ttl    time.Duration
}

func parseHead(h natsgo.Header, seq uint64) (head, error) {
	hd := head{epoch: h.Get(hdrEpoch), seq: seq}
	if hd.epoch == "" {
		return hd, fmt.Errorf("history message %d has no %s header", seq, hdrEpoch)
	}
	var err error
	if hd.offset, err = strconv.ParseUint(h.Get(hdrOffset), 10, 64); err != nil {
		return hd, fmt.Errorf("history message %d: bad offset: %w", seq, err)
	}
	if v := h.Get(hdrSize); v != "" {
		hd.size, _ = strconv.Atoi(v)
	}
	if v := h.Get(hdrTTL); v != "" {
		ms, _ := strconv.ParseInt(v, 10, 64)
		hd.ttl = time.Duration(ms) * time.Millisecond
	}
	return hd, nil
}

// window returns the offsets the history keeps: the last size ones (a
// TTL-only history keeps up to 1<<20, as the memory broker does).
func (hd head) window() (lo, hi uint64) {
	size := uint64(hd.size)
	if hd.size <= 0 {
		size = 1 << 20
	}
	lo = 1
	if hd.offset > size {
		lo = hd.offset - size + 1
	}
	return lo, hd.offset
}

// presRecord is a presence entry's body.
type presRecord struct {
	Client string               `msgpack:"c"`
	Info   *protocol.ClientInfo `msgpack:"i"`
	TTL    int64                `msgpack:"t"` // milliseconds
}

// idemRecord is an idempotency key's body: pending while the first
// publisher works, then done with the position it got.
type idemRecord struct {
	Done   bool   `msgpack:"d,omitempty"`
	Epoch  string `msgpack:"e,omitempty"`
	Offset uint64 `msgpack:"o,omitempty"`
	Window int64  `msgpack:"w"` // milliseconds
}
