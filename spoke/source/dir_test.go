package source

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/resources"
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
	if got, want := ids(next(t, ch)), "Service/shop/cart,ServiceExport/shop/cart"; got != want {
		t.Fatalf("initial snapshot = %s, want %s", got, want)
	}

	// Create, in a new subdirectory: picked up recursively, sorted by kind order (Gateway before Service). Every
	// Service comes with its synthesized ServiceExport (a standalone spoke exports all its Services).
	writeAtomic(t, filepath.Join(dir, "gw", "edge.yml"), gateway)
	s := next(t, ch)
	if got, want := ids(s), "Gateway/default/edge,Service/shop/cart,ServiceExport/shop/cart"; got != want {
		t.Fatalf("after create = %s, want %s", got, want)
	}

	// Rewriting identical content changes nothing and must not emit; the real change after it must be the next one.
	writeAtomic(t, filepath.Join(dir, "gw", "edge.yml"), gateway)
	writeAtomic(t, filepath.Join(dir, "svc.yaml"), service("cart", "9090"))
	s = next(t, ch)
	if js := find(t, s, "Service/shop/cart"); !strings.Contains(js, "9090") {
		t.Fatalf("after modify, cart = %s, want port 9090", js)
	}
	if got, want := ids(s), "Gateway/default/edge,Service/shop/cart,ServiceExport/shop/cart"; got != want {
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
	if got, want := ids(next(t, ch)), "Service/shop/cart,Service/shop/pay,Service/shop/web,ServiceExport/shop/cart,ServiceExport/shop/pay,ServiceExport/shop/web"; got != want {
		t.Fatalf("initial = %s, want %s", got, want)
	}

	// Broken YAML, then an unsupported kind: neither changes the snapshot, so the next one is the edit to other.yaml
	// and it still carries cart and pay.
	writeAtomic(t, filepath.Join(dir, "svc.yaml"), "kind: Service\nmetadata: [unclosed\n")
	writeAtomic(t, filepath.Join(dir, "svc.yaml"), "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n")
	writeAtomic(t, filepath.Join(dir, "other.yaml"), service("web", "81"))
	s := next(t, ch)
	if got, want := ids(s), "Service/shop/cart,Service/shop/pay,Service/shop/web,ServiceExport/shop/cart,ServiceExport/shop/pay,ServiceExport/shop/web"; got != want {
		t.Fatalf("with broken svc.yaml = %s, want %s", got, want)
	}
	if js := find(t, s, "Service/shop/web"); !strings.Contains(js, "81") {
		t.Fatalf("web = %s, want port 81", js)
	}

	// Fixing the file replaces its objects.
	writeAtomic(t, filepath.Join(dir, "svc.yaml"), service("cart", "8080"))
	if got, want := ids(next(t, ch)), "Service/shop/cart,Service/shop/web,ServiceExport/shop/cart,ServiceExport/shop/web"; got != want {
		t.Fatalf("after fix = %s, want %s", got, want)
	}

	// A file broken from the start contributes nothing but stops nothing.
	writeAtomic(t, filepath.Join(dir, "new.yaml"), "{{{")
	writeAtomic(t, filepath.Join(dir, "gw.yaml"), gateway)
	if got, want := ids(next(t, ch)), "Gateway/default/edge,Service/shop/cart,Service/shop/web,ServiceExport/shop/cart,ServiceExport/shop/web"; got != want {
		t.Fatalf("after new broken file = %s, want %s", got, want)
	}
}

func TestDirDuplicateObjectFirstFileWins(t *testing.T) {
	dir := t.TempDir()
	writeAtomic(t, filepath.Join(dir, "a.yaml"), service("cart", "1111"))
	writeAtomic(t, filepath.Join(dir, "b.yaml"), service("cart", "2222"))
	s := next(t, startDir(t, dir))
	if got, want := ids(s), "Service/shop/cart,ServiceExport/shop/cart"; got != want || !strings.Contains(string(s.Objects[0].Json), "1111") {
		t.Fatalf("snapshot = %s %v, want only a.yaml's cart (and its export)", ids(s), s.Objects)
	}
}

func TestDirRejectsMissingDirectory(t *testing.T) {
	d := &Dir{Path: filepath.Join(t.TempDir(), "nope")}
	err := d.Run(context.Background(), func(Snapshot) { t.Error("emitted from a missing directory") })
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("Run = %v, want an error naming the directory", err)
	}
}

// TestDirSynthesizesServiceExports: a standalone spoke exports every Service (Dir stands in for an MCS controller),
// except one that has its own ServiceExport in the directory (kept as written) or opts out by annotation.
func TestDirSynthesizesServiceExports(t *testing.T) {
	dir := t.TempDir()
	writeAtomic(t, filepath.Join(dir, "svc.yaml"), `apiVersion: v1
kind: Service
metadata:
  name: cart
  namespace: shop
  creationTimestamp: "2024-01-02T03:04:05Z"
spec:
  ports:
  - port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: private
  namespace: shop
  annotations: {fedgate.io/export: "false"}
spec:
  ports:
  - port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: pay
  namespace: shop
spec:
  ports:
  - port: 80
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata:
  name: pay
  namespace: shop
  labels: {mine: "yes"}
`)
	ch := startDir(t, dir)
	s := next(t, ch)
	if got, want := ids(s), "Service/shop/cart,Service/shop/pay,Service/shop/private,ServiceExport/shop/cart,ServiceExport/shop/pay"; got != want {
		t.Fatalf("snapshot = %s, want %s", got, want)
	}
	cart := find(t, s, "ServiceExport/shop/cart")
	for _, want := range []string{`"apiVersion":"multicluster.x-k8s.io/v1alpha1"`, `"creationTimestamp":"2024-01-02T03:04:05Z"`} {
		if !strings.Contains(cart, want) {
			t.Errorf("synthesized export %s lacks %s", cart, want)
		}
	}
	if pay := find(t, s, "ServiceExport/shop/pay"); !strings.Contains(pay, `"mine":"yes"`) {
		t.Errorf("the directory's own export was replaced: %s", pay)
	}
	for _, o := range s.Objects {
		if _, err := resources.Typed(o); err != nil {
			t.Errorf("%s does not decode: %v", ObjectID(o), err)
		}
	}

	// Dropping the opt-out exports the Service; deleting a Service withdraws its synthesized export.
	writeAtomic(t, filepath.Join(dir, "svc.yaml"), service("private", "80"))
	if got, want := ids(next(t, ch)), "Service/shop/private,ServiceExport/shop/private"; got != want {
		t.Fatalf("after edit = %s, want %s", got, want)
	}
}

// A GRPCRoute written for v1alpha2 (v1's schema, served beside it by Gateway API v1.1's experimental channel) is
// reported as v1.
func TestDirStoresOlderVersionsAsServed(t *testing.T) {
	dir := t.TempDir()
	writeAtomic(t, filepath.Join(dir, "route.yaml"), "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: GRPCRoute\nmetadata: {name: echo, namespace: shop}\nspec: {}\n")
	s := next(t, startDir(t, dir))
	if len(s.Objects) != 1 || s.Objects[0].ApiVersion != "gateway.networking.k8s.io/v1" ||
		!strings.Contains(find(t, s, "GRPCRoute/shop/echo"), `"apiVersion":"gateway.networking.k8s.io/v1"`) {
		t.Fatalf("snapshot %v, want the GRPCRoute as gateway.networking.k8s.io/v1", s.Objects)
	}
}
