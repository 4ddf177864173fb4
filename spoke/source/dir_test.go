package source

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func service(name, port string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %s
  namespace: shop
spec:
  ports:
  - port: %s
`, name, port)
}

const gateway = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
spec:
  gatewayClassName: fedgate
  listeners:
  - name: http
    port: 80
    protocol: HTTP
`

// writeAtomic replaces a file the way careful tools do, so a scan never sees it half-written.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startDir runs a Dir source and returns the channel its snapshots arrive on.
func startDir(t *testing.T, dir string) <-chan Snapshot {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan Snapshot, 16)
	done := make(chan error, 1)
	d := &Dir{Path: dir, Debounce: 20 * time.Millisecond, PollInterval: time.Hour}
	go func() { done <- d.Run(ctx, func(s Snapshot) { ch <- s }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return ch
}

func next(t *testing.T, ch <-chan Snapshot) Snapshot {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot within 10s")
		return Snapshot{}
	}
}

// ids lists a snapshot's objects as "Kind/ns/name" in snapshot order.
func ids(s Snapshot) string {
	var out []string
	for _, o := range s.Objects {
		out = append(out, ObjectID(o))
	}
	return strings.Join(out, ",")
}

func find(t *testing.T, s Snapshot, id string) string {
	t.Helper()
	for _, o := range s.Objects {
		if ObjectID(o) == id {
			return string(o.Json)
		}
	}
	t.Fatalf("snapshot %s lacks %s", ids(s), id)
	return ""
}

func TestDirEmitsOnCreateModifyDelete(t *testing.T) {
	dir := t.TempDir()
	writeAtomic(t, filepath.Join(dir, "svc.yaml"), service("cart", "8080"))
	// Skipped: not a manifest extension, and a hidden directory (a mounted ConfigMap's "..data" would duplicate).
	writeAtomic(t, filepath.Join(dir, "README.md"), "not yaml: [")
	writeAtomic(t, filepath.Join(dir, "..data", "svc.yaml"), service("hidden", "1"))

	ch := startDir(t, dir)
	if got, want := ids(next(t, ch)), "Service/shop/cart"; got != want {
		t.Fatalf("initial snapshot = %s, want %s", got, want)
	}

	// Create, in a new subdirectory: picked up recursively, sorted by kind order (Gateway before Service).
	writeAtomic(t, filepath.Join(dir, "gw", "edge.yml"), gateway)
	s := next(t, ch)
	if got, want := ids(s), "Gateway/default/edge,Service/shop/cart"; got != want {
		t.Fatalf("after create = %s, want %s", got, want)
	}

	// Rewriting identical content changes nothing and must not emit; the real change after it must be the next one.
	writeAtomic(t, filepath.Join(dir, "gw", "edge.yml"), gateway)
	writeAtomic(t, filepath.Join(dir, "svc.yaml"), service("cart", "9090"))
	s = next(t, ch)
	if js := find(t, s, "Service/shop/cart"); !strings.Contains(js, "9090") {
		t.Fatalf("after modify, cart = %s, want port 9090", js)
	}
	if got, want := ids(s), "Gateway/default/edge,Service/shop/cart"; got != want {
		t.Fatalf("after modify = %s, want %s", got, want)
	}

	if err := os.Remove(filepath.Join(dir, "svc.yaml")); err != nil {
		t.Fatal(err)
	}
	if got, want := ids(next(t, ch)), "Gateway/default/edge"; got != want {
		t.Fatalf("after delete = %s, want %s", got, want)
	}

	if err := os.RemoveAll(filepath.Join(dir, "gw")); err != nil {
		t.Fatal(err)
	}
	if got := ids(next(t, ch)); got != "" {
		t.Fatalf("after removing the subdirectory = %s, want empty", got)
	}
}

func TestDirKeepsLastGoodObjectsOfBrokenFile(t *testing.T) {
	dir := t.TempDir()
	writeAtomic(t, filepath.Join(dir, "svc.yaml"), service("cart", "8080")+"---\n"+service("pay", "8080"))
	writeAtomic(t, filepath.Join(dir, "other.yaml"), service("web", "80"))
	ch := startDir(t, dir)
	if got, want := ids(next(t, ch)), "Service/shop/cart,Service/shop/pay,Service/shop/web"; got != want {
		t.Fatalf("initial = %s, want %s", got, want)
	}

	// Broken YAML, then an unsupported kind: neither changes the snapshot, so the next one is the edit to other.yaml
	// and it still carries cart and pay.
	writeAtomic(t, filepath.Join(dir, "svc.yaml"), "kind: Service\nmetadata: [unclosed\n")
	writeAtomic(t, filepath.Join(dir, "svc.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
	writeAtomic(t, filepath.Join(dir, "other.yaml"), service("web", "81"))
	s := next(t, ch)
	if got, want := ids(s), "Service/shop/cart,Service/shop/pay,Service/shop/web"; got != want {
		t.Fatalf("with broken svc.yaml = %s, want %s", got, want)
	}
	if js := find(t, s, "Service/shop/web"); !strings.Contains(js, "81") {
		t.Fatalf("web = %s, want port 81", js)
	}

	// Fixing the file replaces its objects.
	writeAtomic(t, filepath.Join(dir, "svc.yaml"), service("cart", "8080"))
	if got, want := ids(next(t, ch)), "Service/shop/cart,Service/shop/web"; got != want {
		t.Fatalf("after fix = %s, want %s", got, want)
	}

	// A file broken from the start contributes nothing but stops nothing.
	writeAtomic(t, filepath.Join(dir, "new.yaml"), "{{{")
	writeAtomic(t, filepath.Join(dir, "gw.yaml"), gateway)
	if got, want := ids(next(t, ch)), "Gateway/default/edge,Service/shop/cart,Service/shop/web"; got != want {
		t.Fatalf("after new broken file = %s, want %s", got, want)
	}
}

func TestDirDuplicateObjectFirstFileWins(t *testing.T) {
	dir := t.TempDir()
	writeAtomic(t, filepath.Join(dir, "a.yaml"), service("cart", "1111"))
	writeAtomic(t, filepath.Join(dir, "b.yaml"), service("cart", "2222"))
	s := next(t, startDir(t, dir))
	if len(s.Objects) != 1 || !strings.Contains(string(s.Objects[0].Json), "1111") {
		t.Fatalf("snapshot = %s %v, want only a.yaml's cart", ids(s), s.Objects)
	}
}

func TestDirRejectsMissingDirectory(t *testing.T) {
	d := &Dir{Path: filepath.Join(t.TempDir(), "nope")}
	err := d.Run(context.Background(), func(Snapshot) { t.Error("emitted from a missing directory") })
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("Run = %v, want an error naming the directory", err)
	}
}
