// Package arch holds tests of the codebase's shape rather than its behaviour.
package arch

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/fedgate/fedgate/"

// TestImportBoundaries enforces the dependency direction in ARCHITECTURE.md: hub/ and spoke/ never import each other,
// and apis/ imports neither.
func TestImportBoundaries(t *testing.T) {
	forbidden := map[string][]string{
		"hub":   {module + "spoke"},
		"spoke": {module + "hub"},
		"apis":  {module + "hub", module + "spoke", module + "cmd"},
	}
	checked := 0
	for dir, bad := range forbidden {
		root := filepath.Join("..", "..", dir)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			checked++
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				for _, b := range bad {
					if p == b || strings.HasPrefix(p, b+"/") {
						t.Errorf("%s imports %s: %s/ must not depend on it", path, p, dir)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if checked == 0 {
		t.Fatal("no Go files checked: is the test running from test/arch?")
	}
}
