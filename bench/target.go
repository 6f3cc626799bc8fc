package bench

import (
	"context"
	"fmt"
	"net/http"
)

// target is everything the bench knows about one server's protocol: the
// messages its WebSocket clients send and receive, and its HTTP API. The
// rest of the bench (connections, pacing, checks, reports) is the same for
// every server, so comparing Herald with a peer is a matter of adding a
// target: heraldTarget (herald.go) and centrifugoTarget (centrifugo.go).
//
// Implementations are stateless and safe for concurrent use.
type target interface {
	// Name is the --target value.
	Name() string
	// Subprotocol is offered in the WebSocket handshake; Binary says
	// whether messages travel in binary frames.
	Subprotocol() string
	Binary() bool

	// AppendConnect, AppendSubscribe and AppendPublish append one client
	// command with the given id; AppendPong the answer to a server ping.
	AppendConnect(dst []byte, id uint64) []byte
	AppendSubscribe(dst []byte, id uint64, channel string) []byte
	AppendPublish(dst []byte, id uint64, channel string, data []byte) []byte
	AppendPong(dst []byte) []byte

	// Next decodes the first message of a frame into ev and returns the
	// rest of the frame (empty for protocols with one message per frame).
	// It must not allocate: it runs for every delivery.
	Next(frame []byte, ev *event) (rest []byte)

	// Publish publishes data through the HTTP API into one channel, or
	// into several with one request.
	Publish(ctx context.Context, api *apiClient, channels []string, data []byte) error
	// Info asks the server API for the node's process id (0 if the server
	// does not tell) and its number of client connections.
	Info(ctx context.Context, api *apiClient) (serverInfo, error)
}

type serverInfo struct {
	PID        int
	NumClients int
}

// evKind says what a server message is.
type evKind uint8

const (
	evOther      evKind = iota // anything the bench ignores (join, leave, ...)
	evPub                      // a publication: data is its payload, offset its position (0: none)
	evReply                    // a reply to command id; failed if it carries an error
	evPing                     // a server ping: answer with AppendPong
	evDisconnect               // the server is closing the connection with code
)

// event is one decoded server message. data aliases the frame.
type event struct {
	kind   evKind
	id     uint64
	offset uint64
	failed bool
	code   uint32
	data   []byte
	delta  bool // a publication whose data is a Fossil delta (base64)
}

func targetFor(name string) (target, error) {
	switch name {
	case "", "herald":
		return heraldTarget{}, nil
	case "centrifugo":
		return centrifugoTarget{}, nil
	}
	return nil, fmt.Errorf("unknown --target %q (supported: herald, centrifugo)", name)
}

// apiClient calls a server's HTTP API.
type apiClient struct {
	base string // e.g. http://127.0.0.1:8000
	key  string
	hc   *http.Client
}

func newAPIClient(base, key string, conns int) *apiClient {
	tr := &http.Transport{
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &apiClient{base: base, key: key, hc: &http.Client{Transport: tr}}
}

// Close closes the idle keep-alive connections (and their goroutines).
func (a *apiClient) Close() { a.hc.CloseIdleConnections() }
