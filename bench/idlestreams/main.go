// Command idlestreams measures what an idle HTTP-fallback connection costs
// a Herald server: it opens N HTTP streams (GET /stream, then connect and
// subscribe by POST) or N Server-Sent Events streams (GET /sse), each
// subscribed to its own channel, holds them, and reports the server's RSS
// and goroutines per stream against the same server before they opened.
// Start a fresh server for each run (Go keeps freed memory a while):
//
//	herald serve --dev --listen 127.0.0.1:18100 &
//	go run ./bench/idlestreams --addr 127.0.0.1:18100 --pid $! --n 10000 --transport http-stream
//
// It reads the server's RSS from /proc (Linux) and its goroutines from
// /metrics.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18100", "server address")
	pid := flag.Int("pid", 0, "server process id (for its RSS)")
	n := flag.Int("n", 1000, "streams")
	transport := flag.String("transport", "http-stream", "http-stream or sse")
	hold := flag.Duration("hold", 30*time.Second, "hold the streams this long before sampling")
	flag.Parse()
	if err := run(*addr, *pid, *n, *transport, *hold); err != nil {
		fmt.Fprintln(os.Stderr, "idlestreams:", err)
		os.Exit(1)
	}
}

func run(addr string, pid, n int, transport string, hold time.Duration) error {
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	time.Sleep(2 * time.Second)
	rss0, g0 := rss(pid), goroutines(hc, addr)
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	for i := 0; i < n; i++ {
		ch := "idle-" + strconv.Itoa(i)
		path := "/stream"
		if transport == "sse" {
			path = "/sse?channel=" + ch
		}
		c, br, head, err := open(addr, path)
		if err != nil {
			return fmt.Errorf("stream %d: %w", i, err)
		}
		conns = append(conns, c)
		if transport == "sse" {
			if _, err := readLine(br, "connect"); err != nil {
				return fmt.Errorf("stream %d: %w", i, err)
			}
			continue
		}
		tok := head.Get("Herald-Session")
		body := `{"id":1,"connect":{}}` + "\n" + `{"id":2,"subscribe":{"channel":"` + ch + `"}}`
		resp, err := hc.Post("http://"+addr+"/stream/send?seq=1&session="+tok, "text/plain", strings.NewReader(body))
		if err != nil {
			return fmt.Errorf("stream %d: POST: %w", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 204 {
			return fmt.Errorf("stream %d: POST: HTTP %d", i, resp.StatusCode)
		}
		if _, err := readLine(br, `"subscribe"`); err != nil {
			return fmt.Errorf("stream %d: %w", i, err)
		}
	}
	hc.CloseIdleConnections()
	fmt.Printf("%d %s streams open in %v; holding %v\n", n, transport, time.Since(start).Round(time.Millisecond), hold)
	time.Sleep(hold)
	rss1, g1 := rss(pid), goroutines(hc, addr)
	fmt.Printf("server RSS %.1f -> %.1f MiB: %.2f KiB per idle stream; goroutines %d -> %d (%+.3f per stream)\n",
		float64(rss0)/(1<<20), float64(rss1)/(1<<20), float64(rss1-rss0)/1024/float64(n), g0, g1, float64(g1-g0)/float64(n))
	return nil
}

// open sends a GET and reads the response head, leaving the body to br.
func open(addr, path string) (net.Conn, *bufio.Reader, http.Header, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, nil, err
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr)
	br := bufio.NewReaderSize(c, 1024)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, nil, nil, err
	}
	if resp.StatusCode != 200 {
		c.Close()
		return nil, nil, nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return c, br, resp.Header, nil
}

// readLine reads the raw (chunked) body until a line holding want.
func readLine(br *bufio.Reader, want string) (string, error) {
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if strings.Contains(l, want) {
			return l, nil
		}
	}
}

func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range bytes.Split(b, []byte("\n")) {
		if f := strings.Fields(string(l)); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func goroutines(hc *http.Client, addr string) int {
	resp, err := hc.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return -1
}
