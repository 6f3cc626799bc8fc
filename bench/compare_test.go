package bench

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/heraldhq/herald/internal/testaddr"
)

func TestScaleArgs(t *testing.T) {
	got := scaleArgs(strings.Fields("--scenario idle --conns 15000 --window 20000 --duration 150s --settle 5s"), 0.01)
	want := strings.Fields("--scenario idle --conns 150 --window 200 --duration 1.5s --settle 5s")
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	got = scaleArgs(strings.Fields("--conns 10 --duration 2s"), 0.01)
	if want := strings.Fields("--conns 2 --duration 1s"); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestCompareFlags(t *testing.T) {
	o, err := parseCompareFlags([]string{"--runs", "connect-10k,idle-15k", "--scale", "0.5", "--meta", "a=b=c"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.runs) != 2 || o.runs[0].Name != "connect-10k" || !slices.Contains(o.runs[1].Args, "7500") || o.Meta[0] != "a=b=c" {
		t.Errorf("%+v", o)
	}
	o, err = parseCompareFlags(nil, io.Discard)
	extra := 0
	for _, r := range compareRuns {
		if r.Extra {
			extra++
		}
	}
	if err != nil || extra == 0 || len(o.runs) != len(compareRuns)-extra || slices.ContainsFunc(o.runs, func(r compareRun) bool { return r.Extra }) {
		t.Errorf("default runs: %v %+v", err, o)
	}
	// Scaling must not change the table of runs.
	if !slices.Contains(compareRuns[0].Args, "15000") {
		t.Errorf("compareRuns changed: %q", compareRuns[0].Args)
	}
	for _, bad := range [][]string{{"--runs", "nope"}, {"--repeat", "0"}, {"--meta", "x"}, {"extra"}} {
		if _, err := parseCompareFlags(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// Every run's arguments are valid bench flags, and every figure names
	// a run.
	for _, r := range compareRuns {
		if _, err := parseFlags(append(slices.Clone(r.Args), "--target", "centrifugo"), io.Discard); err != nil {
			t.Errorf("run %s: %v", r.Name, err)
		}
	}
	for _, f := range compareFigures {
		if !slices.ContainsFunc(compareRuns, func(r compareRun) bool { return r.Name == f.Run }) {
			t.Errorf("figure %q: no run %q", f.Name, f.Run)
		}
	}
}

func TestCompareRows(t *testing.T) {
	fan := func(target string, rate, cpu float64) CompareRunResult {
		return CompareRunResult{Name: "fanout-1x1000-saturated", Target: target, Report: &Report{
			Delivery: &DeliveryStats{Rate: rate, ServerCPUPerDelivery: cpu},
			Latency:  &Latency{Count: 1, P99: 10},
		}}
	}
	runs := []CompareRunResult{
		fan("herald", 900000, 1.5), fan("centrifugo", 300000, 6), fan("herald", 1000000, 1.9),
		fan("centrifugo", 200000, 8), fan("herald", 950000, 1.7),
		{Name: "idle-15k", Target: "herald", Report: &Report{Idle: &IdleStats{RSSPerConn: 1.5}}},
		{Name: "channels-10k-broadcast", Target: "herald", Report: &Report{
			Delivery: &DeliveryStats{Rate: 60000, Expected: 100, Lost: 3, LostConns: 2, Endings: map[string]int{"close 3001": 2}}}},
		{Name: "channels-10k-broadcast", Target: "centrifugo", Report: &Report{Delivery: &DeliveryStats{Rate: 30000}}},
		{Name: "idle-15k", Target: "centrifugo", Error: "boom"},
	}
	rows := compareRows(runs)
	byName := map[string]CompareRow{}
	for _, r := range rows {
		byName[r.Figure] = r
	}
	r := byName["fan-out 1 x 1,000 saturated"]
	if r.Herald == nil || *r.Herald != 950000 || *r.Centrifugo != 250000 || *r.Ratio != 3.8 || *r.Advantage != 3.8 || r.GoalMet == nil || !*r.GoalMet {
		t.Errorf("fanout row: %+v", r)
	}
	r = byName["server CPU per delivery, fan-out 1 x 1,000 saturated"]
	if *r.Herald != 1.7 || *r.Centrifugo != 7 || *r.Advantage != 4.12 || !*r.GoalMet {
		t.Errorf("cpu row: %+v", r)
	}
	// Centrifugo's run failed: no ratio, and a goal relative to it is
	// not judged.
	r = byName["RSS per idle subscribed connection (15,000 conns, min sample)"]
	if *r.Herald != 1.5 || r.Centrifugo != nil || r.Ratio != nil || r.GoalMet != nil {
		t.Errorf("idle row: %+v", r)
	}
	// Herald beat the goal but lost messages: not met.
	r = byName["10,000 conns on 10,000 channels, broadcast API (100 channels/request)"]
	if *r.Herald != 60000 || r.GoalMet == nil || *r.GoalMet || len(r.HeraldIssues) != 1 || len(r.CentIssues) != 0 ||
		r.HeraldIssues[0] != "3 of 100 deliveries lost, 0 duplicated, 0 out of order, 0 bad; 2 connections ended (close 3001: 2)" {
		t.Errorf("channels row: %+v", r)
	}
	if _, ok := byName["connect + subscribe rate (10,000 conns)"]; ok {
		t.Errorf("row for a run that did not happen")
	}
	c := &Comparison{Rows: rows, Runs: runs, Servers: map[string]ServerSetup{}}
	var b strings.Builder
	if err := c.writeText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"950000", "3.8x", "FAILED: boom", ">= 3x Centrifugo", "issue: 10,000 conns on 10,000 channels"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

// TestCompareEndToEnd runs `herald bench --compare` on two small runs. The
// test binary plays every process (see TestMain): the bench, a Herald
// server, and behind a stand-in for bench/peers/centrifugo.sh the fake
// Centrifugo.
func TestCompareEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers and bench processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(childEnv, "1")
	dir := t.TempDir()
	script := filepath.Join(dir, "centrifugo.sh")
	err = os.WriteFile(script, []byte(`#!/bin/sh
case "$1" in
install) echo "`+exe+`" ;;
config) echo '{"http_api":{"key":"'"$KEY"'"}}' >"`+dir+`/config-$2.json"; echo "`+dir+`/config-$2.json" ;;
exec) exec "`+exe+`" fake-centrifugo "$2" ;;
esac
`), 0o755)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "herald.yaml")
	if err := os.WriteFile(cfg, []byte("allow_anonymous: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	o, err := parseCompareFlags([]string{"--out", out, "--herald-config", cfg, "--centrifugo", script,
		"--herald-port", itoa(testaddr.Port(t)), "--centrifugo-port", itoa(testaddr.Port(t)),
		"--runs", "fanout-1x1000-saturated,connect-10k", "--scale", "0.02", "--pause", "0s",
		"--meta", "herald_commit=test"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	cmp, err := runCompare(t.Context(), o, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if len(cmp.Runs) != 4 {
		t.Fatalf("%d runs", len(cmp.Runs))
	}
	for _, r := range cmp.Runs {
		if r.Error != "" || r.Report == nil || r.Report.Server == nil || r.Report.Server.PID == 0 {
			t.Errorf("run %s on %s: %q %+v", r.Name, r.Target, r.Error, r.Report)
		}
		if !strings.Contains(r.Command, "--target "+r.Target) || !strings.Contains(r.Command, "--key K") {
			t.Errorf("command %q", r.Command)
		}
	}
	found := 0
	for _, r := range cmp.Rows {
		if r.Herald != nil && r.Centrifugo != nil && r.Ratio != nil {
			found++
		}
	}
	if found < 4 { // fan-out rate, cpu per delivery, p99, connect rate
		t.Errorf("%d complete rows: %+v", found, cmp.Rows)
	}
	if cmp.Meta["herald_commit"] != "test" || cmp.Servers["centrifugo"].Version != "fake 0.0.0" ||
		!strings.Contains(cmp.Servers["centrifugo"].Config, `"key":"K"`) {
		t.Errorf("meta %v servers %+v", cmp.Meta, cmp.Servers)
	}
	// compare.json is complete and prints as the same table.
	raw, err := os.ReadFile(filepath.Join(out, "compare.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Comparison
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	var shown, direct strings.Builder
	if err := show(filepath.Join(out, "compare.json"), &shown); err != nil {
		t.Fatal(err)
	}
	_ = cmp.writeText(&direct)
	if shown.String() != direct.String() {
		t.Errorf("--show differs:\n%s\nwant\n%s", shown.String(), direct.String())
	}
	t.Logf("\n%s", direct.String())
}

func itoa(n int) string { return strconv.Itoa(n) }
