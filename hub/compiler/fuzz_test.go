package compiler

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzCompile feeds arbitrary multi-document YAML through the loader, Compile and Project. Whatever decodes must
// compile without panicking, compile to the same bytes twice, and project to configs a spoke would accept.
func FuzzCompile(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.in.yaml")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := loadInputs(data)
		if err != nil {
			return // not a valid input document: the loader's job, not the compiler's
		}
		first, err := render(in)
		if err != nil {
			t.Fatalf("projection fails Validate: %v", err)
		}
		second, _ := render(in)
		if !bytes.Equal(first, second) {
			t.Fatalf("non-deterministic output for the same input")
		}
	})
}
