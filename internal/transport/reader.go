package transport

import (
	"errors"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// reader is the frame reader state between reads. It is empty (no memory
// held) whenever the bytes read so far end on a message boundary.
type reader struct {
	pending []byte    // start of an incomplete frame
	frag    []byte    // data of a fragmented message so far
	fragOp  ws.OpCode // opcode of the fragmented message, 0 if none
	fragZ   bool      // the fragmented message is compressed (RSV1 on its first frame)
	need    int       // bytes the incomplete frame needs in all, if known
}

// errStop ends processing: the connection is closing.
var errStop = errors.New("stop")

// process parses the frames in b, dispatches messages and control frames,
// and returns the number of bytes consumed. A partial frame at the end is
// left unconsumed. err is errStop when the connection must stop reading.
func (c *Conn) process(b []byte) (int, error) {
	consumed := 0
	max := c.opts.MaxMessageSize
	for {
		rest := b[consumed:]
		if c.stopping() {
			return consumed, errStop
		}
		h, hn, ok, err := parseHeader(rest)
		if err != nil {
			c.fail(ws.StatusProtocolError, "bad frame length")
			return consumed, errStop
		}
		if !ok {
			c.rd.need = 0
			return consumed, nil
		}
		state := ws.StateServerSide
		if c.rd.fragOp != 0 {
			state |= ws.StateFragmented
		}
		if c.deflate {
			state |= ws.StateExtended
		}
		if err := ws.CheckHeader(h, state); err != nil {
			c.fail(ws.StatusProtocolError, err.Error())
			return consumed, errStop
		}
		// permessage-deflate defines RSV1, on the first frame of a data
		// message only: never on control frames or continuations.
		if h.Rsv != 0 && (h.Rsv != rsv1 || h.OpCode.IsControl() || h.OpCode == ws.OpContinuation) {
			c.fail(ws.StatusProtocolError, "unexpected reserved bit")
			return consumed, errStop
		}
		if h.Length > int64(max) || (h.OpCode == ws.OpContinuation && int64(len(c.rd.frag))+h.Length > int64(max)) {
			c.fail(ws.StatusMessageTooBig, "message too big")
			return consumed, errStop
		}
		total := hn + int(h.Length)
		if len(rest) < total {
			c.rd.need = total
			return consumed, nil
		}
		payload := rest[hn:total]
		ws.Cipher(payload, h.Mask, 0)
		consumed += total
		if err := c.frame(h, payload); err != nil {
			return consumed, err
		}
	}
}

func (c *Conn) frame(h ws.Header, payload []byte) error {
	switch h.OpCode {
	case ws.OpPing:
		_ = c.Enqueue(AppendFrame(nil, ws.OpPong, payload), nil)
		return nil
	case ws.OpPong:
		return nil
	case ws.OpClose:
		return c.peerClose(payload)
	case ws.OpText, ws.OpBinary:
		z := h.Rsv == rsv1
		if !h.Fin {
			c.rd.fragOp, c.rd.fragZ = h.OpCode, z
			c.rd.frag = append(c.rd.frag[:0], payload...)
			return nil
		}
		return c.deliver(h.OpCode, z, payload)
	case ws.OpContinuation:
		c.rd.frag = append(c.rd.frag, payload...)
		if !h.Fin {
			return nil
		}
		op, z, msg := c.rd.fragOp, c.rd.fragZ, c.rd.frag
		err := c.deliver(op, z, msg)
		c.rd.fragOp, c.rd.fragZ, c.rd.frag = 0, false, nil
		return err
	}
	c.fail(ws.StatusProtocolError, "unexpected opcode")
	return errStop
}

// rsv1 is ws.Header.Rsv with RSV1 set: the permessage-deflate bit.
const rsv1 = 0x4

// deliver hands a complete message to the handler, inflating it first
// when z (compressed) is set.
func (c *Conn) deliver(op ws.OpCode, z bool, msg []byte) error {
	if z {
		f, out, err := inflate(msg, c.opts.MaxMessageSize)
		switch err {
		case nil:
			defer f.release()
			msg = out
		case errInflateTooBig:
			c.fail(ws.StatusMessageTooBig, "message too big")
			return errStop
		default:
			c.fail(ws.StatusInvalidFramePayloadData, err.Error())
			return errStop
		}
	}
	if op == ws.OpText && !utf8.Valid(msg) {
		c.fail(ws.StatusInvalidFramePayloadData, "invalid UTF-8")
		return errStop
	}
	c.mu.Lock()
	closing := c.closing || c.closed
	c.mu.Unlock()
	if closing {
		// After our close frame, data is discarded; reading goes on only to
		// see the peer's close frame.
		return nil
	}
	c.h.OnMessage(c, msg, op == ws.OpBinary)
	return nil
}

// peerClose answers the peer's close frame and ends reading.
func (c *Conn) peerClose(payload []byte) error {
	code, reason := ws.StatusNoStatusRcvd, ""
	switch {
	case len(payload) == 1:
		c.fail(ws.StatusProtocolError, "bad close payload")
		return errStop
	case len(payload) >= 2:
		code, reason = ws.ParseCloseFrameData(payload)
		if err := ws.CheckCloseFrameData(code, reason); err != nil {
			c.fail(ws.StatusProtocolError, err.Error())
			return errStop
		}
	}
	c.mu.Lock()
	c.peerClosed = true
	already := c.closing
	// Our close frame is queued or out: the handshake is complete once it
	// is written (commit shuts the socket then), or now if it was.
	sent := already && !c.hasCloseQueued()
	if c.closeCode == 0 {
		c.closeCode = code
	}
	c.mu.Unlock()
	if sent {
		c.shutdown(nil)
	}
	if already {
		return errStop
	}
	echo := code
	if code == ws.StatusNoStatusRcvd {
		echo = 0
	}
	c.Close(echo, "", nil, false)
	return errStop
}

func (c *Conn) hasCloseQueued() bool {
	found := false
	c.q.each(func(it *item) bool {
		found = it.tag == closeTag
		return !found
	})
	return found
}
