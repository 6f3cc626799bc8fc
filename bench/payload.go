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
