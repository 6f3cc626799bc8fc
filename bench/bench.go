package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const usage = `herald bench: load-test a Herald server (or Centrifugo, to compare)

Usage:
  herald bench --scenario fanout|idle|channels|connect [flags]
  herald bench --show REPORT.json     print a report saved with --json as a table
  herald bench --compare [flags]      run Herald and Centrifugo alternately and
                                      print the ratio table (--compare --help)
  herald bench --cluster [flags]      cross-node fan-out: one memory node,
                                      clusters on NATS and Redis, and Centrifugo
                                      on Redis (--cluster --help)
  herald bench --cleanup-broker URL PREFIX
                                      delete the streams (NATS) or keys (Redis)
                                      that nodes on URL?prefix=PREFIX left

Targets: --target herald (default) speaks Herald's protocol at /ws and its
API; --target centrifugo speaks Centrifugo's JSON client protocol at
/connection/websocket and its HTTP API (key in X-API-Key). Centrifugo does
not tell its pid: give --server-pid for its RSS and CPU (bench/peers/).

Several nodes: --url takes a comma-separated list; the subscribers of each
channel are spread round-robin over the URLs (connection i, the k-th
subscriber of channel c = i mod channels, goes to URL (c + k) mod URLs), so
that every channel has subscribers on every node. Publishing stays on one
node: --api (default: the first URL's host), unless --spread-publish
spreads the API requests over every node. The servers' RSS and CPU are
the sums over their processes (--server-pid P1,P2,..., or each node's API),
with each node's share in the report; --broker-pid gives the broker's
process (a nats-server or redis-server on this machine), whose CPU is
reported apart, with its share of the servers' and the broker's CPU.

Scenarios:
  fanout    --conns subscribers over --channels channels (default 1); publish
            --rate messages/s in all (0: as fast as --window allows) for
            --duration; report deliveries/s, end-to-end latency, lost,
            duplicated and out-of-order messages, server CPU per delivery.
  channels  like fanout with one channel per connection (--channels defaults
            to --conns): publishes/s end to end; --batch > 1 uses the
            broadcast API (or pipelined client publishes).
  idle      open --conns subscribed connections, hold them for --duration,
            report the server's RSS per connection and CPU.
  connect   connect + subscribe rate and latency.

The server's RSS and CPU are read from /proc, so the server must run on this
machine: its pid comes from --server-pid or from the API (/api/info). For the
idle RSS, start a fresh server (Go keeps freed memory for a while), and hold
longer than two minutes (--duration 150s) to include the garbage collection
the Go runtime forces every two minutes on an otherwise idle server.

Everything ends by itself: the run is bounded by --setup-timeout + --settle +
--duration + --drain + 1m.

Flags:
`

// options are the command-line flags.
type options struct {
	Scenario string
	Target   string
	URL      string
	API      string
	// SpreadPublish: API publishes go to every node of --url, round-robin
	// over the concurrent requests, rather than to --api.
	SpreadPublish bool
	Key           string
	Conns         int
	Channels      int
	Rate          float64
	Duration      time.Duration
	Messages      uint64
	Size          int
	Payload       string
	Compression   bool
	Delta         bool
	Publish       string
	Batch         int
	Inflight      int
	Window        int
	Procs         int
	SourceIPs     string
	Concurrency   int
	ConnTimeout   time.Duration
	ReadBuffer    int
	Settle        time.Duration
	Drain         time.Duration
	Setup         time.Duration
	ServerPIDs    string
	BrokerPIDs    string
	Prefix        string
	JSON          bool
	Quiet         bool

	args       []string // as given, for the report
	sourceIPs  []string
	urls       []string // --url, split
	serverPIDs []int
	brokerPIDs []int
}

// Main runs `herald bench` with its arguments (without "bench").
func Main(args []string) error {
	if len(args) > 0 && args[0] == workerFlag {
		return runWorkerProcess(os.Stdin, os.Stdout)
	}
	if len(args) == 2 && (args[0] == "--show" || args[0] == "-show") {
		return show(args[1], os.Stdout)
	}
	if len(args) > 0 && (args[0] == "--compare" || args[0] == "-compare") {
		return seriesMain(args[1:], os.Stdout, os.Stderr, parseCompareFlags, runCompare)
	}
	if len(args) > 0 && (args[0] == "--cluster" || args[0] == "-cluster") {
		return seriesMain(args[1:], os.Stdout, os.Stderr, parseClusterFlags, runCluster)
	}
	if len(args) > 0 && (args[0] == "--cleanup-broker" || args[0] == "-cleanup-broker") {
		return cleanupMain(args[1:])
	}
	o, err := parseFlags(args, os.Stderr)
	if err != nil {
		return flagError(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var logw io.Writer = os.Stderr
	if o.Quiet {
		logw = io.Discard
	}
	rep, err := run(ctx, o, logw)
	if err != nil {
		return err
	}
	if o.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.writeText(os.Stdout)
}

// show prints a report saved with --json, a comparison's compare.json or
// a cluster run's cluster.json, as tables.
func show(path string, w io.Writer) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var probe struct {
		Rows    json.RawMessage `json:"rows"`
		Cluster json.RawMessage `json:"cluster_rows"`
	}
	if json.Unmarshal(b, &probe) == nil && probe.Cluster != nil {
		var c Cluster
		if err := json.Unmarshal(b, &c); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		var setups []string
		for _, n := range clusterSetupNames {
			if _, ok := c.Setups[n]; ok {
				setups = append(setups, n)
			}
		}
		c.Rows = clusterRows(c.Runs, setups, c.Setups)
		c.Ratios = clusterRatios(c.Rows)
		return c.writeText(w)
	}
	if json.Unmarshal(b, &probe) == nil && probe.Rows != nil {
		var c Comparison
		if err := json.Unmarshal(b, &c); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		c.Rows = compareRows(c.Runs) // with this version's checks
		return c.writeText(w)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return rep.writeText(w)
}

func parseFlags(args []string, errw io.Writer) (*options, error) {
	o := &options{args: args}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(errw)
	fs.Usage = func() {
		fmt.Fprint(errw, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.Scenario, "scenario", "fanout", "fanout, channels, idle or connect")
	fs.StringVar(&o.Target, "target", "herald", "server protocol: herald or centrifugo")
	fs.StringVar(&o.URL, "url", "", "WebSocket endpoint, or several nodes' as a comma list (default ws://127.0.0.1:8000/ws, centrifugo: ws://127.0.0.1:8000/connection/websocket)")
	fs.StringVar(&o.API, "api", "", "server API base URL, where the bench publishes (default: from the first --url, http://HOST)")
	fs.BoolVar(&o.SpreadPublish, "spread-publish", false, "publish through every --url node's API (concurrent requests round-robin over the nodes) rather than --api")
	fs.StringVar(&o.Key, "key", os.Getenv("HERALD_API_KEY"), "API key (default $HERALD_API_KEY)")
	fs.IntVar(&o.Conns, "conns", 1000, "subscriber connections")
	fs.IntVar(&o.Channels, "channels", 0, "channels; connection i subscribes to channel i mod channels (default: fanout 1, channels --conns, idle and connect --conns/100)")
	fs.Float64Var(&o.Rate, "rate", 100, "messages per second in all channels; 0: as fast as --window allows")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "publishing time, or idle hold")
	fs.Uint64Var(&o.Messages, "messages", 0, "stop publishing after this many channel messages (0: at --duration)")
	fs.IntVar(&o.Size, "size", 64, fmt.Sprintf("payload bytes (at least %d)", minPayloadSize))
	fs.StringVar(&o.Payload, "payload", "pad", `payload shape: pad (x padding, compresses to nothing), json (varied records, compresses as application JSON does) or doc (the same document with a few fields changed at each message, the workload of --delta)`)
	fs.BoolVar(&o.Compression, "compression", false, "offer permessage-deflate (RFC 7692) on every connection; compressed messages are inflated, and wire bytes per delivery reported")
	fs.BoolVar(&o.Delta, "delta", false, "subscribe asking for Fossil deltas (the namespace must have delta on; herald only); the subscribers apply them and check the result")
	fs.StringVar(&o.Publish, "publish", "api", "api (HTTP API) or client (publish commands over WebSocket)")
	fs.IntVar(&o.Batch, "batch", 1, "channels per publish request: > 1 uses the broadcast API, or pipelines client publishes")
	fs.IntVar(&o.Inflight, "inflight", 8, "concurrent publish requests (api) or publisher connections (client)")
	fs.IntVar(&o.Window, "window", 100, "with --rate 0: messages per channel published but not yet delivered to every subscriber")
	fs.IntVar(&o.Procs, "procs", 1, "processes holding the client connections (each under the open-file limit)")
	fs.StringVar(&o.SourceIPs, "source-ips", "", "bind client sockets to these loopback addresses (comma list), or N: 127.0.0.2 up to 127.0.0.N+1")
	fs.IntVar(&o.Concurrency, "connect-concurrency", 64, "connections being opened at once (per process)")
	fs.DurationVar(&o.ConnTimeout, "connect-timeout", 10*time.Second, "per connection: dial, handshake, connect and subscribe")
	fs.IntVar(&o.ReadBuffer, "read-buffer", 4096, "read buffer per connection, bytes")
	fs.DurationVar(&o.Settle, "settle", 2*time.Second, "before publishing: wait at most this long for the server to go quiet; idle: wait before sampling RSS")
	fs.DurationVar(&o.Drain, "drain", 10*time.Second, "after publishing: wait at most this long for the last deliveries")
	fs.DurationVar(&o.Setup, "setup-timeout", 2*time.Minute, "bound on opening all connections")
	fs.StringVar(&o.ServerPIDs, "server-pid", "", "server process id, or several nodes' as a comma list: RSS and CPU are summed (default: from each node's API, if the server is local)")
	fs.StringVar(&o.BrokerPIDs, "broker-pid", "", "broker process id(s), comma list: their CPU is reported apart (e.g. $(pgrep -x nats-server))")
	fs.StringVar(&o.Prefix, "channel-prefix", "", "channel name prefix (default bench-RANDOM-)")
	fs.BoolVar(&o.JSON, "json", false, "print the report as JSON")
	fs.BoolVar(&o.Quiet, "quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, o.validate()
}

func (o *options) validate() error {
	switch o.Scenario {
	case "fanout", "idle", "channels", "connect":
	default:
		return fmt.Errorf("--scenario %q: want fanout, channels, idle or connect", o.Scenario)
	}
	if _, err := targetFor(o.Target); err != nil {
		return err
	}
	if o.URL == "" {
		o.URL = "ws://127.0.0.1:8000/ws"
		if o.Target == "centrifugo" {
			o.URL = "ws://127.0.0.1:8000/connection/websocket"
		}
	}
	o.urls = nil
	for _, s := range strings.Split(o.URL, ",") {
		s = strings.TrimSpace(s)
		if _, err := apiBase(s); err != nil {
			return err
		}
		o.urls = append(o.urls, s)
	}
	if o.API == "" {
		o.API, _ = apiBase(o.urls[0])
	}
	o.API = strings.TrimSuffix(o.API, "/")
	if o.Conns < 1 {
		return errors.New("--conns must be at least 1")
	}
	if o.Channels < 0 {
		return errors.New("--channels must not be negative")
	}
	if o.Channels == 0 {
		switch o.Scenario {
		case "fanout":
			o.Channels = 1
		case "channels":
			o.Channels = o.Conns
		default:
			o.Channels = max(o.Conns/100, 1)
		}
	}
	if o.Rate < 0 || o.Duration <= 0 {
		return errors.New("--rate must not be negative and --duration must be positive")
	}
	o.Size = max(o.Size, minPayloadSize)
	if o.Publish != "api" && o.Publish != "client" {
		return fmt.Errorf("--publish %q: want api or client", o.Publish)
	}
	if o.Payload != "pad" && o.Payload != "json" && o.Payload != "doc" {
		return fmt.Errorf("--payload %q: want pad, json or doc", o.Payload)
	}
	if o.Delta && o.Target != "herald" {
		return errors.New("--delta needs --target herald")
	}
	if o.Batch < 1 || o.Inflight < 1 || o.Window < 1 || o.Procs < 1 || o.Concurrency < 1 {
		return errors.New("--batch, --inflight, --window, --procs and --connect-concurrency must be at least 1")
	}
	if o.Procs > o.Conns {
		o.Procs = o.Conns
	}
	if o.ReadBuffer < 512 {
		o.ReadBuffer = 512
	}
	if o.Prefix == "" {
		var b [3]byte
		_, _ = rand.Read(b[:])
		o.Prefix = "bench-" + hex.EncodeToString(b[:]) + "-"
	}
	for i := 0; i < len(o.Prefix); i++ {
		if !channelChar(o.Prefix[i]) {
			return fmt.Errorf("--channel-prefix %q: use A-Z a-z 0-9 and _-:.@/=,#!~+;", o.Prefix)
		}
	}
	ips, err := parseSourceIPs(o.SourceIPs)
	if err != nil {
		return err
	}
	o.sourceIPs = ips
	if o.serverPIDs, err = parsePIDs("--server-pid", o.ServerPIDs); err != nil {
		return err
	}
	if o.brokerPIDs, err = parsePIDs("--broker-pid", o.BrokerPIDs); err != nil {
		return err
	}
	return nil
}

// apiBase checks a WebSocket URL and returns the API base URL of its host
// (http://HOST, or https:// for wss://).
func apiBase(wsURL string) (string, error) {
	u, err := url.Parse(wsURL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return "", fmt.Errorf("--url %q: want ws://HOST/PATH", wsURL)
	}
	if u.Scheme == "wss" {
		return "https://" + u.Host, nil
	}
	return "http://" + u.Host, nil
}

// urlFor picks the URL of connection i among several nodes': the k-th
// subscriber (k = i / channels) of channel c (= i mod channels) goes to
// URL (c + k) mod len(urls), so every channel's subscribers are spread
// evenly over the nodes, and so are one-subscriber channels.
func urlFor(urls []string, channels, i int) string {
	if len(urls) == 1 {
		return urls[0]
	}
	channels = max(channels, 1)
	return urls[(i%channels+i/channels)%len(urls)]
}

// parsePIDs reads a comma-separated list of process ids ("" is none).
func parsePIDs(flagName, s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
		n, err := strconv.Atoi(part)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%s: %q is not a process id", flagName, part)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// channelChar reports whether b may appear in a channel name
// (docs/protocol.md); none of them needs escaping in JSON.
func channelChar(b byte) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		return true
	}
	return strings.IndexByte("_-:.@/=,#!~+;", b) >= 0
}

// parseSourceIPs reads --source-ips: a comma-separated list, or a count N
// meaning 127.0.0.2 ... 127.0.0.N+1.
func parseSourceIPs(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 253 {
			return nil, fmt.Errorf("--source-ips %d: want 1 to 253", n)
		}
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("127.0.0.%d", i+2)
		}
		return out, nil
	}
	var out []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if net.ParseIP(part) == nil {
			return nil, fmt.Errorf("--source-ips: %q is not an IP address", part)
		}
		out = append(out, part)
	}
	return out, nil
}

// commandLine renders the command for the report, quoting as a shell would
// need, with the API key replaced by K.
func (o *options) commandLine() string {
	parts := []string{"herald", "bench"}
	redact := false
	for _, a := range o.args {
		switch {
		case redact:
			a, redact = "K", false
		case a == "--key" || a == "-key":
			redact = true
		case strings.HasPrefix(a, "--key=") || strings.HasPrefix(a, "-key="):
			a = a[:strings.IndexByte(a, '=')+1] + "K"
		}
		if a == "" || strings.ContainsAny(a, " \t\"'$\\*?;&|<>()") {
			a = strconv.Quote(a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
