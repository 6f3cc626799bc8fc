//go:build !linux

package transport

import "errors"

type poller struct{}

func newEpollEngine(EngineOptions) (Engine, error) {
	return nil, errors.New("herald: the epoll engine needs Linux")
}

// peerAddr is only reached on the epoll engine.
func (c *Conn) peerAddr() string { return "" }
