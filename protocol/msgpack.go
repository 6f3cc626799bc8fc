package protocol

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// msgpackCodec encodes messages as MessagePack maps with the same keys as
// the JSON encoding; Data travels as bin.
type msgpackCodec struct{}

func (msgpackCodec) Name() string { return SubprotocolMsgpack }
func (msgpackCodec) Binary() bool { return true }

type mpEncoder struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

var mpEncoders = sync.Pool{New: func() any {
	e := &mpEncoder{}
	e.enc = msgpack.NewEncoder(&e.buf)
	e.enc.UseCompactInts(true)
	return e
}}

func mpAppend(dst []byte, v any) ([]byte, error) {
	e := mpEncoders.Get().(*mpEncoder)
	e.buf.Reset()
	err := e.enc.Encode(v)
	if err == nil {
		dst = append(dst, e.buf.Bytes()...)
	}
	if e.buf.Cap() <= 64<<10 {
		mpEncoders.Put(e)
	}
	return dst, err
}

func mpDecode(b []byte, v any) error {
	d := msgpack.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if d.Buffered().(*bytes.Reader).Len() != 0 {
		return fmt.Errorf("%w: trailing data", ErrMalformed)
	}
	return nil
}

func (msgpackCodec) DecodeCommand(b []byte, cmd *Command) error { return mpDecode(b, cmd) }

func (msgpackCodec) AppendCommand(dst []byte, cmd *Command) ([]byte, error) {
	return mpAppend(dst, cmd)
}

func (msgpackCodec) DecodeServerMessage(b []byte, m *ServerMessage) error { return mpDecode(b, m) }

func (msgpackCodec) AppendServerMessage(dst []byte, m *ServerMessage) ([]byte, error) {
	return mpAppend(dst, m)
}

func (msgpackCodec) AppendPublicationPush(dst []byte, p *Publication) ([]byte, error) {
	return mpAppend(dst, &ServerMessage{Pub: p})
}
