//go:build !linux

package bench

import (
	"syscall"
	"time"
)

func dialControl(string, string, syscall.RawConn) error { return nil }

// selfCPU is not measured outside Linux.
func selfCPU() time.Duration { return 0 }

func ownProcessGroup() *syscall.SysProcAttr { return nil }
