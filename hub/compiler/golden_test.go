package compiler

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.out.yaml from the compiler's current output")

// TestGolden compiles every testdata/<case>.in.yaml and compares graph, statuses and projections with
// <case>.out.yaml. Conditions carry a zero LastTransitionTime, so the comparison is exact.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatal("no testdata/*.in.yaml")
	}
	wanted := map[string]bool{}
	for _, path := range inputs {
		name := strings.TrimSuffix(filepath.Base(path), ".in.yaml")
		outPath := filepath.Join("testdata", name+".out.yaml")
		wanted[outPath] = true
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			in, withSecrets, err := loadInputsSecrets(data)
			if err != nil {
				t.Fatal(err)
			}
			var secrets *Secrets
			if withSecrets {
				secrets = testSecrets
			}
			got, err := renderSecrets(in, secrets)
			if err != nil {
				t.Errorf("invalid projection: %v", err)
			}
			if *update {
				if err := os.WriteFile(outPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(outPath)
			if err != nil {
				t.Fatalf("%v (run go test ./hub/compiler -update)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s mismatch (-want +got):\n%s", outPath, diff)
			}
		})
	}
	// Stale goldens (an input was renamed or removed) are errors, or deleted under -update.
	outs, _ := filepath.Glob("testdata/*.out.yaml")
	for _, o := range outs {
		if wanted[o] {
			continue
		}
		if *update {
			_ = os.Remove(o)
			continue
		}
		t.Errorf("%s has no matching .in.yaml", o)
	}
}
