package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HTTP streaming (Options.Transport "http-stream"): the server's messages
// come as the body of one long GET /stream response, one JSON message per
// line; commands go as POST /stream/send, numbered so that the server runs
// them in order whichever node of a cluster takes each POST. One sender
// goroutine per connection sends what was queued meanwhile in one POST,
// so commands leave in the order they were written.

// Transport names.
const (
	TransportWebSocket  = "websocket"
	TransportHTTPStream = "http-stream"
)

// maxBatch is the most commands one POST carries (the server takes 100).
const maxBatch = 100

// httpStream is the HTTP half of a connection on HTTP streaming.
type httpStream struct {
	post    *http.Client
	sendURL string // with session, without seq
	header  http.Header
	body    io.ReadCloser
	br      *bufio.Reader
	cancel  context.CancelFunc // the stream request's

	mu     sync.Mutex
	queue  [][]byte
	seq    uint64
	closed bool
	wake   chan struct{}
}

// streamURLs returns the stream and send URLs for the client's URL: ws
// and wss become http and https, and a path ending in /ws ends in /stream
// instead (an http URL is taken as the stream URL as it is).
func streamURLs(raw string) (stream, send string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	case "http", "https":
	default:
		return "", "", fmt.Errorf("herald client: cannot stream over %q", u.Scheme)
	}
	if p, ok := strings.CutSuffix(u.Path, "/ws"); ok {
		u.Path = p + "/stream"
	} else if !strings.HasSuffix(u.Path, "/stream") {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/stream"
	}
	u.RawQuery = ""
	s := *u
	s.Path += "/send"
	return u.String(), s.String(), nil
}

// dialStream opens the stream: the connection's socket (for deadlines and
// Close) and its HTTP half.
func (c *Client) dialStream(ctx context.Context) (net.Conn, *httpStream, error) {
	streamURL, sendURL, err := streamURLs(c.url)
	if err != nil {
		return nil, nil, err
	}
	var raw net.Conn
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			raw = nc
			return nc, err
		},
		DisableKeepAlives:     true,
		ResponseHeaderTimeout: c.opts.DialTimeout,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1: the socket is the stream's
	}
	// The request's context must not end the stream once it runs (a
	// canceled request aborts its body): ctx bounds only the opening.
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, streamURL, nil)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	for k, v := range c.opts.Header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := tr.RoundTrip(req)
	if !stop() && err == nil {
		resp.Body.Close()
		err = ctx.Err()
	}
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		cancel()
		return nil, nil, fmt.Errorf("herald client: stream: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
	token := resp.Header.Get("Herald-Session")
	if token == "" || raw == nil {
		resp.Body.Close()
		cancel()
		return nil, nil, errors.New("herald client: stream without session")
	}
	hs := &httpStream{
		cancel:  cancel,
		post:    c.httpClient(),
		sendURL: sendURL + "?session=" + url.QueryEscape(token),
		header:  c.opts.Header,
		body:    resp.Body,
		br:      bufio.NewReaderSize(resp.Body, 4096),
		wake:    make(chan struct{}, 1),
	}
	return raw, hs, nil
}

// httpClient returns the client's HTTP client for POSTs, made once.
func (c *Client) httpClient() *http.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.posts == nil {
		c.posts = &http.Client{Timeout: c.opts.DialTimeout, Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second,
		}}
	}
	return c.posts
}

// readMessage returns the next message of the stream.
func (h *httpStream) readMessage() ([]byte, error) {
	for {
		line, err := h.br.ReadBytes('\n')
		if err != nil {
			return nil, err
		}
		line = bytes.TrimSpace(line)
		if len(line) > 0 {
			return line, nil
		}
	}
}

// send queues a command for the sender.
func (h *httpStream) send(payload []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrDisconnected
	}
	h.queue = append(h.queue, append([]byte(nil), payload...))
	select {
	case h.wake <- struct{}{}:
	default:
	}
	return nil
}

// sender posts the queued commands until the connection ends. A POST that
// fails is retried with the same number (the server takes a batch once);
// one that cannot get through ends the connection.
func (c *Client) sender(conn *wsConn) {
	defer c.wg.Done()
	h := conn.hs
	defer func() {
		h.mu.Lock()
		h.closed = true
		h.queue = nil
		h.mu.Unlock()
	}()
	for {
		select {
		case <-h.wake:
		case <-conn.done:
			return
		}
		for {
			h.mu.Lock()
			n := min(len(h.queue), maxBatch)
			batch := h.queue[:n]
			h.queue = h.queue[n:]
			if n > 0 {
				h.seq++
			}
			seq := h.seq
			h.mu.Unlock()
			if n == 0 {
				break
			}
			if err := h.postBatch(conn.done, seq, bytes.Join(batch, []byte("\n"))); err != nil {
				conn.nc.Close() // the reader ends the connection
				return
			}
		}
	}
}

func (h *httpStream) postBatch(done <-chan struct{}, seq uint64, body []byte) error {
	u := h.sendURL + "&seq=" + strconv.FormatUint(seq, 10)
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(time.Duration(attempt) * 100 * time.Millisecond)
			select {
			case <-t.C:
			case <-done:
				t.Stop()
				return ErrDisconnected
			}
		}
		var req *http.Request
		req, err = http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return err
		}
		for k, v := range h.header {
			req.Header[k] = v
		}
		req.Header.Set("Content-Type", "text/plain") // a simple request for browsers: no preflight
		var resp *http.Response
		resp, err = h.post.Do(req)
		if err != nil {
			continue
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		switch {
		case resp.StatusCode < 300:
			return nil
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			err = fmt.Errorf("herald client: send: HTTP %d", resp.StatusCode)
			continue
		}
		return fmt.Errorf("herald client: send: HTTP %d", resp.StatusCode)
	}
	return err
}
