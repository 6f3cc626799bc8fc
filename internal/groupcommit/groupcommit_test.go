package groupcommit_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/internal/groupcommit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// counter commits groups by handing out consecutive numbers, as a broker
// hands out offsets, and records the groups it saw.
type counter struct {
	mu     sync.Mutex
	next   int
	groups [][]int
	gate   chan struct{} // if set, the first commit waits on it
}

func (c *counter) commit(group []int) ([]int, error) {
	c.mu.Lock()
	gate := c.gate
	c.gate = nil
	c.mu.Unlock()
	if gate != nil {
		<-gate
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.groups = append(c.groups, append([]int(nil), group...))
	rs := make([]int, len(group))
	for i := range group {
		c.next++
		rs[i] = c.next
	}
	return rs, nil
}

func all(pending []int) int { return len(pending) }

func TestConcurrentCallersGetDistinctConsecutiveResults(t *testing.T) {
	t.Parallel()
	const callers, each = 16, 50
	c := &counter{}
	var g groupcommit.Group[int, int]
	var mu sync.Mutex
	seen := make(map[int]bool)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				r, err := g.Do(context.Background(), i*each+j, all, c.commit)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[r] {
					t.Errorf("result %d given twice", r)
				}
				seen[r] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != callers*each {
		t.Fatalf("%d distinct results, want %d", len(seen), callers*each)
	}
	for r := 1; r <= callers*each; r++ {
		if !seen[r] {
			t.Fatalf("result %d never given: a gap", r)
		}
	}
	n := 0
	for _, grp := range c.groups {
		n += len(grp)
	}
	if n != callers*each {
		t.Fatalf("%d items committed, want %d", n, callers*each)
	}
}

// startQueued calls Do with each of vs, each in its own goroutine, and
// sends (item, result) on the channel returned.
func startQueued(t *testing.T, g *groupcommit.Group[int, int], c *counter, vs []int) (results chan [2]int) {
	t.Helper()
	results = make(chan [2]int, len(vs))
	for _, v := range vs {
		go func() {
			r, err := g.Do(context.Background(), v, all, c.commit)
			if err != nil {
				r = -1
			}
			results <- [2]int{v, r}
		}()
	}
	return results
}

func TestQueuedCallersAreCommittedTogether(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	c := &counter{gate: gate}
	var g groupcommit.Group[int, int]
	first := make(chan int, 1)
	go func() {
		r, _ := g.Do(context.Background(), 0, all, c.commit)
		first <- r
	}()
	// The first caller leads and blocks in its commit; wait until it has
	// taken the gate, then queue five more.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		taken := c.gate == nil
		c.mu.Unlock()
		if taken {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first commit never started")
		}
		time.Sleep(time.Millisecond)
	}
	results := startQueued(t, &g, c, []int{1, 2, 3, 4, 5})
	for g.Queued() < 5 {
		if time.Now().After(deadline) {
			t.Fatal("the five callers never queued")
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	if r := <-first; r != 1 {
		t.Fatalf("first caller got %d, want 1", r)
	}
	got := make(map[int]int)
	for range 5 {
		x := <-results
		got[x[0]] = x[1]
	}
	if len(c.groups) != 2 || len(c.groups[1]) != 5 {
		t.Fatalf("groups %v: want [0] then the five queued together", c.groups)
	}
	// Results follow commit order: within a group, queue order.
	off := 1
	for _, grp := range c.groups {
		for _, v := range grp {
			if got[v] != off && v != 0 {
				t.Fatalf("item %d got %d, want %d (groups %v)", v, got[v], off, c.groups)
			}
			off++
		}
	}
}

func TestErrorReachesEveryItemOfTheGroup(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	var g groupcommit.Group[int, int]
	gate := make(chan struct{})
	var once sync.Once
	calls := 0
	var mu sync.Mutex
	commit := func(group []int) ([]int, error) {
		once.Do(func() { <-gate })
		mu.Lock()
		calls++
		mu.Unlock()
		return nil, boom
	}
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			_, err := g.Do(context.Background(), i, all, commit)
			errs <- err
		}()
	}
	close(gate)
	for range 4 {
		if err := <-errs; !errors.Is(err, boom) {
			t.Fatalf("got %v, want boom", err)
		}
	}
}

func TestTakeBoundsTheGroup(t *testing.T) {
	t.Parallel()
	c := &counter{}
	var g groupcommit.Group[int, int]
	two := func(p []int) int { return min(len(p), 2) }
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := g.Do(context.Background(), i, two, c.commit); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, grp := range c.groups {
		if len(grp) > 2 {
			t.Fatalf("a group of %d, Take allows 2", len(grp))
		}
	}
}

func TestCanceledWhileQueuedIsNotCommitted(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	c := &counter{gate: gate}
	var g groupcommit.Group[int, int]
	first := make(chan error, 1)
	go func() {
		_, err := g.Do(context.Background(), 0, all, c.commit)
		first <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		taken := c.gate == nil
		c.mu.Unlock()
		if taken {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first commit never started")
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.Do(ctx, 7, all, c.commit); !errors.Is(err, context.Canceled) || !errors.Is(err, groupcommit.ErrNotCommitted) {
		t.Fatalf("canceled queued call: %v, want context.Canceled and ErrNotCommitted", err)
	}
	close(gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// The group is idle again: a new call leads at once.
	if r, err := g.Do(context.Background(), 8, all, c.commit); err != nil || r != 2 {
		t.Fatalf("after the cancel: %d, %v; want 2", r, err)
	}
	for _, grp := range c.groups {
		for _, v := range grp {
			if v == 7 {
				t.Fatalf("the canceled item was committed: %v", c.groups)
			}
		}
	}
}

func TestKeyedForgetsIdleKeys(t *testing.T) {
	t.Parallel()
	k := groupcommit.NewKeyed[int, int](2)
	c := &counter{}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []string{"a", "b"}[i%2]
			if _, err := k.Do(context.Background(), key, i, all, c.commit); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := k.Len(); n != 0 {
		t.Fatalf("%d keys held after every call returned", n)
	}
}

// TestConcurrentGroups: with Concurrent 2, two groups are committed at
// once, never three, and every item gets its result.
func TestConcurrentGroups(t *testing.T) {
	t.Parallel()
	g := groupcommit.Group[int, int]{Concurrent: 2}
	var mu sync.Mutex
	in, most, total := 0, 0, 0
	release := make(chan struct{})
	commit := func(group []int) ([]int, error) {
		mu.Lock()
		in++
		most = max(most, in)
		mu.Unlock()
		<-release
		mu.Lock()
		in--
		total += len(group)
		mu.Unlock()
		return make([]int, len(group)), nil
	}
	const callers = 12
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := g.Do(context.Background(), i, all, commit); err != nil {
				t.Error(err)
			}
		}()
	}
	// Two leaders block in their commits; the other ten queue.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := in
		mu.Unlock()
		if n == 2 && g.Queued() == callers-2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d commits running, %d queued; want 2 and %d", n, g.Queued(), callers-2)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if most != 2 || total != callers {
		t.Fatalf("at most %d commits at once (want 2), %d items committed (want %d)", most, total, callers)
	}
}

// BenchmarkKeyedDo measures the group commit's own cost per item: 32
// callers on one key, a commit that takes 20 µs (a broker round trip
// made short), as the API's publish requests of a hot channel call it.
func BenchmarkKeyedDo(b *testing.B) {
	for _, concurrent := range []int{1, 2} {
		b.Run(map[int]string{1: "one-in-flight", 2: "two-in-flight"}[concurrent], func(b *testing.B) {
			k := groupcommit.NewKeyed[int, int](concurrent)
			var groups, items atomic.Int64
			commit := func(group []int) ([]int, error) {
				time.Sleep(20 * time.Microsecond)
				groups.Add(1)
				items.Add(int64(len(group)))
				return group, nil
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.SetParallelism(16) // 32 callers on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := k.Do(ctx, "hot", 1, all, commit); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(items.Load())/float64(groups.Load()), "items/group")
		})
	}
}

// TestGrowTakesWhatQueued: a commit that calls grow (as a broker's append
// that found its place taken and tries again) commits the items queued
// meanwhile with its own, as far as Take allows; their callers, one of
// them with its context ended once taken, get their results from that
// commit, and what Take left out goes in the next group.
func TestGrowTakesWhatQueued(t *testing.T) {
	t.Parallel()
	var g groupcommit.Group[int, int]
	upTo3 := func(pending []int) int { return min(len(pending), 3) }
	started, release := make(chan struct{}), make(chan struct{})
	var grown []int
	var groups [][]int
	var mu sync.Mutex
	next := 0
	commit := func(group []int, grow groupcommit.Grow[int]) ([]int, error) {
		mu.Lock()
		first := len(groups) == 0
		mu.Unlock()
		if first {
			close(started)
			<-release
			more := grow()
			mu.Lock()
			grown = append([]int(nil), more...)
			mu.Unlock()
			group = append(group, more...)
			if again := grow(); len(again) != 0 {
				t.Errorf("grew again by %v past Take's limit", again)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		groups = append(groups, append([]int(nil), group...))
		rs := make([]int, len(group))
		for i := range rs {
			next++
			rs[i] = next
		}
		return rs, nil
	}
	results := make(map[int]int)
	var wg sync.WaitGroup
	do := func(ctx context.Context, v int) {
		defer wg.Done()
		r, err := g.DoGrowing(ctx, v, upTo3, commit)
		if err != nil {
			t.Errorf("item %d: %v", v, err)
			return
		}
		mu.Lock()
		results[v] = r
		mu.Unlock()
	}
	wg.Add(1)
	go do(context.Background(), 0)
	<-started
	cctx, cancel := context.WithCancel(context.Background())
	for v := 1; v <= 4; v++ {
		wg.Add(1)
		if v == 1 {
			go do(cctx, v)
		} else {
			go do(context.Background(), v)
		}
		for g.Queued() < v {
			time.Sleep(time.Millisecond)
		}
	}
	close(release)
	for {
		mu.Lock()
		n := len(grown)
		mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel() // item 1 is in the group now: its caller still gets its result
	wg.Wait()
	if len(grown) != 2 || grown[0] != 1 || grown[1] != 2 {
		t.Fatalf("grow took %v, want [1 2] (Take allows 3 in all)", grown)
	}
	if len(groups) != 2 || len(groups[0]) != 3 || len(groups[1]) != 2 {
		t.Fatalf("groups %v, want [0 1 2] then [3 4]", groups)
	}
	for v, want := range map[int]int{0: 1, 1: 2, 2: 3, 3: 4, 4: 5} {
		if results[v] != want {
			t.Errorf("item %d got %d, want %d", v, results[v], want)
		}
	}
}
