package bench

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Report is the outcome of one run: the parameters, and the figures of the
// phases the scenario has. It is printed as a table, or as JSON with --json
// (field names are the JSON keys; sizes in KiB, times in seconds or
// milliseconds as the key says).
type Report struct {
	Scenario string   `json:"scenario"`
	Target   string   `json:"target"`
	Command  string   `json:"command"`
	Started  string   `json:"started"` // RFC 3339
	Params   Params   `json:"params"`
	Warnings []string `json:"warnings,omitempty"`

	Server   *ServerStats   `json:"server,omitempty"`
	Broker   *BrokerStats   `json:"broker,omitempty"`
	Connect  *ConnectStats  `json:"connect,omitempty"`
	Idle     *IdleStats     `json:"idle,omitempty"`
	Publish  *PublishStats  `json:"publish,omitempty"`
	Delivery *DeliveryStats `json:"delivery,omitempty"`
	Latency  *Latency       `json:"latency,omitempty"` // end to end: publish call to subscriber's read
	// BenchCPU is the CPU the bench itself (all its processes) used while
	// publishing: on one machine it competes with the server for cores.
	BenchCPU *CPU `json:"bench_cpu,omitempty"`
	// Machine tells whether other processes competed for the CPU.
	Machine *Machine `json:"machine,omitempty"`
}

// Params are the run's parameters, defaults applied.
type Params struct {
	URL string `json:"url"`
	API string `json:"api,omitempty"`
	// SpreadPublish: publishes went to every node's API.
	SpreadPublish bool    `json:"spread_publish,omitempty"`
	Conns         int     `json:"conns"`
	Channels      int     `json:"channels"`
	Rate          float64 `json:"rate"`
	Duration      float64 `json:"duration_s"`
	Messages      uint64  `json:"messages,omitempty"`
	Size          int     `json:"size"`
	Payload       string  `json:"payload,omitempty"`     // --payload shape
	Compression   bool    `json:"compression,omitempty"` // permessage-deflate offered
	Delta         bool    `json:"delta,omitempty"`       // subscribers asked for deltas
	Publish       string  `json:"publish,omitempty"`
	Batch         int     `json:"batch,omitempty"`
	Inflight      int     `json:"inflight,omitempty"`
	Window        int     `json:"window,omitempty"`
	Procs         int     `json:"procs"`
	SourceIPs     int     `json:"source_ips,omitempty"`
	Concurrency   int     `json:"connect_concurrency"`
}

// ServerStats are read from the server process (/proc) and its API.
type ServerStats struct {
	PID int `json:"pid,omitempty"`
	// PIDs are the nodes' processes when there are several: RSS and CPU
	// below are their sums, Nodes has each one's.
	PIDs  []int       `json:"pids,omitempty"`
	Nodes []NodeStats `json:"nodes,omitempty"`
	// RSSBaseline is the RSS before the bench connected.
	RSSBaseline int64 `json:"rss_baseline_kib,omitempty"`
	// RSS is the RSS at the end of the measured phase; RSSMax the largest
	// sample during it.
	RSS        int64 `json:"rss_kib,omitempty"`
	RSSMax     int64 `json:"rss_max_kib,omitempty"`
	NumClients int   `json:"num_clients,omitempty"` // as the API(s) reported after connecting
	// NodeClients are the nodes' client counts, by URL host, with several.
	NodeClients []int `json:"node_clients,omitempty"`
	// CPU is the server's CPU time over the measured phase: publishing and
	// draining, the idle hold, or connecting (scenario connect).
	CPU *CPU `json:"cpu,omitempty"`
}

// NodeStats are one node's figures over the measured phase, with several.
type NodeStats struct {
	PID int   `json:"pid"`
	RSS int64 `json:"rss_kib,omitempty"` // at the end
	CPU *CPU  `json:"cpu,omitempty"`
}

// BrokerStats are the broker's processes (--broker-pid) over the measured
// phase: a nats-server or redis-server the nodes share.
type BrokerStats struct {
	PIDs []int `json:"pids"`
	RSS  int64 `json:"rss_kib,omitempty"` // at the end
	CPU  *CPU  `json:"cpu,omitempty"`
	// Share is the broker's CPU over the servers' and the broker's
	// together: its part of the cluster's work.
	Share float64 `json:"share_of_server_and_broker_cpu,omitempty"`
}

// ConnectStats describe opening the connections.
type ConnectStats struct {
	Requested int            `json:"requested"`
	Connected int            `json:"connected"`
	Failed    int            `json:"failed"`
	Errors    map[string]int `json:"errors,omitempty"`
	Elapsed   float64        `json:"elapsed_s"`
	Rate      float64        `json:"rate_per_s"` // connect + subscribe completed per second
	Latency   Latency        `json:"latency"`    // dial to subscribe reply, per connection
	ServerCPU *CPU           `json:"server_cpu,omitempty"`
	BrokerCPU *CPU           `json:"broker_cpu,omitempty"`
}

// IdleStats describe the idle hold.
type IdleStats struct {
	Hold float64 `json:"hold_s"`
	// RSSSamples were taken once a second after the settle time; their
	// minimum is the figure, since the server cannot be asked to collect
	// garbage.
	RSSSamples []int64 `json:"rss_samples_kib,omitempty"`
	RSSMin     int64   `json:"rss_min_kib,omitempty"`
	// RSSPerConn is (RSSMin - baseline) / connections, in KiB;
	// RSSPerConnEnd the same with the last sample, RSSPerConnMax with the
	// largest (pings and other traffic during the hold cost memory too).
	RSSPerConn    float64 `json:"rss_per_conn_kib,omitempty"`
	RSSPerConnEnd float64 `json:"rss_per_conn_end_kib,omitempty"`
	RSSPerConnMax float64 `json:"rss_per_conn_max_kib,omitempty"`
	// Lost counts connections that ended during the hold.
	Lost    int            `json:"lost_conns"`
	Endings map[string]int `json:"endings,omitempty"`
}

// DeliveryStats describe what the subscribers received.
type DeliveryStats struct {
	Subscribers int `json:"subscribers"`
	// Expected is the sum over published messages of their channel's
	// subscribers.
	Expected   uint64 `json:"expected"`
	Received   uint64 `json:"received"`
	Distinct   uint64 `json:"distinct"`
	Lost       uint64 `json:"lost"`
	Duplicates uint64 `json:"duplicates"`
	OutOfOrder uint64 `json:"out_of_order"`
	BadPayload uint64 `json:"bad_payload,omitempty"`
	// Deltas counts the deliveries that came as deltas (--delta).
	Deltas uint64 `json:"deltas,omitempty"`
	// Unexpected counts distinct receptions beyond Expected (publishes
	// that reported an error but went through).
	Unexpected uint64 `json:"unexpected,omitempty"`
	// Elapsed runs from the first publish to the last delivery.
	Elapsed float64 `json:"elapsed_s"`
	Rate    float64 `json:"per_s"`
	// Drained is false when the drain time ran out before every expected
	// delivery arrived.
	Drained bool `json:"drained"`
	// ServerCPUPerDelivery is server CPU over the measured phase divided
	// by deliveries, in microseconds.
	ServerCPUPerDelivery float64 `json:"server_cpu_per_delivery_us,omitempty"`
	// WireBytes is what the subscribers read from their sockets while
	// publishing and draining (frames with their headers, compressed or
	// not); WireBytesPerDelivery divides it by the deliveries.
	WireBytes            uint64  `json:"wire_bytes,omitempty"`
	WireBytesPerDelivery float64 `json:"wire_bytes_per_delivery,omitempty"`
	// BrokerCPUPerDelivery is the same for the broker (--broker-pid).
	BrokerCPUPerDelivery float64        `json:"broker_cpu_per_delivery_us,omitempty"`
	LostConns            int            `json:"lost_conns"`
	Endings              map[string]int `json:"endings,omitempty"`
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// writeText prints the report as an aligned table.
func (r *Report) writeText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, format string, args ...any) {
		fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...)
	}
	p := r.Params
	row("scenario", "%s (target %s)", r.Scenario, r.Target)
	row("command", "%s", r.Command)
	switch r.Scenario {
	case "idle":
		row("params", "conns=%d channels=%d duration=%gs procs=%d", p.Conns, p.Channels, p.Duration, p.Procs)
	case "connect":
		row("params", "conns=%d channels=%d procs=%d concurrency=%d", p.Conns, p.Channels, p.Procs, p.Concurrency)
	default:
		row("params", "conns=%d channels=%d rate=%g/s duration=%gs size=%dB procs=%d", p.Conns, p.Channels, p.Rate, p.Duration, p.Size, p.Procs)
	}
	if p.Publish != "" {
		w := ""
		if p.Window > 0 {
			w = fmt.Sprintf(" window=%d", p.Window)
		}
		row("", "publish=%s batch=%d inflight=%d%s", p.Publish, p.Batch, p.Inflight, w)
	}
	if c := r.Connect; c != nil {
		row("connect", "%d/%d connected in %.3fs: %.0f/s; latency p50 %s p99 %s max %s",
			c.Connected, c.Requested, c.Elapsed, c.Rate, fmtMS(c.Latency.P50), fmtMS(c.Latency.P99), fmtMS(c.Latency.Max))
		if c.ServerCPU != nil {
			row("", "server cpu while connecting %.2fs (%.2f cores)", c.ServerCPU.Total, c.ServerCPU.Cores)
		}
		if c.BrokerCPU != nil {
			row("", "broker cpu while connecting %.2fs (%.2f cores)", c.BrokerCPU.Total, c.BrokerCPU.Cores)
		}
		for _, k := range sortedKeys(c.Errors) {
			row("  connect error", "%d x %s", c.Errors[k], k)
		}
	}
	if s := r.Server; s != nil {
		if len(s.PIDs) > 1 {
			row("server", "%d nodes, pids %s, %d clients per their APIs %s", len(s.PIDs), joinInts(s.PIDs), s.NumClients, joinInts(s.NodeClients))
		} else {
			row("server", "pid %d, %d clients per its API", s.PID, s.NumClients)
		}
		if s.RSSBaseline > 0 {
			row("  rss", "baseline %s, end %s, max %s", fmtKiB(s.RSSBaseline), fmtKiB(s.RSS), fmtKiB(s.RSSMax))
		}
		if s.PID == 0 && len(s.PIDs) == 0 {
			row("  rss, cpu", "unknown: the server process was not found")
		}
		if s.CPU != nil {
			row("  cpu", "%.2fs (user %.2fs, sys %.2fs): %.2f cores", s.CPU.Total, s.CPU.User, s.CPU.Sys, s.CPU.Cores)
		}
		for _, n := range s.Nodes {
			if n.CPU != nil {
				row("  node", "pid %d: cpu %.2fs (%.2f cores), rss %s", n.PID, n.CPU.Total, n.CPU.Cores, fmtKiB(n.RSS))
			}
		}
	}
	if b := r.Broker; b != nil {
		row("broker", "pid %s, rss %s", joinInts(b.PIDs), fmtKiB(b.RSS))
		if b.CPU != nil {
			row("  cpu", "%.2fs (user %.2fs, sys %.2fs): %.2f cores, %.1f%% of servers + broker", b.CPU.Total, b.CPU.User, b.CPU.Sys, b.CPU.Cores, b.Share*100)
		}
	}
	if i := r.Idle; i != nil {
		row("idle", "held %.1fs; rss min %s over %d samples", i.Hold, fmtKiB(i.RSSMin), len(i.RSSSamples))
		if i.RSSPerConn > 0 {
			row("  rss per connection", "%.2f KiB (min); %.2f KiB at the end, %.2f KiB at the peak", i.RSSPerConn, i.RSSPerConnEnd, i.RSSPerConnMax)
		}
		row("  lost connections", "%d %s", i.Lost, fmtMap(i.Endings))
	}
	if pb := r.Publish; pb != nil {
		row("publish", "%d messages in %d requests over %.3fs: %.1f/s, %d failed, %d rounds", pb.Messages, pb.Requests, pb.Elapsed, pb.Rate, pb.Failed, pb.Rounds)
		row("  request rtt", "p50 %s p99 %s max %s", fmtMS(pb.RTT.P50), fmtMS(pb.RTT.P99), fmtMS(pb.RTT.Max))
		if pb.MaxLag > 0 {
			row("  behind schedule", "max %s", fmtMS(pb.MaxLag))
		}
		if pb.Stalled {
			row("  STALLED", "no deliveries for a while: publishing stopped early")
		}
		for _, k := range sortedKeys(pb.Errors) {
			row("  publish error", "%d x %s", pb.Errors[k], k)
		}
	}
	if d := r.Delivery; d != nil {
		row("delivery", "%d received of %d expected by %d subscribers in %.3fs: %.0f/s", d.Received, d.Expected, d.Subscribers, d.Elapsed, d.Rate)
		row("  checks", "lost %d, duplicated %d, out of order %d, bad %d, unexpected %d, drained %v",
			d.Lost, d.Duplicates, d.OutOfOrder, d.BadPayload, d.Unexpected, d.Drained)
		if d.Deltas > 0 {
			row("  received as deltas", "%d", d.Deltas)
		}
		if d.WireBytesPerDelivery > 0 {
			row("  wire bytes per delivery", "%.1f", d.WireBytesPerDelivery)
		}
		if d.ServerCPUPerDelivery > 0 {
			row("  server cpu per delivery", "%.2f us", d.ServerCPUPerDelivery)
		}
		if d.BrokerCPUPerDelivery > 0 {
			row("  broker cpu per delivery", "%.2f us", d.BrokerCPUPerDelivery)
		}
		row("  lost connections", "%d %s", d.LostConns, fmtMap(d.Endings))
	}
	if l := r.Latency; l != nil && l.Count > 0 {
		row("latency", "p50 %s  p90 %s  p99 %s  p999 %s  max %s  (mean %s, min %s)",
			fmtMS(l.P50), fmtMS(l.P90), fmtMS(l.P99), fmtMS(l.P999), fmtMS(l.Max), fmtMS(l.Mean), fmtMS(l.Min))
	}
	if c := r.BenchCPU; c != nil {
		row("bench cpu", "%.2fs: %.2f cores", c.Total, c.Cores)
	}
	if m := r.Machine; m != nil {
		row("machine", "%d cores, %.2f busy, %.2f used by other processes", m.Cores, m.Busy, m.Other)
	}
	for _, wmsg := range r.Warnings {
		row("warning", "%s", wmsg)
	}
	return tw.Flush()
}

func joinInts(v []int) string {
	parts := make([]string, len(v))
	for i, n := range v {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

func fmtMS(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	default:
		return fmt.Sprintf("%.3fms", v)
	}
}

func fmtKiB(v int64) string {
	if v >= 10<<10 {
		return fmt.Sprintf("%.1f MiB", float64(v)/1024)
	}
	return fmt.Sprintf("%d KiB", v)
}

func fmtMap(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
