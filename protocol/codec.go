package protocol

import "errors"

// ErrMalformed wraps every decoding error: the input is not a valid message
// of the encoding.
var ErrMalformed = errors.New("protocol: malformed message")

// Codec encodes and decodes protocol messages in one encoding. Codecs are
// stateless and safe for concurrent use.
type Codec interface {
	// Name is the WebSocket subprotocol of the encoding.
	Name() string
	// Binary reports whether messages travel in binary frames.
	Binary() bool

	DecodeCommand(b []byte, cmd *Command) error
	AppendCommand(dst []byte, cmd *Command) ([]byte, error)
	DecodeServerMessage(b []byte, m *ServerMessage) error
	AppendServerMessage(dst []byte, m *ServerMessage) ([]byte, error)
	// AppendPublicationPush appends the push {"pub": p}. It is the fan-out
	// path: called once per publication and codec, never per subscriber.
	AppendPublicationPush(dst []byte, p *Publication) ([]byte, error)
}

// JSON and Msgpack are the two codecs of protocol v1.
var (
	JSON    Codec = jsonCodec{}
	Msgpack Codec = msgpackCodec{}
)

// NumCodecs is the number of codecs; CodecIndex numbers them from 0.
const NumCodecs = 2

// CodecIndex returns c's index among the codecs (JSON 0, Msgpack 1), for
// per-codec tables such as a publication's frames encoded once per codec.
func CodecIndex(c Codec) int {
	if c.Binary() {
		return 1
	}
	return 0
}

// CodecAt returns the codec of index i (CodecIndex's inverse).
func CodecAt(i uint8) Codec { return codecs[i] }

var codecs = [NumCodecs]Codec{JSON, Msgpack}

// CodecFor returns the codec of a negotiated subprotocol; "" selects JSON.
func CodecFor(subprotocol string) (Codec, bool) {
	switch subprotocol {
	case "", SubprotocolJSON:
		return JSON, true
	case SubprotocolMsgpack:
		return Msgpack, true
	}
	return nil, false
}
