package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/klauspost/compress/flate"
)

// maxMessage bounds a server message the bench accepts (the server's own
// default limit is 64 KiB; history replies can be larger).
const maxMessage = 16 << 20

// wsConn is a lean client WebSocket connection: a buffered reader that
// hands out frame payloads without copying them, and a write buffer that
// coalesces masked frames into one write. It is not safe for concurrent
// use: the bench gives each connection to one goroutine.
type wsConn struct {
	nc     net.Conn
	br     *bufio.Reader
	op     ws.OpCode // OpText or OpBinary
	mbuf   []byte    // message being built
	wbuf   []byte    // frames waiting for flush
	big    []byte    // payloads larger than br's buffer, fragmented messages
	maskSt uint32    // xorshift state for masking keys
	// deflate: the server accepted permessage-deflate; compressed messages
	// are inflated into inflated.
	deflate  bool
	inflated []byte
}

// countingReader counts the bytes read from a socket into n.
type countingReader struct {
	r io.Reader
	n *atomic.Uint64
}

func (c countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(uint64(k))
	return k, err
}

// closeError is the error of a connection the server closed with a close
// frame.
type closeError struct{ code uint16 }

func (e *closeError) Error() string { return fmt.Sprintf("closed by server with code %d", e.code) }

// dialer opens bench connections.
type dialer struct {
	urls      []string // several nodes': see urlFor
	channels  int
	tgt       target
	timeout   time.Duration
	readBuf   int
	sourceIPs []net.IP
	// compression offers permessage-deflate (as Chromium does: with
	// client_max_window_bits).
	compression bool
	// wire, if set, gives the counter of connection i's socket bytes read.
	wire func(i int) *atomic.Uint64
}

var deflateOffer = []httphead.Option{{Name: []byte("permessage-deflate")}}

func init() { deflateOffer[0].Parameters.Set([]byte("client_max_window_bits"), nil) }

// dial opens connection number i (its node and source address are picked
// by i).
func (d *dialer) dial(ctx context.Context, i int) (*wsConn, error) {
	nd := &net.Dialer{Timeout: d.timeout, Control: dialControl}
	if len(d.sourceIPs) > 0 {
		nd.LocalAddr = &net.TCPAddr{IP: d.sourceIPs[i%len(d.sourceIPs)]}
	}
	wd := ws.Dialer{
		Timeout:        d.timeout,
		NetDial:        nd.DialContext,
		ReadBufferSize: 1024,
	}
	if p := d.tgt.Subprotocol(); p != "" {
		wd.Protocols = []string{p}
	}
	if d.compression {
		wd.Extensions = deflateOffer
	}
	nc, br, hs, err := wd.Dial(ctx, urlFor(d.urls, d.channels, i))
	if err != nil {
		return nil, err
	}
	if hs.Protocol != d.tgt.Subprotocol() {
		nc.Close()
		if br != nil {
			ws.PutReader(br)
		}
		return nil, fmt.Errorf("server chose subprotocol %q, want %q", hs.Protocol, d.tgt.Subprotocol())
	}
	var src io.Reader = nc
	if d.wire != nil {
		src = countingReader{r: nc, n: d.wire(i)}
	}
	if br != nil {
		if n := br.Buffered(); n > 0 {
			pre, _ := br.Peek(n)
			src = io.MultiReader(bytes.NewReader(bytes.Clone(pre)), src)
		}
		ws.PutReader(br)
	}
	c := &wsConn{
		nc:     nc,
		br:     bufio.NewReaderSize(src, d.readBuf),
		op:     ws.OpText,
		maskSt: uint32(i)*2654435761 | 1,
	}
	for _, e := range hs.Extensions {
		if string(e.Name) == "permessage-deflate" {
			c.deflate = true
		}
	}
	if d.tgt.Binary() {
		c.op = ws.OpBinary
	}
	return c, nil
}

// Close closes the socket without a close handshake.
func (c *wsConn) Close() error { return c.nc.Close() }

func (c *wsConn) nextMask() [4]byte {
	x := c.maskSt
	x ^= x << 13
	x ^= x >> 17
	x ^= x << 5
	c.maskSt = x
	var m [4]byte
	binary.LittleEndian.PutUint32(m[:], x)
	return m
}

// queue frames the message in c.mbuf for the next flush.
func (c *wsConn) queue() { c.wbuf = appendClientFrame(c.wbuf, c.op, c.mbuf, c.nextMask()) }

// flush writes the queued frames with one write.
func (c *wsConn) flush() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.wbuf)
	c.wbuf = c.wbuf[:0]
	return err
}

// send queues the message in c.mbuf and flushes.
func (c *wsConn) send() error {
	c.queue()
	return c.flush()
}

// appendClientFrame appends payload as one final, masked frame.
func appendClientFrame(dst []byte, op ws.OpCode, payload []byte, mask [4]byte) []byte {
	dst = append(dst, 0x80|byte(op))
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	dst = append(dst, mask[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[start:], mask, 0)
	return dst
}

var errTooBig = errors.New("server message too large")

// read returns the payload of the next data message. It is valid until the
// next call; it aliases the read buffer when it fits. WebSocket pings are
// answered, pongs skipped; a close frame ends the connection with a
// *closeError.
func (c *wsConn) read() ([]byte, error) {
	msg, z, err := c.readRaw()
	if err != nil || !z {
		return msg, err
	}
	if c.inflated, err = inflateMessage(c.inflated[:0], msg); err != nil {
		return nil, err
	}
	return c.inflated, nil
}

// readRaw is read without inflation: z reports a compressed message.
func (c *wsConn) readRaw() (_ []byte, z bool, err error) {
	var frag []byte // a fragmented message being assembled (in c.big)
	fragmented := false
	for {
		h, err := c.br.Peek(2)
		if err != nil {
			return nil, false, err
		}
		fin := h[0]&0x80 != 0
		if op := ws.OpCode(h[0] & 0x0f); op == ws.OpText || op == ws.OpBinary {
			z = h[0]&0x40 != 0
			if z && !c.deflate {
				return nil, false, errors.New("compressed message without permessage-deflate")
			}
		}
		op := ws.OpCode(h[0] & 0x0f)
		masked := h[1]&0x80 != 0
		n := uint64(h[1] & 0x7f)
		hl := 2
		switch n {
		case 126:
			hl = 4
		case 127:
			hl = 10
		}
		if masked {
			hl += 4
		}
		if hl > 2 {
			if h, err = c.br.Peek(hl); err != nil {
				return nil, false, err
			}
		}
		switch n {
		case 126:
			n = uint64(binary.BigEndian.Uint16(h[2:4]))
		case 127:
			n = binary.BigEndian.Uint64(h[2:10])
		}
		var mask [4]byte
		if masked {
			copy(mask[:], h[hl-4:hl])
		}
		if _, err := c.br.Discard(hl); err != nil {
			return nil, false, err
		}
		if n > maxMessage {
			return nil, false, errTooBig
		}
		var p []byte
		if int(n) <= c.br.Size() && (!fragmented || op.IsControl()) {
			if p, err = c.br.Peek(int(n)); err != nil {
				return nil, false, err
			}
			_, _ = c.br.Discard(int(n)) // n <= Buffered after Peek: no read
		} else {
			start := len(frag)
			if fragmented {
				frag = append(frag, make([]byte, n)...)
			} else {
				if uint64(cap(c.big)) < n {
					c.big = make([]byte, n)
				}
				frag = c.big[:n]
			}
			if _, err := io.ReadFull(c.br, frag[start:]); err != nil {
				return nil, false, err
			}
			p = frag[start:]
		}
		if masked {
			ws.Cipher(p, mask, 0)
		}
		switch op {
		case ws.OpClose:
			code := uint16(ws.StatusNoStatusRcvd)
			if len(p) >= 2 {
				code = binary.BigEndian.Uint16(p)
			}
			return nil, false, &closeError{code: code}
		case ws.OpPing:
			c.wbuf = appendClientFrame(c.wbuf, ws.OpPong, p, c.nextMask())
			if err := c.flush(); err != nil {
				return nil, false, err
			}
			continue
		case ws.OpPong:
			continue
		case ws.OpContinuation:
			if !fragmented {
				return nil, false, errors.New("continuation frame without a first fragment")
			}
			if fin {
				c.big = frag
				return frag, z, nil
			}
			continue
		}
		if !fin {
			if !fragmented {
				fragmented = true
				frag = append(c.big[:0], p...)
			}
			continue
		}
		return p, z, nil
	}
}

// inflater is a flate reader with its input: a message's bytes, then
// deflateTail. Its input is an io.ByteReader, so the flate reader needs no
// bufio.Reader of its own; inflaters are pooled, not kept per connection.
type inflater struct {
	fr   io.ReadCloser
	data []byte
	tail int
}

func (f *inflater) Read(p []byte) (int, error) {
	if len(f.data) > 0 {
		n := copy(p, f.data)
		f.data = f.data[n:]
		return n, nil
	}
	if f.tail == len(deflateTail) {
		return 0, io.EOF
	}
	n := copy(p, deflateTail[f.tail:])
	f.tail += n
	return n, nil
}

func (f *inflater) ReadByte() (byte, error) {
	if len(f.data) > 0 {
		b := f.data[0]
		f.data = f.data[1:]
		return b, nil
	}
	if f.tail == len(deflateTail) {
		return 0, io.EOF
	}
	f.tail++
	return deflateTail[f.tail-1], nil
}

var inflaters = sync.Pool{New: func() any { return new(inflater) }}

// deflateTail ends a permessage-deflate message for the flate reader: the
// four octets the sender removed, then an empty final block.
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// inflateMessage appends the inflated permessage-deflate message z to dst
// (at most maxMessage bytes).
func inflateMessage(dst, z []byte) ([]byte, error) {
	f := inflaters.Get().(*inflater)
	defer func() { f.data = nil; inflaters.Put(f) }()
	f.data, f.tail = z, 0
	if f.fr == nil {
		f.fr = flate.NewReader(f)
	} else if err := f.fr.(flate.Resetter).Reset(f, nil); err != nil {
		return nil, err
	}
	for {
		if len(dst) == cap(dst) {
			if len(dst) > maxMessage {
				return nil, errTooBig
			}
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := f.fr.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return nil, fmt.Errorf("inflating a message: %w", err)
		}
	}
}
