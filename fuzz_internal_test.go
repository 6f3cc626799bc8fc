package herald

import (
	"strings"
	"testing"
)

// FuzzResolve checks channel-name parsing: no panic, and a name is accepted
// only if it is within the length limit and of allowed characters, and then
// lands in the namespace named by its prefix.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"room:1", "chat", "a:b:c", "", ":", "bad name", "ns:ü", strings.Repeat("x", 300)} {
		f.Add(s)
	}
	s := &Server{cfg: Config{MaxChannelLength: 255}, namespaces: map[string]*namespace{
		"":     compileNamespace(Namespace{}),
		"room": compileNamespace(Namespace{Name: "room", Presence: true}),
	}}
	f.Fuzz(func(t *testing.T, ch string) {
		ns, perr := s.resolve(ch)
		valid := validChannelName(ch, 255)
		if !valid {
			if perr == nil {
				t.Fatalf("accepted invalid name %q", ch)
			}
			return
		}
		prefix, _, hasColon := strings.Cut(ch, ":")
		switch {
		case !hasColon || prefix == "":
			if perr != nil || ns.Name != "" {
				t.Fatalf("%q: want the default namespace, got %v %v", ch, ns, perr)
			}
		case prefix == "room":
			if perr != nil || ns.Name != "room" {
				t.Fatalf("%q: want namespace room, got %v", ch, perr)
			}
		default:
			if perr == nil {
				t.Fatalf("%q: unknown namespace %q accepted", ch, prefix)
			}
		}
	})
}

// FuzzSplitCommands checks the parser of HTTP streaming's POST bodies: no
// panic; an accepted body gives 1 to 100 commands, none empty, none over
// the limit, none holding a newline, and together they are the body's
// non-blank lines.
func FuzzSplitCommands(f *testing.F) {
	for _, s := range []string{`{"id":1,"ping":{}}`, "{\"id\":1}\n{\"id\":2}\n", "\n\n", "", " x \r\n y", strings.Repeat("a\n", 101)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		const max = 64
		cmds, err := splitCommands(body, max)
		var lines []string
		for _, l := range strings.Split(string(body), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				lines = append(lines, l)
			}
		}
		if err != nil {
			if cmds != nil {
				t.Fatalf("commands with an error")
			}
			ok := len(lines) > 0 && len(lines) <= maxBatchCommands
			for _, l := range lines {
				ok = ok && len(l) <= max
			}
			if ok {
				t.Fatalf("refused %q: %v", body, err)
			}
			return
		}
		if len(cmds) != len(lines) || len(cmds) == 0 || len(cmds) > maxBatchCommands {
			t.Fatalf("%d commands from %d lines", len(cmds), len(lines))
		}
		for i, c := range cmds {
			if string(c) != lines[i] || len(c) > max || strings.ContainsRune(string(c), '\n') {
				t.Fatalf("command %d is %q, line %q", i, c, lines[i])
			}
		}
	})
}

// FuzzEventID checks the parser of SSE event ids (Last-Event-ID): no
// panic, and an accepted id formats back to an id that parses to the
// same positions.
func FuzzEventID(f *testing.F) {
	for _, s := range []string{"e:1", "e:1,,x%2Cy:zz", ",", "", ":", "e:", "%zz:1", "e:1:2", strings.Repeat("a:1,", 10)} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, id string, n int) {
		n = n%200 + 1
		if n < 1 {
			n = -n + 2
		}
		pos, err := parseEventID(id, n)
		if err != nil {
			return
		}
		if len(pos) != n {
			t.Fatalf("%d positions for %d channels", len(pos), n)
		}
		again, err := parseEventID(formatEventID(pos), n)
		if err != nil {
			t.Fatalf("%q formats to %q, which does not parse: %v", id, formatEventID(pos), err)
		}
		for i := range pos {
			if pos[i] != again[i] {
				t.Fatalf("position %d: %+v then %+v", i, pos[i], again[i])
			}
		}
	})
}
