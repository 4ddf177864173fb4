package compiler

import (
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

// TestDeterministic compiles every golden input with its object lists shuffled, and checks the output does not
// depend on input order, and that Compile leaves its inputs untouched.
func TestDeterministic(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/*.in.yaml")
	rng := rand.New(rand.NewSource(7))
	for _, path := range inputs {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			in, err := loadInputs(data)
			if err != nil {
				t.Fatal(err)
			}
			before, err := yaml.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			want, err := render(in)
			if err != nil {
				t.Fatal(err)
			}
			after, _ := yaml.Marshal(in)
			if diff := cmp.Diff(string(before), string(after)); diff != "" {
				t.Fatalf("Compile mutated its inputs (-before +after):\n%s", diff)
			}
			for round := 0; round < 5; round++ {
				shuffleResources(rng, &in.Hub)
				for _, ci := range in.Clusters {
					shuffleResources(rng, &ci.Resources)
				}
				got, err := render(in)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(string(want), string(got)); diff != "" {
					t.Fatalf("round %d: output depends on input order (-want +got):\n%s", round, diff)
				}
			}
		})
	}
}

// shuffleResources shuffles every object list of r in place.
func shuffleResources(rng *rand.Rand, r *Resources) {
	v := reflect.ValueOf(r).Elem()
	for i := 0; i < v.NumField(); i++ {
		s := v.Field(i)
		if s.Kind() != reflect.Slice {
			continue
		}
		swap := reflect.Swapper(s.Interface())
		rng.Shuffle(s.Len(), swap)
	}
}
