package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTick is the unit of the CPU times in /proc/PID/stat (USER_HZ). It is
// 100 on every Linux the bench runs on; Go cannot ask sysconf without cgo.
const clockTick = 10 * time.Millisecond

var errNoProc = errors.New("no /proc entry for the process (server not local?)")

// processRSS returns a process's resident set size in KiB (VmRSS).
func processRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		if os.IsNotExist(err) {
			return 0, errNoProc
		}
		return 0, err
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			v = bytes.TrimSpace(v)
			v = bytes.TrimSuffix(v, []byte("kB"))
			return strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// processCPU returns the CPU time (user + system) a process has used.
func processCPU(pid int) (user, sys time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		if os.IsNotExist(err) {
			return 0, 0, errNoProc
		}
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// the fields we want are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: bad cpu times", pid)
	}
	return time.Duration(ut) * clockTick, time.Duration(st) * clockTick, nil
}

// cpuSample is a process's CPU time at one moment.
type cpuSample struct {
	user, sys time.Duration
	ok        bool
}

func sampleCPU(pid int) cpuSample {
	if pid <= 0 {
		return cpuSample{}
	}
	u, s, err := processCPU(pid)
	return cpuSample{user: u, sys: s, ok: err == nil}
}

// CPU is CPU time used over an interval, in seconds.
type CPU struct {
	User  float64 `json:"user_s,omitempty"` // unknown for the bench's child processes
	Sys   float64 `json:"sys_s,omitempty"`
	Total float64 `json:"total_s"`
	// Cores is Total over the interval's wall time: 1 is one core busy.
	Cores float64 `json:"cores"`
}

func sampleCPUs(pids []int) []cpuSample {
	out := make([]cpuSample, len(pids))
	for i, pid := range pids {
		out[i] = sampleCPU(pid)
	}
	return out
}

// sumCPU is the CPU time several processes used between samples a and b
// (by process): nil when there are none or one could not be read.
func sumCPU(a, b []cpuSample, wall time.Duration) *CPU {
	if len(a) == 0 || len(a) != len(b) {
		return nil
	}
	var sa, sb cpuSample
	sa.ok, sb.ok = true, true
	for i := range a {
		if !a[i].ok || !b[i].ok {
			return nil
		}
		sa.user += a[i].user
		sa.sys += a[i].sys
		sb.user += b[i].user
		sb.sys += b[i].sys
	}
	return cpuBetween(sa, sb, wall)
}

func cpuBetween(a, b cpuSample, wall time.Duration) *CPU {
	if !a.ok || !b.ok {
		return nil
	}
	c := &CPU{
		User:  round3((b.user - a.user).Seconds()),
		Sys:   round3((b.sys - a.sys).Seconds()),
		Total: round3((b.user + b.sys - a.user - a.sys).Seconds()),
	}
	if wall > 0 {
		c.Cores = round3(c.Total / wall.Seconds())
	}
	return c
}

// machineBusy returns the CPU time all cores spent busy (everything but
// idle and iowait) since boot, from /proc/stat.
func machineBusy() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 5 || string(f[0]) != "cpu" {
		return 0, false
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return 0, false
		}
		busy += n
	}
	return time.Duration(busy) * clockTick, true
}

// Machine is the whole machine's CPU use over the measured phase, to tell
// whether something else competed with the server and the bench.
type Machine struct {
	Cores int `json:"cores"`
	// Busy is all processes' CPU, in cores; Other is Busy minus the
	// server(s), the broker (--broker-pid) and the bench.
	Busy  float64 `json:"busy_cores"`
	Other float64 `json:"other_cores"`
}
