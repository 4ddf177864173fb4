// Package atomicfile writes files so that a crash at any point leaves either the old content or the new one, never a
// mix: the data goes to a temporary file in the same directory (created with the final mode, so a private key is never
// readable by others even for an instant), is synced, renamed over the target, and the directory is synced so the
// rename survives. Shared by the hub (CA files) and the spoke (credentials, config cache); it knows nothing of either.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write stores data at path with mode.
func Write(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		// Best effort: some file systems refuse fsync on directories; the file itself is already durable.
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
