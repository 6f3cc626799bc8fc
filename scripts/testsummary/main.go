// Command testsummary reads `go test -json` on stdin, prints each package's
// result and the output of failing tests, and ends with the counts. It exits
// non-zero if anything failed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
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
	var passed, failed, skipped int
	outputs := map[string]*strings.Builder{}
	var failures []string
	pkgFailed := map[string]bool{}
	var pkgLines []string
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Println(sc.Text()) // build errors and the like
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
					fmt.Printf("\n--- FAIL %s\n%s", key, b.String())
				}
			case "skip":
				skipped++
				fmt.Printf("SKIP %s: %s", key, lastLine(outputs[key]))
			}
			delete(outputs, key)
		}
	}
	// Packages that failed without a failing test (build errors, panics in
	// TestMain, leaked goroutines) show their output.
	for pkg := range pkgFailed {
		if b := outputs[pkg+" "]; b != nil {
			fmt.Printf("\n--- FAIL %s\n%s", pkg, b.String())
		}
	}
	sort.Strings(pkgLines)
	fmt.Println()
	for _, l := range pkgLines {
		fmt.Println(l)
	}
	for _, f := range failures {
		fmt.Println("failed:", f)
	}
	fmt.Printf("Go tests: %d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || len(pkgFailed) > 0 {
		os.Exit(1)
	}
}

func lastLine(b *strings.Builder) string {
	if b == nil {
		return "\n"
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	return strings.TrimSpace(lines[len(lines)-1]) + "\n"
}
