package store

import (
	"encoding/json"
	"testing"
	"time"
)

func TestStampMetadata(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	meta := func(b []byte) map[string]any {
		var o map[string]any
		if err := json.Unmarshal(b, &o); err != nil {
			t.Fatal(err)
		}
		return o["metadata"].(map[string]any)
	}
	// Client-supplied bookkeeping is ignored on create.
	v1, err := stampMetadata(nil, []byte(`{"kind":"HTTPRoute","metadata":{"name":"r","generation":7,"uid":"forged","creationTimestamp":"2000-01-01T00:00:00Z","resourceVersion":"9"},"spec":{"a":1},"status":{"x":1}}`), t0)
	if err != nil {
		t.Fatal(err)
	}
	m1 := meta(v1)
	if m1["generation"] != float64(1) || m1["uid"] == "forged" || m1["creationTimestamp"] != "2026-01-02T03:04:05Z" || m1["resourceVersion"] != nil {
		t.Fatalf("create: %s", v1)
	}
	var o map[string]any
	_ = json.Unmarshal(v1, &o)
	if o["status"] != nil {
		t.Fatalf("status stored: %s", v1)
	}
	// A label change keeps the generation; a spec change bumps it; uid and creationTimestamp never move.
	v2, _ := stampMetadata(v1, []byte(`{"kind":"HTTPRoute","metadata":{"name":"r","labels":{"a":"b"}},"spec":{"a":1}}`), t0.Add(time.Hour))
	v3, _ := stampMetadata(v2, []byte(`{"kind":"HTTPRoute","metadata":{"name":"r","labels":{"a":"b"}},"spec":{"a":2}}`), t0.Add(2*time.Hour))
	m2, m3 := meta(v2), meta(v3)
	if m2["generation"] != float64(1) || m3["generation"] != float64(2) {
		t.Fatalf("generations %v, %v; want 1, 2", m2["generation"], m3["generation"])
	}
	if m3["uid"] != m1["uid"] || m3["creationTimestamp"] != m1["creationTimestamp"] {
		t.Fatalf("identity moved: %v → %v", m1, m3)
	}
	// Re-applying the same object yields the same bytes (so the store reports "unchanged").
	v4, _ := stampMetadata(v3, []byte(`{"spec":{"a":2},"metadata":{"labels":{"a":"b"},"name":"r"},"kind":"HTTPRoute"}`), t0.Add(3*time.Hour))
	if string(v4) != string(v3) {
		t.Fatalf("re-apply changed the stored bytes:\n%s\n%s", v3, v4)
	}
}
