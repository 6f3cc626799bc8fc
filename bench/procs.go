package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"
)

// Client connections are held by workers. With --procs 1 the one worker
// runs in the bench process; with more, each runs in a child process (the
// same binary, re-executed as `herald bench --worker` with workerEnv set),
// so that each stays under the per-process file limit. Parent and child
// talk JSON lines: the parent writes commands on the child's stdin, the
// child writes messages on its stdout (progress every few milliseconds,
// which the parent's publisher uses to bound messages in flight).

const (
	workerEnv  = "HERALD_BENCH_WORKER"
	workerFlag = "--worker"
)

// workerHandle is the parent's view of a worker, local or remote.
type workerHandle interface {
	// ready waits until the worker has opened its connections.
	ready(ctx context.Context) (readyReport, error)
	// progress returns the latest counters.
	progress() progress
	// finish closes the worker's connections and returns its results.
	finish(ctx context.Context) (workerResult, error)
	// kill stops the worker at once; it may be called after finish.
	kill()
}

// workerCmd is a command from parent to child.
type workerCmd struct {
	Op     string        `json:"op"` // "start" (with Config), "finish"
	Config *workerConfig `json:"config,omitempty"`
}

// workerMsg is a message from child to parent.
type workerMsg struct {
	Type     string        `json:"type"` // "progress", "ready", "result", "error"
	Progress *progress     `json:"p,omitempty"`
	Ready    *readyReport  `json:"ready,omitempty"`
	Result   *workerResult `json:"result,omitempty"`
	Err      string        `json:"err,omitempty"`
}

// localWorker runs a worker in this process.
type localWorker struct {
	w      *worker
	cancel context.CancelFunc
	done   chan struct{} // closed when connect returned
	rep    readyReport
	once   sync.Once
	res    workerResult
}

func startLocal(ctx context.Context, cfg workerConfig) (*localWorker, error) {
	w, err := newWorker(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	lw := &localWorker{w: w, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(lw.done)
		lw.rep = w.connect(ctx)
	}()
	return lw, nil
}

func (l *localWorker) ready(ctx context.Context) (readyReport, error) {
	select {
	case <-l.done:
		return l.rep, nil
	case <-ctx.Done():
		return readyReport{}, ctx.Err()
	}
}

func (l *localWorker) progress() progress { return l.w.progress() }

func (l *localWorker) finish(context.Context) (workerResult, error) {
	l.once.Do(func() {
		l.cancel()
		<-l.done
		l.res = l.w.finish()
	})
	return l.res, nil
}

func (l *localWorker) kill() { _, _ = l.finish(context.Background()) }

// remoteWorker runs a worker in a child process.
type remoteWorker struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	readyC chan readyReport
	resC   chan workerResult
	done   chan struct{} // the child's stdout ended
	errMu  sync.Mutex
	err    error // an "error" message from the child
	prog   atomic.Pointer[progress]
	waitMu sync.Mutex
	waited bool
}

func startRemote(cfg workerConfig) (*remoteWorker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "bench", workerFlag)
	cmd.Env = append(os.Environ(), workerEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker process: %w", err)
	}
	r := &remoteWorker{cmd: cmd, stdin: stdin, readyC: make(chan readyReport, 1),
		resC: make(chan workerResult, 1), done: make(chan struct{})}
	r.prog.Store(&progress{})
	go r.readLoop(stdout)
	if err := json.NewEncoder(stdin).Encode(workerCmd{Op: "start", Config: &cfg}); err != nil {
		r.kill()
		return nil, fmt.Errorf("worker process: %w", err)
	}
	return r, nil
}

func (r *remoteWorker) readLoop(stdout io.Reader) {
	defer close(r.done)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 256<<20)
	for sc.Scan() {
		var m workerMsg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			r.setErr(fmt.Errorf("worker process: bad message: %w", err))
			continue
		}
		switch m.Type {
		case "progress":
			if m.Progress != nil {
				r.prog.Store(m.Progress)
			}
		case "ready":
			if m.Ready != nil {
				r.readyC <- *m.Ready
			}
		case "result":
			if m.Result != nil {
				r.resC <- *m.Result
			}
		case "error":
			r.setErr(errors.New("worker process: " + m.Err))
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
}

func (r *remoteWorker) setErr(err error) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if r.err == nil {
		r.err = err
	}
}

func (r *remoteWorker) exitErr() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if r.err != nil {
		return r.err
	}
	return errors.New("worker process exited early")
}

func (r *remoteWorker) ready(ctx context.Context) (readyReport, error) {
	select {
	case rep := <-r.readyC:
		return rep, nil
	case <-r.done:
		return readyReport{}, r.exitErr()
	case <-ctx.Done():
		return readyReport{}, ctx.Err()
	}
}

func (r *remoteWorker) progress() progress { return *r.prog.Load() }

func (r *remoteWorker) finish(ctx context.Context) (workerResult, error) {
	if err := json.NewEncoder(r.stdin).Encode(workerCmd{Op: "finish"}); err != nil {
		r.kill()
		return workerResult{}, fmt.Errorf("worker process: %w", err)
	}
	select {
	case res := <-r.resC:
		r.wait()
		return res, nil
	case <-r.done:
		r.wait()
		return workerResult{}, r.exitErr()
	case <-ctx.Done():
		r.kill()
		return workerResult{}, ctx.Err()
	}
}

// wait closes the child's stdin (it exits on EOF if it has not already)
// and reaps it, once its stdout is fully read.
func (r *remoteWorker) wait() {
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	if r.waited {
		return
	}
	r.waited = true
	_ = r.stdin.Close()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	_ = r.cmd.Wait()
}

func (r *remoteWorker) kill() {
	_ = r.cmd.Process.Kill()
	r.wait()
}

// runWorkerProcess is the child side: it reads its config from in, opens
// the connections, reports progress and readiness on out, and on "finish"
// (or end of input, or its deadline) closes them and reports the result.
func runWorkerProcess(in io.Reader, out io.Writer) error {
	// Ctrl-C reaches the whole process group: the parent handles it and
	// tells the workers to finish, so that their results are not lost.
	signal.Ignore(os.Interrupt)
	dec := json.NewDecoder(in)
	var start workerCmd
	if err := dec.Decode(&start); err != nil || start.Op != "start" || start.Config == nil {
		return fmt.Errorf("worker: expected a start command on stdin (%v)", err)
	}
	var outMu sync.Mutex
	enc := json.NewEncoder(out)
	send := func(m workerMsg) {
		outMu.Lock()
		defer outMu.Unlock()
		_ = enc.Encode(m)
	}
	w, err := newWorker(*start.Config)
	if err != nil {
		send(workerMsg{Type: "error", Err: err.Error()})
		return err
	}
	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, start.Config.Deadline))
	defer cancel()

	cmds := make(chan string, 1)
	go func() { // ends with the process if the parent never writes again
		var c workerCmd
		if err := dec.Decode(&c); err != nil {
			cmds <- "eof"
			return
		}
		cmds <- c.Op
	}()

	stopProg := make(chan struct{})
	progDone := make(chan struct{})
	go func() {
		defer close(progDone)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		var last progress
		lastSent := time.Now()
		for {
			select {
			case <-stopProg:
				return
			case <-t.C:
			}
			p := w.progress()
			if p.Delivered == last.Delivered && p.Other == last.Other && p.Conns == last.Conns &&
				time.Since(lastSent) < 250*time.Millisecond {
				continue
			}
			p.CPU = int64(selfCPU())
			last, lastSent = p, time.Now()
			send(workerMsg{Type: "progress", Progress: &p})
		}
	}()

	rep := w.connect(ctx)
	send(workerMsg{Type: "ready", Ready: &rep})
	op := ""
	select {
	case op = <-cmds:
	case <-ctx.Done():
	}
	close(stopProg)
	<-progDone
	p := w.progress()
	p.CPU = int64(selfCPU())
	send(workerMsg{Type: "progress", Progress: &p})
	res := w.finish()
	if op == "finish" {
		send(workerMsg{Type: "result", Result: &res})
	}
	return nil
}
