package nats

import "testing"

func TestCheckServerVersion(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		version  string
		replicas int
		ok       bool
	}{
		{"2.9.10", 3, false}, // seen giving two publications one offset
		{"2.10.19", 3, false},
		{"2.10.20", 3, true},
		{"2.11.0", 2, true},
		{"2.15.2", 3, true},
		{"3.0.0", 3, true},
		{"v2.9.10", 3, false},
		{"2.10.19-beta.1", 3, false},
		{"2.9.10", 1, true}, // not replicated: the condition is checked where it is stored
		{"2.9.10", 0, true},
		{"", 3, true}, // unknown: not a release known to be affected
		{"weird", 3, true},
	} {
		err := checkServerVersion(c.version, c.replicas)
		if (err == nil) != c.ok {
			t.Errorf("checkServerVersion(%q, %d) = %v, want ok=%v", c.version, c.replicas, err, c.ok)
		}
	}
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"2.9.10", "v2.15.2", "2.10.19-beta.1", "", "1..2", "9999999999999999999.1.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, ok := parseVersion(s)
		if !ok {
			return
		}
		for _, n := range v {
			if n < 0 {
				t.Fatalf("parseVersion(%q) = %v: negative part", s, v)
			}
		}
	})
}
