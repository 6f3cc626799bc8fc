package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald"
)

// childEnv makes the test binary play the processes `herald bench
// --compare` starts (see TestCompareEndToEnd): `bench ARGS` is the bench,
// `serve --listen ADDR ...` a Herald server, `fake-centrifugo PORT` the
// fake Centrifugo.
const childEnv = "HERALD_BENCH_TEST_CHILD"

// TestMain fails the run on leaked goroutines. It also lets the test binary
// serve as a worker process for the --procs tests (the bench re-executes
// its own binary with workerEnv set), and as the children of --compare.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		if err := runWorkerProcess(os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString("worker: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv(childEnv) == "1" && len(os.Args) > 1 {
		if err := runChild(os.Args[1], os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, os.Args[1]+":", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func runChild(cmd string, args []string) error {
	switch cmd {
	case "bench":
		return Main(args)
	case "version":
		fmt.Println("fake 0.0.0")
		return nil
	case "serve": // serve --config FILE --listen ADDR
		addr := ""
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "--listen" {
				addr = args[i+1]
			}
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		srv, err := herald.New(herald.Config{
			AllowAnonymous: true, APIKeys: []string{os.Getenv("HERALD_API_KEY")},
			DrainTimeout: time.Second, CommandRate: 1e6, CommandBurst: 1e6,
			Namespaces: []herald.Namespace{{
				HistorySize: 1000, HistoryTTL: time.Hour, AllowSubscribe: true, AllowAnonymousSubscribe: true, AllowPublish: true,
			}},
		})
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		select {
		case err := <-served:
			return err
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return err
		}
		if err := <-served; err != nil && !errors.Is(err, herald.ErrServerClosed) {
			return err
		}
		return nil
	case "fake-centrifugo": // fake-centrifugo PORT
		if len(args) != 1 {
			return errors.New("want PORT")
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+args[0])
		if err != nil {
			return err
		}
		failed := false
		_, stopFake := serveFakeCentrifugo(ln, func(format string, a ...any) {
			failed = true
			fmt.Fprintf(os.Stderr, "fake centrifugo: "+format+"\n", a...)
		})
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		<-ctx.Done()
		stopFake()
		if failed {
			return errors.New("errors above")
		}
		return nil
	}
	return fmt.Errorf("unknown child command %q", cmd)
}
