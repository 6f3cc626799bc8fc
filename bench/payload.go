package bench

import (
	"bytes"
	"strconv"
)

// A bench payload is a JSON object that starts with the channel sequence
// number and the send time, padded to the requested size:
//
//	{"s":42,"t":1764100000000000000,"p":"xxxx…"}
//
// t is the publisher's wall clock in unix nanoseconds: publisher and
// subscribers run on one machine, so their clocks agree. The fixed field
// order lets the receiver parse it without allocating.

const payloadPrefix = `{"s":`

// minPayloadSize is the size of a payload without padding, at the largest
// numbers it carries: smaller --size values are rounded up to it.
const minPayloadSize = len(`{"s":16777216,"t":1764100000000000000,"p":""}`)

// appendPayload appends a payload of exactly size bytes when size is at
// least the unpadded length, else the unpadded payload.
func appendPayload(dst []byte, seq uint64, sentNanos int64, size int) []byte {
	start := len(dst)
	dst = append(dst, payloadPrefix...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, sentNanos, 10)
	dst = append(dst, `,"p":"`...)
	pad := size - (len(dst) - start) - 2
	for i := 0; i < pad; i++ {
		dst = append(dst, 'x')
	}
	return append(dst, `"}`...)
}

// Payload shapes (--payload): "pad" pads with x after the two numbers,
// which compresses to almost nothing; "json" fills the rest with an array
// of order-book-like records whose numbers vary, as an application's JSON
// would, so that compression has something real to work on:
//
//	{"s":42,"t":1764100000000000000,"p":[{"id":91342,"sym":"HRLD","px":101.37,"qty":300,"side":"buy","venue":"XNAS"},…]}
//
// Both start with "s" and "t", and the same seq gives the same payload.

// appendPayloadShape appends a payload of the given shape of at most size
// bytes (exactly size for "pad").
func appendPayloadShape(dst []byte, shape string, seq uint64, sentNanos int64, size int) []byte {
	if shape == "doc" {
		return appendDocPayload(dst, seq, sentNanos, size)
	}
	if shape != "json" {
		return appendPayload(dst, seq, sentNanos, size)
	}
	start := len(dst)
	dst = append(dst, payloadPrefix...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, sentNanos, 10)
	dst = append(dst, `,"p":[`...)
	x := uint32(seq)*2654435761 | 1
	next := func() uint32 { x ^= x << 13; x ^= x >> 17; x ^= x << 5; return x }
	var rec []byte
	for n := 0; ; n++ {
		rec = rec[:0]
		if n > 0 {
			rec = append(rec, ',')
		}
		rec = append(rec, `{"id":`...)
		rec = strconv.AppendUint(rec, uint64(next()%100000), 10)
		rec = append(rec, `,"sym":"`...)
		rec = append(rec, jsonSymbols[next()%uint32(len(jsonSymbols))]...)
		rec = append(rec, `","px":`...)
		px := next() % 100000
		rec = strconv.AppendUint(rec, uint64(px/100), 10)
		rec = append(rec, '.')
		rec = append(rec, byte('0'+px/10%10), byte('0'+px%10))
		rec = append(rec, `,"qty":`...)
		rec = strconv.AppendUint(rec, uint64(next()%50+1)*100, 10)
		if next()%2 == 0 {
			rec = append(rec, `,"side":"buy"`...)
		} else {
			rec = append(rec, `,"side":"sell"`...)
		}
		rec = append(rec, `,"venue":"`...)
		rec = append(rec, jsonVenues[next()%uint32(len(jsonVenues))]...)
		rec = append(rec, `"}`...)
		if len(dst)-start+len(rec)+2 > size {
			break
		}
		dst = append(dst, rec...)
	}
	return append(dst, `]}`...)
}

var (
	jsonSymbols = []string{"HRLD", "ACME", "GLBX", "NTRN", "QNTM", "VRTX", "ZEPH", "OMNI", "PLSR", "KRKN"}
	jsonVenues  = []string{"XNAS", "XNYS", "ARCX", "BATS", "IEXG"}
)

// parsePayload reads the sequence number and send time at the start of
// data. It does not look past them, so data may be followed by the rest of
// the enclosing message.
func parsePayload(data []byte) (seq uint64, sentNanos int64, ok bool) {
	if !bytes.HasPrefix(data, []byte(payloadPrefix)) {
		return 0, 0, false
	}
	data = data[len(payloadPrefix):]
	seq, data, ok = parseUint(data)
	if !ok || !bytes.HasPrefix(data, []byte(`,"t":`)) {
		return 0, 0, false
	}
	t, _, ok := parseUint(data[len(`,"t":`):])
	if !ok || t > 1<<62 {
		return 0, 0, false
	}
	return seq, int64(t), true
}

// parseUint parses the decimal digits at the start of b (at most 19) and
// returns the rest.
func parseUint(b []byte) (v uint64, rest []byte, ok bool) {
	i := 0
	for ; i < len(b) && i < 19 && b[i] >= '0' && b[i] <= '9'; i++ {
		v = v*10 + uint64(b[i]-'0')
	}
	return v, b[i:], i > 0
}

// The "doc" shape is one document that changes a little at each message,
// as the state of a dashboard or a game does: fixed-width records whose
// fields are a function of the record and of its version, where one
// record (of twelve in a kilobyte) gets a new version at each sequence
// number: its px, qty and side change, besides "s" and "t":
//
//	{"s":42,"t":1764100000000000000,"p":[{"id":10000,"sym":"HRLD","px":101.37,"qty":3000,"side":"buy ","venue":"XNAS"},…]}
//
// The same seq gives the same document.

// docRecordLen is the length of one record of the doc shape, comma
// included.
const docRecordLen = len(`,{"id":10000,"sym":"HRLD","px":101.37,"qty":3000,"side":"buy ","venue":"XNAS"}`)

func appendDocPayload(dst []byte, seq uint64, sentNanos int64, size int) []byte {
	start := len(dst)
	dst = append(dst, payloadPrefix...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, sentNanos, 10)
	dst = append(dst, `,"p":[`...)
	n := max((size-(len(dst)-start)-2)/docRecordLen, 1)
	for k := 0; k < n; k++ {
		if k > 0 {
			dst = append(dst, ',')
		}
		// Record k changes when seq+k crosses a multiple of n: one record
		// per sequence number.
		v := (seq + uint64(k)) / uint64(n)
		x := uint32(v*2654435761+uint64(k)*40503) | 1
		next := func() uint32 { x ^= x << 13; x ^= x >> 17; x ^= x << 5; return x }
		dst = append(dst, `{"id":`...)
		dst = strconv.AppendUint(dst, 10000+uint64(k), 10)
		dst = append(dst, `,"sym":"`...)
		dst = append(dst, jsonSymbols[k%len(jsonSymbols)]...)
		dst = append(dst, `","px":`...)
		px := 10000 + next()%90000
		dst = strconv.AppendUint(dst, uint64(px/100), 10)
		dst = append(dst, '.', byte('0'+px/10%10), byte('0'+px%10))
		dst = append(dst, `,"qty":`...)
		dst = strconv.AppendUint(dst, uint64(1000+next()%9000), 10)
		if next()%2 == 0 {
			dst = append(dst, `,"side":"buy "`...)
		} else {
			dst = append(dst, `,"side":"sell"`...)
		}
		dst = append(dst, `,"venue":"`...)
		dst = append(dst, jsonVenues[k%len(jsonVenues)]...)
		dst = append(dst, `"}`...)
	}
	return append(dst, `]}`...)
}
