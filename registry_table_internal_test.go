package herald

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"testing"
)

// TestSessionTable: random puts and removes, against a map, leave every
// session found by its id and none other, also through growth, shrinking
// and the back shifts of removal; a session put under an id another holds
// replaces it, and removing a session no longer held removes nothing.
func TestSessionTable(t *testing.T) {
	t.Parallel()
	for _, ids := range []int{3, 40, 1000} {
		t.Run(fmt.Sprint(ids), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(uint64(ids), 7))
			tab := sessionTable{seed: maphash.MakeSeed()}
			want := map[string]*session{}
			var gone []*session // sessions replaced or removed
			check := func(step int) {
				t.Helper()
				if tab.n != len(want) {
					t.Fatalf("step %d: %d sessions counted, want %d", step, tab.n, len(want))
				}
				if got := len(tab.appendAll(nil)); got != len(want) {
					t.Fatalf("step %d: %d sessions listed, want %d", step, got, len(want))
				}
				if len(tab.slots) > 0 && tab.n*4 > len(tab.slots)*3 {
					t.Fatalf("step %d: %d sessions in %d slots", step, tab.n, len(tab.slots))
				}
				for id, ss := range want {
					if got := tab.get(id); got != ss {
						t.Fatalf("step %d: get(%q) = %p, want %p", step, id, got, ss)
					}
				}
			}
			for step := range 20000 {
				id := fmt.Sprintf("id-%d", rng.IntN(ids))
				switch r := rng.IntN(10); {
				case r < 5 || len(want) == 0: // put, maybe replacing
					ss := &session{id: id}
					if old := want[id]; old != nil {
						gone = append(gone, old)
					}
					tab.put(ss)
					want[id] = ss
				case r < 9: // remove the holder, if any
					ss := want[id]
					if ss == nil {
						ss = &session{id: id}
					}
					if got := tab.remove(ss); got != (want[id] != nil) {
						t.Fatalf("step %d: remove(%q) = %v, want %v", step, id, got, want[id] != nil)
					}
					if want[id] != nil {
						delete(want, id)
						gone = append(gone, ss)
					}
				default: // remove a session no longer held
					if len(gone) > 0 {
						ss := gone[rng.IntN(len(gone))]
						if tab.remove(ss) {
							t.Fatalf("step %d: removed a session that was no longer held", step)
						}
					}
				}
				if step%97 == 0 || ids < 50 {
					check(step)
				}
			}
			check(-1)
			// Emptied one by one: the table shrinks, and what is left
			// is still found.
			for id, ss := range want {
				if !tab.remove(ss) {
					t.Fatalf("remove(%q) = false", id)
				}
				delete(want, id)
				if len(tab.slots) > sessionTableMin && tab.n*8 < len(tab.slots) {
					t.Fatalf("%d sessions left in %d slots", tab.n, len(tab.slots))
				}
				check(-2)
			}
			if tab.slots != nil {
				t.Errorf("an empty table kept %d slots", len(tab.slots))
			}
		})
	}
}
