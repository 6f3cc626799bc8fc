package filter_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/heraldhq/herald/internal/filter"
)

func TestMatch(t *testing.T) {
	t.Parallel()
	tags := map[string]string{"type": "trade", "sym": "AAPL", "price": "101.5", "region": "eu-west", "n": "x"}
	for _, tc := range []struct {
		f    string
		want bool
	}{
		{`type == "trade"`, true},
		{`type == "quote"`, false},
		{`type != "quote"`, true},
		{`missing == "x"`, false},
		{`missing != "x"`, true},
		{`sym in ("MSFT", "AAPL")`, true},
		{`sym in ("MSFT")`, false},
		{`price in (101.5)`, true},
		{`region startswith "eu-"`, true},
		{`region startswith "us-"`, false},
		{`price > 100`, true},
		{`price >= 101.5`, true},
		{`price < 101.5`, false},
		{`price <= 1e3`, true},
		{`price == 101.50`, true},
		{`n > 0`, false},       // not a number
		{`n != 0`, true},       // not a number is not equal
		{`missing < 5`, false}, // missing
		{`type == "trade" and price > 200`, false},
		{`type == "trade" && price > 100`, true},
		{`type == "quote" or price > 100`, true},
		{`type == "quote" || price > 200`, false},
		{`not type == "quote"`, true},
		{`!(type == "trade")`, false},
		{`(type == "quote" or sym == "AAPL") and not region startswith "us"`, true},
		{`"sym" == "AAPL"`, true},
		{`type == "quote" or sym == "AAPL" and price > 200`, false}, // and binds tighter
	} {
		f, err := filter.Parse(tc.f)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.f, err)
			continue
		}
		if got := f.Match(tags); got != tc.want {
			t.Errorf("%q (normalized %q): Match = %v, want %v", tc.f, f, got, tc.want)
		}
	}
}

func TestNormalize(t *testing.T) {
	t.Parallel()
	a, err := filter.Parse(`a == "x" and (b > 2)`)
	if err != nil {
		t.Fatal(err)
	}
	b, err := filter.Parse(` ( a=="x" )  &&  b>2.0 `)
	if err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() {
		t.Errorf("normalized %q and %q differ", a, b)
	}
	c, err := filter.Parse(a.String())
	if err != nil {
		t.Fatal(err)
	}
	if c.String() != a.String() {
		t.Errorf("normalized text not stable: %q then %q", a, c)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		``,
		`type`,
		`type ==`,
		`type == trade`,
		`type == "trade" and`,
		`(type == "x"`,
		`type == "x")`,
		`type < "x"`,
		`type in "x"`,
		`type in ()`,
		`type in ("a",)`,
		`type startswith 5`,
		`type ~ "x"`,
		`and == "x"`,
		`type == "unterminated`,
		`price > 1e999`,
		`price > 1.2.3`,
		strings.Repeat("(", 40) + `a == "x"` + strings.Repeat(")", 40),
		strings.Repeat(`a == "x" or `, 70) + `a == "x"`,
		`a == "` + strings.Repeat("x", filter.MaxLen) + `"`,
	} {
		_, err := filter.Parse(s)
		if err == nil {
			t.Errorf("Parse(%.40q) succeeded", s)
			continue
		}
		if !errors.Is(err, filter.ErrSyntax) {
			t.Errorf("Parse(%.40q): %v does not wrap ErrSyntax", s, err)
		}
	}
}

// FuzzFilter: Parse never panics; a parsed filter's normalized text parses
// to the same normalized text and matches the same tags.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{
		`type == "trade"`, `a in ("x", 1, "y")`, `not (p > -1.5e3 or q startswith "\u00e9")`,
		`a && b || !c`, `"x y" != "z"`, `(((a == "1")))`,
	} {
		f.Add(s, "trade", "1")
	}
	f.Fuzz(func(t *testing.T, s, v1, v2 string) {
		p, err := filter.Parse(s)
		if err != nil {
			return
		}
		tags := map[string]string{"type": v1, "a": v2, "p": v2, "q": v1}
		got := p.Match(tags)
		if len(p.String()) > filter.MaxLen {
			return
		}
		q, err := filter.Parse(p.String())
		if err != nil {
			t.Fatalf("normalized %q of %q does not parse: %v", p, s, err)
		}
		if q.String() != p.String() {
			t.Fatalf("normalized %q reparses as %q", p, q)
		}
		if q.Match(tags) != got {
			t.Fatalf("%q and its normalized %q disagree", s, p)
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	f, err := filter.Parse(`type == "trade" and sym in ("AAPL", "MSFT") and price > 100`)
	if err != nil {
		b.Fatal(err)
	}
	tags := map[string]string{"type": "trade", "sym": "MSFT", "price": "101.5"}
	for b.Loop() {
		f.Match(tags)
	}
}
