// Command images builds fedgate's container images without a Docker daemon (make images): for each binary — hub,
// spoke, hubctl by default — a static build (CGO_ENABLED=0, -trimpath, version stamped as in make build) in one layer
// on an empty base, run as the numeric user 65532 with the binary as entrypoint. The images are what the Dockerfiles
// in deploy/images build with a daemon.
//
// Each image is written to OUT/NAME.tar, a tarball `docker load` and `kind load image-archive` read, tagged
// fedgate/NAME:VERSION and fedgate/NAME:dev (the tag the deploy bases reference). With several -platforms the tarball
// holds the first one, and OUT/NAME.oci is an OCI image layout with an index of all of them, for pushing (crane push
// --index, skopeo copy oci:).
//
//	go run ./hack/images [-out bin/images] [-version V] [-revision R] [-platforms linux/amd64,linux/arm64] [NAME...]
package main

import (
	"archive/tar"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/fedgate/fedgate/internal/version"
)

// User is the numeric user (and group) the images run as: distroless's "nonroot". Numeric, so that Kubernetes'
// runAsNonRoot can check it without an /etc/passwd in the image.
const User = "65532:65532"

const modulePath = "github.com/fedgate/fedgate"

// options of one run.
type options struct {
	out       string
	version   string
	revision  string
	source    string
	created   time.Time
	platforms []v1.Platform
	names     []string
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	out := fs.String("out", "bin/images", "directory the image tarballs (and OCI layouts) are written to")
	ver := fs.String("version", "", "version stamped into the binaries and tagging the images (default: git describe --tags --always --dirty)")
	rev := fs.String("revision", "", "commit stamped into the binaries and labels (default: git rev-parse HEAD)")
	platforms := fs.String("platforms", "linux/amd64", "comma-separated OS/ARCH[/VARIANT] to build; the first goes into the docker tarball")
	source := fs.String("source", "https://github.com/fedgate/fedgate", "the org.opencontainers.image.source label")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o := options{out: *out, version: *ver, revision: *rev, source: *source, names: fs.Args()}
	if len(o.names) == 0 {
		o.names = []string{"hub", "spoke", "hubctl"}
	}
	if o.version == "" {
		o.version = git("dev", "describe", "--tags", "--always", "--dirty")
	}
	if o.revision == "" {
		o.revision = git("", "rev-parse", "HEAD")
	}
	var err error
	if o.created, err = created(); err != nil {
		return err
	}
	for _, p := range strings.Split(*platforms, ",") {
		pl, err := v1.ParsePlatform(strings.TrimSpace(p))
		if err != nil || pl.OS == "" || pl.Architecture == "" {
			return fmt.Errorf("-platforms %q: want OS/ARCH[/VARIANT]", p)
		}
		o.platforms = append(o.platforms, *pl)
	}
	written, err := build(context.Background(), o)
	for _, w := range written {
		fmt.Println(w)
	}
	return err
}

// git runs git and returns its trimmed output, or def when it fails (no git, not a checkout).
func git(def string, args ...string) string {
	b, err := exec.Command("git", args...).Output()
	if s := strings.TrimSpace(string(b)); err == nil && s != "" {
		return s
	}
	return def
}

// created is the images' creation time, fixed so that a rebuild of the same commit gives the same images:
// SOURCE_DATE_EPOCH when set, else the commit's time, else the Unix epoch.
func created() (time.Time, error) {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
		}
		return time.Unix(sec, 0).UTC(), nil
	}
	if sec, err := strconv.ParseInt(git("", "log", "-1", "--format=%ct"), 10, 64); err == nil {
		return time.Unix(sec, 0).UTC(), nil
	}
	return time.Unix(0, 0).UTC(), nil
}

// tags are the references every image of name is written under: the version's tag, and DevTag.
func tags(imageName, ver string) ([]name.Tag, error) {
	var out []name.Tag
	for _, tg := range []string{version.Tag(ver), version.DevTag} {
		if len(out) > 0 && tg == out[0].TagStr() {
			continue
		}
		t, err := name.NewTag(version.Image(imageName, tg))
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// build compiles every binary for every platform, assembles the images and writes them; it returns the paths written.
func build(ctx context.Context, o options) ([]string, error) {
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "fedgate-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	images := map[string][]v1.Image{} // name → one image per platform, in o.platforms order
	for _, p := range o.platforms {
		dir := filepath.Join(work, p.OS+"_"+p.Architecture+p.Variant)
		if err := compile(ctx, o, p, dir); err != nil {
			return nil, err
		}
		for _, n := range o.names {
			img, err := image(o, p, n, filepath.Join(dir, n))
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", n, p, err)
			}
			images[n] = append(images[n], img)
		}
	}

	var written []string
	for _, n := range o.names {
		refs, err := tags(n, o.version)
		if err != nil {
			return written, err
		}
		byRef := map[name.Reference]v1.Image{}
		for _, r := range refs {
			byRef[r] = images[n][0]
		}
		path := filepath.Join(o.out, n+".tar")
		if err := tarball.MultiRefWriteToFile(path, byRef); err != nil {
			return written, fmt.Errorf("writing %s: %w", path, err)
		}
		written = append(written, path)
		if len(o.platforms) > 1 {
			path := filepath.Join(o.out, n+".oci")
			if err := writeLayout(path, refs[0], o.platforms, images[n]); err != nil {
				return written, fmt.Errorf("writing %s: %w", path, err)
			}
			written = append(written, path)
		}
	}
	return written, nil
}

// compile builds every binary of o for platform p into dir, statically and stamped with o's version.
func compile(ctx context.Context, o options, p v1.Platform, dir string) error {
	ldflags := fmt.Sprintf("-s -w -X %[1]s/internal/version.version=%[2]s -X %[1]s/internal/version.revision=%[3]s",
		modulePath, o.version, o.revision)
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", dir + string(filepath.Separator)}
	for _, n := range o.names {
		args = append(args, modulePath+"/cmd/"+n)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	if p.Architecture == "arm" && strings.HasPrefix(p.Variant, "v") {
		cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build for %s: %w", p, err)
	}
	return nil
}

// image is binary as /NAME on an empty base, with /tmp, run as User.
func image(o options, p v1.Platform, imageName, binary string) (v1.Image, error) {
	layerPath := binary + ".layer.tar"
	if err := writeLayerTar(layerPath, imageName, binary, o.created); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromFile(layerPath, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, err
	}
	cfg := &v1.ConfigFile{
		Architecture: p.Architecture, Variant: p.Variant, OS: p.OS,
		Created: v1.Time{Time: o.created},
		Config: v1.Config{
			Entrypoint: []string{"/" + imageName},
			User:       User,
			WorkingDir: "/",
			Labels: map[string]string{
				"org.opencontainers.image.title":    "fedgate " + imageName,
				"org.opencontainers.image.version":  o.version,
				"org.opencontainers.image.revision": o.revision,
				"org.opencontainers.image.source":   o.source,
			},
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, err
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: o.created}, CreatedBy: "hack/images: /" + imageName, Comment: "static go build, " + o.version,
	}})
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	return mutate.ConfigMediaType(img, types.OCIConfigJSON), nil
}

// writeLayerTar writes the layer's filesystem: /tmp (world-writable, sticky) and the binary as /NAME, root-owned,
// with modification times fixed at modTime.
func writeLayerTar(path, imageName, binary string, modTime time.Time) (err error) {
	bin, err := os.Open(binary)
	if err != nil {
		return err
	}
	defer bin.Close()
	st, err := bin.Stat()
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	tw := tar.NewWriter(f)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777, ModTime: modTime, Format: tar.FormatPAX}); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: imageName, Mode: 0o755, Size: st.Size(), ModTime: modTime, Format: tar.FormatPAX}); err != nil {
		return err
	}
	if _, err := io.Copy(tw, bin); err != nil {
		return err
	}
	return tw.Close()
}

// writeLayout writes an OCI image layout at path holding one index of imgs (one per platform), named ref.
func writeLayout(path string, ref name.Tag, platforms []v1.Platform, imgs []v1.Image) error {
	if err := os.RemoveAll(path); err != nil {
		return err
	}
	var adds []mutate.IndexAddendum
	for i, img := range imgs {
		p := platforms[i]
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	lp, err := layout.Write(path, empty.Index)
	if err != nil {
		return err
	}
	return lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref.TagStr(),
		"io.containerd.image.name":          ref.Name(),
	}))
}
