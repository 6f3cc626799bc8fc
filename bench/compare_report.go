package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// compareRows computes the ratio table from the runs: each figure is the
// median over the repeats of the runs that produced it.
func compareRows(runs []CompareRunResult) []CompareRow {
	var rows []CompareRow
	for _, f := range compareFigures {
		row := CompareRow{Figure: f.Name, Run: f.Run, Unit: f.Unit, LowerBetter: f.Lower, Goal: f.Goal}
		var hv, cv []float64
		found := false
		for _, r := range runs {
			if r.Name != f.Run {
				continue
			}
			found = true
			if r.Report == nil || r.Error != "" {
				continue
			}
			v, ok := f.get(r.Report)
			if !ok {
				continue
			}
			issue := runIssues(r.Report)
			switch r.Target {
			case "herald":
				hv = append(hv, v)
				if issue != "" {
					row.HeraldIssues = append(row.HeraldIssues, issue)
				}
			case "centrifugo":
				cv = append(cv, v)
				if issue != "" {
					row.CentIssues = append(row.CentIssues, issue)
				}
			}
		}
		if !found {
			continue
		}
		row.HeraldAll, row.CentAll = hv, cv
		if len(hv) > 0 {
			row.Herald = ptr(median(hv))
		}
		if len(cv) > 0 {
			row.Centrifugo = ptr(median(cv))
		}
		if row.Herald != nil && row.Centrifugo != nil && *row.Centrifugo > 0 && *row.Herald > 0 {
			h, c := *row.Herald, *row.Centrifugo
			row.Ratio = ptr(roundSig(h / c))
			if f.Lower {
				row.Advantage = ptr(roundSig(c / h))
			} else {
				row.Advantage = ptr(roundSig(h / c))
			}
		}
		if f.met != nil && row.Herald != nil && (row.Centrifugo != nil || !strings.Contains(f.Goal, "Centrifugo")) {
			c := 0.0
			if row.Centrifugo != nil {
				c = *row.Centrifugo
			}
			row.GoalMet = ptr(f.met(*row.Herald, c) && len(row.HeraldIssues) == 0)
		}
		rows = append(rows, row)
	}
	return rows
}

// runIssues describes what went wrong in a run, or returns "".
func runIssues(r *Report) string {
	var parts []string
	if c := r.Connect; c != nil && c.Failed > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d connections failed %s", c.Failed, c.Requested, fmtMap(c.Errors)))
	}
	if i := r.Idle; i != nil && i.Lost > 0 {
		parts = append(parts, fmt.Sprintf("%d connections ended during the hold %s", i.Lost, fmtMap(i.Endings)))
	}
	if d := r.Delivery; d != nil {
		if d.Lost > 0 || d.Duplicates > 0 || d.OutOfOrder > 0 || d.BadPayload > 0 {
			parts = append(parts, fmt.Sprintf("%d of %d deliveries lost, %d duplicated, %d out of order, %d bad",
				d.Lost, d.Expected, d.Duplicates, d.OutOfOrder, d.BadPayload))
		}
		if d.LostConns > 0 {
			parts = append(parts, fmt.Sprintf("%d connections ended %s", d.LostConns, fmtMap(d.Endings)))
		}
	}
	if p := r.Publish; p != nil && p.Failed > 0 {
		parts = append(parts, fmt.Sprintf("%d publishes failed", p.Failed))
	}
	return strings.Join(parts, "; ")
}

func ptr[T any](v T) *T { return &v }

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// roundSig rounds to 3 significant digits.
func roundSig(v float64) float64 {
	if v == 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return v
	}
	p := math.Pow(10, 2-math.Floor(math.Log10(math.Abs(v))))
	return math.Round(v*p) / p
}

func fmtFigure(v *float64) string {
	if v == nil {
		return "-"
	}
	switch x := *v; {
	case x >= 1000:
		return strconv.FormatFloat(math.Round(x), 'f', -1, 64)
	case x >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case x >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	default:
		return strconv.FormatFloat(x, 'f', 2, 64)
	}
}

// writeText prints the ratio table, then each run's interference and
// warnings.
func (c *Comparison) writeText(w io.Writer) error {
	fmt.Fprintf(w, "Herald vs Centrifugo, %s\n", c.Started)
	if v := c.Meta["herald_commit"]; v != "" {
		fmt.Fprintf(w, "herald commit %s\n", v)
	}
	for _, name := range []string{"herald", "centrifugo"} {
		if s, ok := c.Servers[name]; ok {
			fmt.Fprintf(w, "%s: %s (%s)\n", name, s.Version, s.Command)
		}
	}
	m := c.Machine
	fmt.Fprintf(w, "machine: %d cores (%s), %s, kernel %s, open files %s; servers and load generator share the cores\n",
		m.Cores, m.CPU, m.MemTotal, m.Kernel, m.NoFile)
	if c.Params.Scale != 1 && c.Params.Scale != 0 {
		fmt.Fprintf(w, "SCALED by %g: connection counts and durations differ from the figure names\n", c.Params.Scale)
	}
	if c.Params.Repeat > 1 {
		fmt.Fprintf(w, "each figure is the median of %d runs per server\n", c.Params.Repeat)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tunit\therald\tcentrifugo\therald/centrifugo\therald advantage\tgoal\tmet")
	for _, r := range c.Rows {
		ratio, adv, met := "-", "-", ""
		if r.Ratio != nil {
			ratio = strconv.FormatFloat(*r.Ratio, 'g', 3, 64)
		}
		if r.Advantage != nil {
			adv = strconv.FormatFloat(*r.Advantage, 'g', 3, 64) + "x"
			if *r.Advantage < 1 {
				adv += " (worse)"
			}
		}
		if r.GoalMet != nil {
			met = "no"
			if *r.GoalMet {
				met = "yes"
			}
		}
		unit := r.Unit
		if r.LowerBetter {
			unit += " (lower better)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Figure, unit, fmtFigure(r.Herald), fmtFigure(r.Centrifugo), ratio, adv, r.Goal, met)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range c.Rows {
		for _, is := range r.HeraldIssues {
			fmt.Fprintf(w, "issue: %s: herald: %s\n", r.Figure, is)
		}
		for _, is := range r.CentIssues {
			fmt.Fprintf(w, "issue: %s: centrifugo: %s\n", r.Figure, is)
		}
	}
	fmt.Fprintln(w, "\nruns (other = CPU of other processes during the measurement, in cores):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tserver\trepeat\tattempts\tserver cores\tbench cores\tother cores\tresult")
	for _, r := range c.Runs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.2f\t%.2f\t%.2f\t%s\n", r.Name, r.Target, r.Repeat, r.Attempts, r.ServerCores, r.BenchCores, r.OtherCores, runResult(r.Error, r.Report))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range c.Runs {
		if r.Report == nil {
			continue
		}
		for _, wmsg := range r.Report.Warnings {
			fmt.Fprintf(w, "warning: %s on %s: %s\n", r.Name, r.Target, wmsg)
		}
	}
	return nil
}
