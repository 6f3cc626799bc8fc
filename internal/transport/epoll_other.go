//go:build !linux

package transport

import "errors"

type poller struct{}

func newEpollEngine(EngineOptions) (Engine, error) {
	return nil, errors.New("herald: the epoll engine needs Linux")
}
