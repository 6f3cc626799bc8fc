//go:build unix

package testaddr

import (
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// held keeps the claimed ports' lock files open: their locks last as long
// as the process.
var held []*os.File

// claim takes an exclusive lock on a file named after port p in a
// directory of the OS temp dir shared by every test process, and keeps it
// until the process exits (the kernel drops the lock then, however the
// process ends). It reports false if another process holds it. A
// directory or file that cannot be made claims nothing and reports true:
// the port is then as good as free said.
func claim(p int) bool {
	dir := filepath.Join(os.TempDir(), "herald-testaddr")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return true
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(p)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return true
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return false
	}
	held = append(held, f)
	return true
}
