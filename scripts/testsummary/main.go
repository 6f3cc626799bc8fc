// Command testsummary reads `go test -json` on stdin, prints each package's
// result and the output of failing tests, and ends with the skipped tests
// (name and reason, one "skipped:" line each) and the counts. It exits
// non-zero if anything failed; whether skips are acceptable is the caller's
// call (scripts/test.sh fails the run on them unless told otherwise).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	if !summarize(os.Stdin, os.Stdout) {
		os.Exit(1)
	}
}

// summarize writes the summary of the events read from r to w and reports
// whether every test and package passed (skipped tests do not count as
// failures).
func summarize(r io.Reader, w io.Writer) bool {
	var passed, failed, skipped int
	outputs := map[string]*strings.Builder{}
	var failures, skips []string
	pkgFailed := map[string]bool{}
	var pkgLines []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Fprintln(w, sc.Text()) // build errors and the like
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			b := outputs[key]
			if b == nil {
				b = &strings.Builder{}
				outputs[key] = b
			}
			if b.Len() < 64<<10 {
				b.WriteString(e.Output)
			}
		case "pass", "fail", "skip":
			if e.Test == "" {
				status := map[string]string{"pass": "ok  ", "fail": "FAIL", "skip": "skip"}[e.Action]
				pkgLines = append(pkgLines, fmt.Sprintf("%s %s (%.1fs)", status, e.Package, e.Elapsed))
				if e.Action == "fail" {
					pkgFailed[e.Package] = true
				}
				continue
			}
			switch e.Action {
			case "pass":
				passed++
			case "fail":
				failed++
				failures = append(failures, key)
				if b := outputs[key]; b != nil {
					fmt.Fprintf(w, "\n--- FAIL %s\n%s", key, b.String())
				}
			case "skip":
				skipped++
				skips = append(skips, key+": "+skipReason(outputs[key]))
			}
			delete(outputs, key)
		}
	}
	// Packages that failed without a failing test (build errors, panics in
	// TestMain, leaked goroutines) show their output.
	for pkg := range pkgFailed {
		if b := outputs[pkg+" "]; b != nil {
			fmt.Fprintf(w, "\n--- FAIL %s\n%s", pkg, b.String())
		}
	}
	sort.Strings(pkgLines)
	fmt.Fprintln(w)
	for _, l := range pkgLines {
		fmt.Fprintln(w, l)
	}
	for _, f := range failures {
		fmt.Fprintln(w, "failed:", f)
	}
	sort.Strings(skips)
	for _, s := range skips {
		fmt.Fprintln(w, "skipped:", s)
	}
	fmt.Fprintf(w, "Go tests: %d passed, %d failed, %d skipped\n", passed, failed, skipped)
	return failed == 0 && len(pkgFailed) == 0
}

// logLine matches the first line of a t.Log, t.Skip or t.Error message.
var logLine = regexp.MustCompile(`^\s+\S+\.go:\d+: `)

// skipReason is the message a skipped test gave: its last logged line (the
// one t.Skip wrote, just before "--- SKIP"), with the file and line.
func skipReason(b *strings.Builder) string {
	if b == nil {
		return "(no reason given)"
	}
	lines := strings.Split(b.String(), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if logLine.MatchString(lines[i]) {
			return strings.TrimSpace(lines[i])
		}
	}
	return "(no reason given)"
}
