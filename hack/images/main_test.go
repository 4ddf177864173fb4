package main

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/fedgate/fedgate/deploy"
	"github.com/fedgate/fedgate/internal/version"
)

// TestSpokeImage builds the spoke's image as make images does (one binary keeps the test's cost down; the three
// share every line of it) and reads the tarball back as docker load would: both tags, the config, and the binary from
// the layer, which must run and print the version it was built with.
func TestSpokeImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the spoke binary")
	}
	if runtime.GOOS != "linux" {
		t.Skip("runs the image's linux binary")
	}
	const ver, rev = "v0.0.0-imagetest.1", "0123456789abcdef0123456789abcdef01234567"
	o := options{
		out: t.TempDir(), version: ver, revision: rev, source: "https://example.test/fedgate",
		created:   time.Unix(1_700_000_000, 0).UTC(),
		platforms: []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}},
		names:     []string{"spoke"},
	}
	written, err := build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(o.out, "spoke.tar")
	if !slices.Equal(written, []string{path}) {
		t.Fatalf("written %v, want only %s", written, path)
	}

	var img v1.Image
	for _, ref := range []string{"fedgate/spoke:" + ver, "fedgate/spoke:" + version.DevTag} {
		tag, err := name.NewTag(ref)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = tarball.ImageFromPath(path, &tag); err != nil {
			t.Fatalf("%s in %s: %v", ref, path, err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH || !cf.Created.Equal(o.created) {
		t.Errorf("config: os %q arch %q created %v", cf.OS, cf.Architecture, cf.Created)
	}
	if c := cf.Config; !slices.Equal(c.Entrypoint, []string{"/spoke"}) || len(c.Cmd) != 0 || c.User != "65532:65532" {
		t.Errorf("config: entrypoint %q cmd %q user %q; want [/spoke], none, 65532:65532", c.Entrypoint, c.Cmd, c.User)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.version":  ver,
		"org.opencontainers.image.revision": rev,
		"org.opencontainers.image.source":   "https://example.test/fedgate",
	} {
		if got := cf.Config.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}

	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v; want one", len(layers), err)
	}
	bin := filepath.Join(t.TempDir(), "spoke")
	files := extract(t, layers[0], "spoke", bin)
	if !slices.Equal(files, []string{"tmp/", "spoke"}) {
		t.Errorf("layer holds %q, want tmp/ and the binary", files)
	}
	got, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("spoke --version from the image: %v\n%s", err, got)
	}
	want := "spoke " + ver + " (revision " + rev + ", " + runtime.Version() + " linux/" + runtime.GOARCH + ")\n"
	if string(got) != want {
		t.Fatalf("spoke --version from the image printed %q, want %q", got, want)
	}
}

// extract copies the layer's regular file name to dst (executable) and returns the layer's entries, checking that
// everything in it is root's and that the binary is executable by the image's user.
func extract(t *testing.T, l v1.Layer, name, dst string) []string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var entries []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, h.Name)
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want root's", h.Name, h.Uid, h.Gid)
		}
		if h.Name != name {
			continue
		}
		if h.Typeflag != tar.TypeReg || h.Mode != 0o755 {
			t.Errorf("%s: type %c mode %o, want a regular file 0755", h.Name, h.Typeflag, h.Mode)
		}
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return entries
}

// The images the deploy bases run are ones make images tags, whatever the version: fedgate/NAME:dev.
func TestDeployBasesRunBuiltImages(t *testing.T) {
	for _, base := range []string{"hub", "spoke"} {
		refs, err := tags(base, "v9.9.9")
		if err != nil {
			t.Fatal(err)
		}
		objs, err := deploy.Render(deploy.FS, base)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, o := range objs {
			if o.GetKind() != "Deployment" {
				continue
			}
			containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			for _, c := range containers {
				image, _, _ := unstructured.NestedString(c.(map[string]any), "image")
				found++
				if !slices.ContainsFunc(refs, func(r name.Tag) bool { return r.String() == image }) {
					t.Errorf("deploy/%s: %s runs image %q, which make images does not make (it makes %v)", base, o.GetName(), image, refs)
				}
			}
		}
		if found == 0 {
			t.Errorf("deploy/%s: no Deployment container", base)
		}
	}
}

// The Dockerfiles build what hack/images builds: a static binary, stamped, run as 65532 from /NAME.
func TestDockerfilesMatchTheImages(t *testing.T) {
	for _, n := range []string{"hub", "spoke", "hubctl"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "images", n+".Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/" + n + "\n", modulePath + "/internal/version.version=${VERSION}",
			"\nUSER " + User + "\n", "\nENTRYPOINT [\"/" + n + "\"]\n"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("deploy/images/%s.Dockerfile lacks %q", n, want)
			}
		}
	}
}

func TestFlags(t *testing.T) {
	for _, bad := range []string{"linux", "linux/", ",linux/amd64"} {
		if err := run([]string{"-out", t.TempDir(), "-platforms", bad}); err == nil || !strings.Contains(err.Error(), "-platforms") {
			t.Errorf("-platforms %q: %v", bad, err)
		}
	}
}

// With several platforms, NAME.oci is an OCI layout whose index holds one image per platform, named by the version tag.
func TestMultiPlatformLayout(t *testing.T) {
	platforms := []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}
	var imgs []v1.Image
	for range platforms {
		img, err := random.Image(64, 1)
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	refs, err := tags("spoke", "v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "spoke.oci")
	if err := writeLayout(path, refs[0], platforms, imgs); err != nil {
		t.Fatal(err)
	}
	top, err := layout.ImageIndexFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	outer, err := top.IndexManifest()
	if err != nil || len(outer.Manifests) != 1 || outer.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v1.2.3" {
		t.Fatalf("layout index: %+v, %v; want one index named v1.2.3", outer, err)
	}
	idx, err := top.ImageIndex(outer.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || im.MediaType != types.OCIImageIndex || len(im.Manifests) != len(platforms) {
		t.Fatalf("image index: %+v, %v", im, err)
	}
	for i, d := range im.Manifests {
		want, _ := imgs[i].Digest()
		if d.Platform == nil || d.Platform.Architecture != platforms[i].Architecture || d.Digest != want {
			t.Errorf("manifest %d: %+v, want %s for %s", i, d, want, platforms[i])
		}
	}
}
