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
