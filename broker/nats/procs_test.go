package nats_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
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

// natsServerBinary returns the nats-server binary's path, or fails the
// test (skips it outside CI) when there is none.
func natsServerBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
		return "/usr/sbin/nats-server"
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("nats-server binary not found (required when CI=true)")
	}
	t.Skip("nats-server binary not found in PATH")
	return ""
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
