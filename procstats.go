package herald

import (
	"bytes"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
)

var pid = os.Getpid()

func goroutines() int { return runtime.NumGoroutine() }

// processCPU returns the CPU time the process has used (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// processRSS returns the resident set size in bytes (Linux; 0 elsewhere).
// It reads /proc/self/statm through a descriptor kept open, into a buffer
// kept too: the node samples it every second, and an idle node should
// allocate nothing.
func processRSS() uint64 {
	statm.mu.Lock()
	defer statm.mu.Unlock()
	if statm.f == nil {
		if statm.err != nil {
			return 0
		}
		if statm.f, statm.err = os.Open("/proc/self/statm"); statm.err != nil {
			return 0
		}
	}
	n, err := statm.f.ReadAt(statm.buf[:], 0)
	if n == 0 && err != nil {
		return 0
	}
	return parseStatmRSS(statm.buf[:n]) * uint64(os.Getpagesize())
}

var statm struct {
	mu  sync.Mutex
	f   *os.File
	err error // opening failed: not Linux
	buf [128]byte
}

// parseStatmRSS returns statm's second field (resident pages), 0 if it
// has none.
func parseStatmRSS(b []byte) uint64 {
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		return 0
	}
	var v uint64
	for _, c := range b[i+1:] {
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + uint64(c-'0')
	}
	return v
}
