//go:build !linux

package transport

import "errors"

type epConn struct{}

func newEpollEngine() (Engine, error) {
	return nil, errors.New("herald: the epoll engine needs Linux")
}
