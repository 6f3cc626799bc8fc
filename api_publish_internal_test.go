package herald

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
)

// publishBodies are publish request bodies of every kind: those
// decodePublish takes, and those it leaves to encoding/json.
var publishBodies = []string{
	`{"channel":"room:1","data":{"seq":1}}`,
	` { "channel" : "a" , "data" : [1, {"x": "y}"}, "\"q\""] , "idempotency_key":"k-1" } `,
	`{"channel":"a","b64data":"AAEC"}`,
	`{"data":"text","channel":"a"}`,
	`{"channel":"a","data":12.5e3}`,
	`{"channel":"a","data":true}`,
	`{}`,
	`{"channel":"a","data":null}`,
	`{"channel":"a","data":{"seq":1},"tags":{"k":"v"}}`,
	`{"Channel":"a","data":1}`,
	`{"channel":"a\u0062","data":1}`,
	`{"channel":"é","data":1}`,
	`{"channel":"a","channel":"b","data":1}`,
	`{"channel":"a","data":1}trailing`,
	`{"channel":"a","data":1} {"channel":"b"}`,
	`{"channel":"a","data":{"seq":1}`,
	`{"channel":"a","data":{"seq":}}`,
	`{"channel":"a","data":01}`,
	`{"channel":"a","data":1,}`,
	`{"channel":"a","data":[1,2}`,
	`{"channel":1,"data":1}`,
	`{"channel":"a","data":"x\`,
	`[]`,
	`"x"`,
	``,
	`{"channel":"a","unknown":{"x":1},"data":1}`,
}

// decodeJSON is what the server did before decodePublish: the first JSON
// value of the body, with encoding/json.
func decodeJSON(b []byte) (apiPublish, error) {
	var p apiPublish
	err := json.NewDecoder(bytes.NewReader(b)).Decode(&p)
	return p, err
}

// checkDecodePublish fails if decodePublish takes b and gives anything but
// what encoding/json gives.
func checkDecodePublish(t *testing.T, b []byte) bool {
	t.Helper()
	var got apiPublish
	if !decodePublish(b, &got) {
		return false
	}
	want, err := decodeJSON(b)
	if err != nil {
		t.Fatalf("%q: decodePublish took a body encoding/json refuses: %v", b, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: decodePublish gave %+v (data %q), encoding/json %+v (data %q)", b, got, got.Data, want, want.Data)
	}
	return true
}

func TestDecodePublish(t *testing.T) {
	t.Parallel()
	took := 0
	for _, s := range publishBodies {
		if checkDecodePublish(t, []byte(s)) {
			took++
		}
	}
	// The common forms must take the fast path: the first five bodies
	// (and {}) are of the form decodePublish takes.
	for _, s := range append(publishBodies[:6], `{}`) {
		var p apiPublish
		if !decodePublish([]byte(s), &p) {
			t.Errorf("%q: not taken", s)
		}
	}
	if took == len(publishBodies) {
		t.Errorf("every body taken: the fallback cases are not exercised")
	}
}

// FuzzDecodePublish checks the publish body decoder against encoding/json:
// a body it takes decodes to what encoding/json gives.
func FuzzDecodePublish(f *testing.F) {
	for _, s := range publishBodies {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecodePublish(t, b)
	})
}

// TestServeAPIPublishDecode runs every body through the API handler's
// decoding (the fast path and the fallback on what it read) and compares
// the result and error with encoding/json's.
func TestServeAPIPublishDecode(t *testing.T) {
	t.Parallel()
	for _, s := range publishBodies {
		for _, chunked := range []bool{false, true} {
			r := httptest.NewRequest("POST", "/api/publish", strings.NewReader(s))
			if chunked {
				r.ContentLength = -1 // length unknown: streamed through encoding/json
			}
			var got apiPublish
			err := decodeAPI(httptest.NewRecorder(), r, &got)
			want, werr := decodeJSON([]byte(s))
			if (err == nil) != (werr == nil) || (err != nil && err.Error() != werr.Error()) {
				t.Fatalf("%q: error %v, want %v", s, err, werr)
			}
			if err == nil && !reflect.DeepEqual(got, want) {
				t.Fatalf("%q: got %+v, want %+v", s, got, want)
			}
		}
	}
}

// writeResultCases are publish results, plain and with characters that
// encoding/json escapes.
var writeResultCases = []apiResult{
	{Epoch: "a1b2c3", Offset: 42},
	{Epoch: "x"},
	{Offset: 7},
	{},
	{Epoch: `q"<&>\` + "\n\u00e9\u2028", Offset: 1<<64 - 1},
}

func checkWriteResult(t *testing.T, res apiResult) {
	t.Helper()
	fast := httptest.NewRecorder()
	writeResult(fast, &res)
	slow := httptest.NewRecorder()
	writeJSON(slow, http.StatusOK, &res)
	if fast.Body.String() != slow.Body.String() {
		t.Fatalf("%+v: wrote %q, encoding/json %q", res, fast.Body, slow.Body)
	}
	if fast.Code != slow.Code || fast.Header().Get("Content-Type") != slow.Header().Get("Content-Type") {
		t.Fatalf("%+v: status %d %q, want %d %q", res, fast.Code, fast.Header().Get("Content-Type"), slow.Code, slow.Header().Get("Content-Type"))
	}
}

func TestWriteResult(t *testing.T) {
	t.Parallel()
	for _, res := range writeResultCases {
		checkWriteResult(t, res)
	}
}

// FuzzWriteResult checks the publish answer's encoder against
// encoding/json.
func FuzzWriteResult(f *testing.F) {
	for _, r := range writeResultCases {
		f.Add(r.Epoch, r.Offset)
	}
	f.Fuzz(func(t *testing.T, epoch string, offset uint64) {
		checkWriteResult(t, apiResult{Epoch: epoch, Offset: offset})
	})
}

// BenchmarkAPIPublish measures the API's publish handler on the memory
// broker, no subscriber: request decoding, the append, the answer.
func BenchmarkAPIPublish(b *testing.B) {
	s, err := New(Config{APIKeys: []string{"k"}, Namespaces: []Namespace{{HistorySize: 1000, HistoryTTL: 3600e9}}})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	}()
	h := s.Handler()
	body := []byte(`{"channel":"bench","data":{"seq":1,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}`)
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest("POST", "/api/publish", bytes.NewReader(body))
		r.Header.Set("Authorization", "apikey k")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatalf("HTTP %d: %s", w.Code, w.Body)
		}
	}
}

// BenchmarkDecodePublish compares the publish body decoder with
// encoding/json on a typical body.
func BenchmarkDecodePublish(b *testing.B) {
	body := []byte(`{"channel":"bench","data":{"seq":1,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}`)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var p apiPublish
			if !decodePublish(body, &p) {
				b.Fatal("not taken")
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeJSON(body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
