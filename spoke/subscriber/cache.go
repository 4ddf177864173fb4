package subscriber

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/internal/atomicfile"
)

// CacheFile is the name of the cache file inside the cache directory.
const CacheFile = "spokeconfig.cache"

const cacheFormat = "fedgate-spoke-cache/v1"

// CacheEntry is the last config a spoke applied successfully.
//
// On disk it is one JSON header line ({"format","cluster","revision","hash"}) followed by the config JSON exactly as
// the hub sent it. Keeping the body byte-exact (rather than nesting it in the header, which re-encoding would
// compact and escape) lets the hash be checked on load, so a truncated or hand-edited cache is refused instead of
// served. `tail -n +2 FILE | jq` shows the config.
type CacheEntry struct {
	Cluster  string
	Revision int64
	Hash     string
	Config   []byte
}

type cacheHeader struct {
	Format   string `json:"format"`
	Cluster  string `json:"cluster"`
	Revision int64  `json:"revision"`
	Hash     string `json:"hash"`
}

// WriteCache stores e in dir atomically: the entry goes to a temporary file in the same directory, which is synced and
// then renamed over the previous cache, and the directory is synced so the rename survives a crash. A crash at any
// point leaves either the old cache or the new one, never a mix.
func WriteCache(dir string, e CacheEntry) (err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	hdr, err := json.Marshal(cacheHeader{Format: cacheFormat, Cluster: e.Cluster, Revision: e.Revision, Hash: e.Hash})
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	data := make([]byte, 0, len(hdr)+1+len(e.Config))
	data = append(append(append(data, hdr...), '\n'), e.Config...)
	if err := atomicfile.Write(filepath.Join(dir, CacheFile), data, 0o600); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	return nil
}

// ReadCache loads the cache from dir. No cache file is (nil, nil); a damaged one is an error.
func ReadCache(dir string) (*CacheEntry, error) {
	path := filepath.Join(dir, CacheFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	line, body, ok := bytes.Cut(b, []byte("\n"))
	if !ok {
		return nil, fmt.Errorf("cache %s: no header line", path)
	}
	var h cacheHeader
	if err := json.Unmarshal(line, &h); err != nil {
		return nil, fmt.Errorf("cache %s: header: %w", path, err)
	}
	if h.Format != cacheFormat {
		return nil, fmt.Errorf("cache %s: format %q, want %q", path, h.Format, cacheFormat)
	}
	if got := spokeconfig.Hash(body); got != h.Hash {
		return nil, fmt.Errorf("cache %s: config hash %s does not match header hash %s (truncated or edited)", path, got, h.Hash)
	}
	return &CacheEntry{Cluster: h.Cluster, Revision: h.Revision, Hash: h.Hash, Config: body}, nil
}
