// Package testio helps the binaries' tests run a main function in-process and read what it printed.
package testio

import (
	"os"
	"path/filepath"
	"testing"
)

// Capture runs f with os.Stdout and os.Stderr sent to files and returns what each received.
func Capture(t testing.TB, f func()) (stdout, stderr string) {
	t.Helper()
	dir := t.TempDir()
	files := [2]*os.File{}
	for i, n := range []string{"stdout", "stderr"} {
		var err error
		if files[i], err = os.Create(filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = files[0], files[1]
	defer func() { os.Stdout, os.Stderr = oldOut, oldErr }()
	f()
	var out [2]string
	for i, fl := range files {
		_ = fl.Close()
		b, err := os.ReadFile(fl.Name())
		if err != nil {
			t.Fatal(err)
		}
		out[i] = string(b)
	}
	return out[0], out[1]
}
