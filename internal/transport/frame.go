package transport

import (
	"encoding/binary"

	"github.com/gobwas/ws"
)

// AppendFrame appends an unmasked, final server frame with the payload.
func AppendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	dst = appendHeader(dst, op, len(payload))
	return append(dst, payload...)
}

// FrameHeaderSize is the size of the header AppendFrame writes for n bytes.
func FrameHeaderSize(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xffff:
		return 4
	}
	return 10
}

func appendHeader(dst []byte, op ws.OpCode, n int) []byte {
	b0 := 0x80 | byte(op)
	switch {
	case n < 126:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, b0, 126), uint16(n))
	}
	return binary.BigEndian.AppendUint64(append(dst, b0, 127), uint64(n))
}

// MessageFrame returns a complete frame for a protocol message: text for
// JSON, binary for MessagePack.
func MessageFrame(binary bool, payload []byte) []byte {
	op := ws.OpText
	if binary {
		op = ws.OpBinary
	}
	return AppendFrame(make([]byte, 0, FrameHeaderSize(len(payload))+len(payload)), op, payload)
}

// FramePayload returns the payload of a complete unmasked frame made by
// AppendFrame or MessageFrame (a slice of it, not a copy).
func FramePayload(frame []byte) []byte {
	switch frame[1] & 0x7f {
	case 126:
		return frame[4:]
	case 127:
		return frame[10:]
	}
	return frame[2:]
}

// closeFrame returns a close frame with code and reason (truncated to fit
// the 125-byte control payload).
func closeFrame(code ws.StatusCode, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	if code == 0 {
		return AppendFrame(nil, ws.OpClose, nil)
	}
	return AppendFrame(nil, ws.OpClose, ws.NewCloseFrameBody(code, reason))
}

// parseHeader parses a frame header at the start of b. ok is false when b
// holds only part of it.
func parseHeader(b []byte) (h ws.Header, n int, ok bool, err error) {
	if len(b) < 2 {
		return h, 0, false, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	n = 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, 0, false, nil
		}
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, 0, false, nil
		}
		v := binary.BigEndian.Uint64(b[2:10])
		if v&(1<<63) != 0 {
			return h, 0, false, ws.ErrHeaderLengthMSB
		}
		h.Length = int64(v)
		n = 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		if len(b) < n+4 {
			return h, 0, false, nil
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	return h, n, true, nil
}
