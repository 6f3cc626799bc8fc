package main

import (
	"strings"
	"testing"
)

// A run with a pass, a failure and two skips (one with t.Skip's message
// after other log lines, one with t.SkipNow and no message).
const events = `{"Action":"run","Package":"p","Test":"TestOK"}
{"Action":"output","Package":"p","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"pass","Package":"p","Test":"TestOK","Elapsed":0.1}
{"Action":"output","Package":"p","Test":"TestBad","Output":"    bad_test.go:9: boom\n"}
{"Action":"output","Package":"p","Test":"TestBad","Output":"--- FAIL: TestBad (0.00s)\n"}
{"Action":"fail","Package":"p","Test":"TestBad"}
{"Action":"output","Package":"p","Test":"TestRedis","Output":"=== RUN   TestRedis\n"}
{"Action":"output","Package":"p","Test":"TestRedis","Output":"    redis_test.go:40: dialing 127.0.0.1:6379\n"}
{"Action":"output","Package":"p","Test":"TestRedis","Output":"=== PAUSE TestRedis\n"}
{"Action":"output","Package":"p","Test":"TestRedis","Output":"=== CONT  TestRedis\n"}
{"Action":"output","Package":"p","Test":"TestRedis","Output":"    redis_test.go:41: no Redis at 127.0.0.1:6379\n"}
{"Action":"output","Package":"p","Test":"TestRedis","Output":"--- SKIP: TestRedis (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestRedis"}
{"Action":"output","Package":"p","Test":"TestQuiet","Output":"--- SKIP: TestQuiet (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestQuiet"}
{"Action":"fail","Package":"p","Elapsed":1}
`

func TestSummarize(t *testing.T) {
	var out strings.Builder
	if ok := summarize(strings.NewReader(events), &out); ok {
		t.Error("a run with a failing test reported success")
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	want := []string{
		"failed: p TestBad",
		"skipped: p TestQuiet: (no reason given)",
		"skipped: p TestRedis: redis_test.go:41: no Redis at 127.0.0.1:6379",
		"Go tests: 1 passed, 1 failed, 2 skipped",
	}
	if len(lines) < len(want) {
		t.Fatalf("summary too short:\n%s", out.String())
	}
	if got := lines[len(lines)-len(want):]; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("last lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSkipsAloneAreNoFailure(t *testing.T) {
	var out strings.Builder
	in := `{"Action":"skip","Package":"p","Test":"TestRedis"}` + "\n" + `{"Action":"pass","Package":"p"}` + "\n"
	if !summarize(strings.NewReader(in), &out) {
		t.Errorf("skips alone reported as a failure:\n%s", out.String())
	}
	if !strings.HasSuffix(out.String(), "Go tests: 0 passed, 0 failed, 1 skipped\n") {
		t.Errorf("counts:\n%s", out.String())
	}
}
