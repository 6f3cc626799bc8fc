package transport

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws/wsflate"
	"github.com/klauspost/compress/flate"
)

// permessage-deflate (RFC 7692) without context takeover in either
// direction. The server answers every accepted offer with
// server_no_context_takeover and client_no_context_takeover: each message
// is a deflate stream of its own, so a publication compressed once can be
// queued on every connection that negotiated the extension, and inflating
// a client's message needs no window kept per connection: the inflaters
// are pooled and only held while a message is inflated.

// DeflateNegotiation negotiates permessage-deflate for one handshake: pass
// its Negotiate method to the upgrader and ask Accepted afterwards. The
// zero value is ready; it is not safe for concurrent use.
type DeflateNegotiation struct {
	accepted bool
}

// Negotiate answers one extension offer of the Sec-WebSocket-Extensions
// header. It accepts the first permessage-deflate offer it can honour and
// declines the others (a zero option: no error, the handshake goes on
// without that offer). An offer is declined when it has an unknown
// parameter, a parameter twice, a parameter with an invalid value, or a
// server_max_window_bits below 15 (our compressor always uses the 32 KiB
// window). The response always holds server_no_context_takeover and
// client_no_context_takeover, and server_max_window_bits=15 when the offer
// named it; client_max_window_bits is never answered (any window inflates
// with no context takeover).
func (d *DeflateNegotiation) Negotiate(opt httphead.Option) (httphead.Option, error) {
	if d.accepted || !bytes.EqualFold(opt.Name, wsflate.ExtensionNameBytes) {
		return httphead.Option{}, nil
	}
	if duplicateParam(opt) {
		return httphead.Option{}, nil
	}
	var p wsflate.Parameters
	if err := p.Parse(opt); err != nil {
		return httphead.Option{}, nil // unknown or invalid parameter: decline
	}
	if p.ServerMaxWindowBits.Defined() && p.ServerMaxWindowBits < 15 {
		return httphead.Option{}, nil
	}
	d.accepted = true
	resp := wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}
	if p.ServerMaxWindowBits.Defined() {
		resp.ServerMaxWindowBits = 15
	}
	return resp.Option(), nil
}

// Accepted reports whether an offer was accepted.
func (d *DeflateNegotiation) Accepted() bool { return d.accepted }

// duplicateParam reports whether a parameter appears twice in the offer
// (wsflate's parser lets a repeated client_max_window_bits without a value
// through).
func duplicateParam(opt httphead.Option) bool {
	var seen [4]bool
	names := [4]string{"server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits", "client_max_window_bits"}
	dup := false
	opt.Parameters.ForEach(func(k, _ []byte) bool {
		for i, n := range names {
			if string(k) == n {
				if seen[i] {
					dup = true
					return false
				}
				seen[i] = true
			}
		}
		return true
	})
	return dup
}

// CompressLevel is the deflate level of compressed frames: each
// publication is compressed once for all its subscribers, so the cost of
// a better ratio is paid once.
const CompressLevel = 5

// compressMin is the smallest payload worth compressing: below it the
// deflate block overhead eats the gain.
const compressMin = 64

var (
	compressors = sync.Pool{New: func() any {
		w, _ := flate.NewWriter(nil, CompressLevel)
		return w
	}}
	compressBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	compressions atomic.Uint64
)

// Compressions returns how many payloads CompressedMessageFrame compressed
// in this process.
func Compressions() uint64 { return compressions.Load() }

// CompressedMessageFrame returns a complete frame for a protocol message
// like MessageFrame, with the payload compressed as one permessage-deflate
// message (RSV1 set), for connections that negotiated the extension. When
// compression does not make the payload smaller (or it is too short to
// try) it returns the plain frame and false: an uncompressed message is
// valid on such connections too.
func CompressedMessageFrame(binary bool, payload []byte) (frame []byte, compressed bool) {
	if len(payload) < compressMin {
		return MessageFrame(binary, payload), false
	}
	compressions.Add(1)
	buf := compressBufs.Get().(*bytes.Buffer)
	buf.Reset()
	w := compressors.Get().(*flate.Writer)
	w.Reset(buf)
	_, err := w.Write(payload)
	if err == nil {
		err = w.Flush()
	}
	compressors.Put(w)
	z := buf.Bytes()
	// A sync flush ends with an empty stored block: RFC 7692 7.2.1 has the
	// sender drop its last four octets (00 00 ff ff).
	if err != nil || !bytes.HasSuffix(z, deflateTail[:4]) || len(z)-4 >= len(payload) {
		releaseBuf(buf)
		return MessageFrame(binary, payload), false
	}
	z = z[:len(z)-4]
	op := byte(0x81) // FIN, text
	if binary {
		op = 0x82
	}
	frame = appendHeader(make([]byte, 0, FrameHeaderSize(len(z))+len(z)), 0, len(z))
	frame[0] = op | 0x40 // RSV1: compressed
	frame = append(frame, z...)
	releaseBuf(buf)
	return frame, true
}

func releaseBuf(b *bytes.Buffer) {
	if b.Cap() <= 256<<10 {
		compressBufs.Put(b)
	}
}

// deflateTail ends a message's deflate data for the inflater: the four
// octets the sender removed (RFC 7692 7.2.2), then a final empty stored
// block so that the stream ends with io.EOF rather than needing more.
var deflateTail = [...]byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

var (
	errInflateTooBig  = errors.New("inflated message too big")
	errInflateCorrupt = errors.New("invalid compressed data")
)

type inflater struct {
	fr  io.ReadCloser // flate reader, also a flate.Resetter
	in  msgReader
	out []byte
}

var inflaters = sync.Pool{New: func() any { return new(inflater) }}

// msgReader yields a message's deflate data then deflateTail. It is an
// io.ByteReader, so the flate reader reads it without a bufio.Reader of
// its own.
type msgReader struct {
	data []byte
	tail int // bytes of deflateTail already read
}

func (r *msgReader) Read(p []byte) (int, error) {
	if len(r.data) > 0 {
		n := copy(p, r.data)
		r.data = r.data[n:]
		return n, nil
	}
	if r.tail == len(deflateTail) {
		return 0, io.EOF
	}
	n := copy(p, deflateTail[r.tail:])
	r.tail += n
	return n, nil
}

func (r *msgReader) ReadByte() (byte, error) {
	if len(r.data) > 0 {
		b := r.data[0]
		r.data = r.data[1:]
		return b, nil
	}
	if r.tail == len(deflateTail) {
		return 0, io.EOF
	}
	r.tail++
	return deflateTail[r.tail-1], nil
}

// inflate decompresses one permessage-deflate message of at most limit
// bytes. The output grows with what the data really inflates to, never
// past limit+1 bytes, whatever the data claims: a deflate bomb costs at
// most limit bytes before it is refused with errInflateTooBig. The result
// is valid until release.
func inflate(data []byte, limit int) (*inflater, []byte, error) {
	f := inflaters.Get().(*inflater)
	f.in = msgReader{data: data}
	if f.fr == nil {
		f.fr = flate.NewReader(&f.in)
	} else if err := f.fr.(flate.Resetter).Reset(&f.in, nil); err != nil {
		f.release()
		return nil, nil, errInflateCorrupt
	}
	out := f.out[:0]
	for {
		if len(out) == cap(out) {
			if len(out) > limit {
				f.out = out
				f.release()
				return nil, nil, errInflateTooBig
			}
			n := min(max(2*cap(out), 512), limit+1)
			out = append(out, make([]byte, n-len(out))...)[:len(out)]
		}
		n, err := f.fr.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if len(out) > limit {
			f.out = out
			f.release()
			return nil, nil, errInflateTooBig
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			f.out = out
			f.release()
			return nil, nil, errInflateCorrupt
		}
	}
	f.out = out
	return f, out, nil
}

// release returns the inflater to the pool, keeping an output buffer of a
// usual size.
func (f *inflater) release() {
	if cap(f.out) > 64<<10 {
		f.out = nil
	}
	f.in = msgReader{}
	inflaters.Put(f)
}
