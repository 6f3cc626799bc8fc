package bench

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// dialControl sets IP_BIND_ADDRESS_NO_PORT on client sockets, so that a
// socket bound to a chosen source address (--source-ips) gets its port at
// connect time, per destination, instead of at bind time from the whole
// ephemeral range.
func dialControl(network, _ string, c syscall.RawConn) error {
	if network != "tcp4" {
		return nil
	}
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// selfCPU returns the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ownProcessGroup puts a server started by --compare in its own process
// group, so that a Ctrl-C meant for the bench does not stop it mid-run.
func ownProcessGroup() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
