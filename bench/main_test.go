package bench

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run on leaked goroutines. It also lets the test binary
// serve as a worker process for the --procs tests: the bench re-executes
// its own binary with workerEnv set.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		if err := runWorkerProcess(os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString("worker: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}
