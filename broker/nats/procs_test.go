package nats_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/testaddr"
)

// natsProc is a nats-server process of a test, killed when the test ends.
type natsProc struct {
	name string
	url  string
	cmd  *exec.Cmd
	out  lockedBuffer
	done chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// kill sends SIGKILL and waits for the process to exit.
func (p *natsProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

var (
	buildOnce sync.Once
	builtDir  string // removed by TestMain
	builtPath string
	buildErr  error
)

// natsServerBinary returns the path of a nats-server binary:
// $HERALD_TEST_NATS_SERVER if set, else one built once from the version
// go.mod requires. Replicated streams need nats-server 2.10.20 or later
// (the broker refuses older ones), newer than the distributions ship.
func natsServerBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HERALD_TEST_NATS_SERVER"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		if builtDir, buildErr = os.MkdirTemp("", "herald-nats-server"); buildErr != nil {
			return
		}
		builtPath = filepath.Join(builtDir, "nats-server")
		out, err := exec.Command("go", "build", "-o", builtPath, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build nats-server: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtPath
}

// startNATSProcs runs a cluster of three nats-server processes with
// JetStream on loopback (servers named n0, n1, n2) and returns them once
// JetStream answers on every one. Unlike embedded servers, they can be
// killed with SIGKILL, as a crashed machine is.
func startNATSProcs(t *testing.T) []*natsProc {
	t.Helper()
	bin := natsServerBinary(t)
	clientPorts := []int{testaddr.Port(t), testaddr.Port(t), testaddr.Port(t)}
	var routes []string
	var routePorts []int
	for i := 0; i < 3; i++ {
		p := testaddr.Port(t)
		routePorts = append(routePorts, p)
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(p))
	}
	var procs []*natsProc
	for i := 0; i < 3; i++ {
		name := "n" + strconv.Itoa(i)
		p := &natsProc{name: name, url: "nats://127.0.0.1:" + strconv.Itoa(clientPorts[i]), done: make(chan struct{})}
		p.cmd = exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(clientPorts[i]), "-n", name,
			"-js", "-sd", t.TempDir(), "--cluster_name", "c",
			"--cluster", routes[i], "--routes", strings.Join(routes, ","))
		p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("start nats-server: %v", err)
		}
		go func() {
			_ = p.cmd.Wait()
			close(p.done)
		}()
		t.Cleanup(func() {
			p.kill()
			if t.Failed() {
				out := p.out.String()
				if len(out) > 4000 {
					out = out[len(out)-4000:]
				}
				t.Logf("--- output of nats-server %s:\n%s", p.name, out)
			}
		})
		procs = append(procs, p)
	}
	brokertestEventually(t, 60*time.Second, "JetStream on every server of the cluster", func() bool {
		for _, p := range procs {
			if probe(p.url) != nil {
				return false
			}
		}
		return true
	})
	return procs
}

// streamLeader returns the name of the server leading stream, asking
// through url.
func streamLeader(t *testing.T, url, stream string) string {
	t.Helper()
	nc, err := natsgo.Connect(url, natsgo.Timeout(2*time.Second), natsgo.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var leader string
	brokertestEventually(t, 30*time.Second, "a leader of stream "+stream, func() bool {
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(c, stream)
		if err != nil {
			return false
		}
		info, err := s.Info(c)
		if err != nil || info.Cluster == nil {
			return false
		}
		leader = info.Cluster.Leader
		return leader != ""
	})
	return leader
}
