// Package version says which build a binary is: the version and revision that the Makefile and hack/images stamp
// into hub, spoke and hubctl with
//
//	-ldflags "-X github.com/fedgate/fedgate/internal/version.version=$(git describe --tags --always --dirty)
//	          -X github.com/fedgate/fedgate/internal/version.revision=$(git rev-parse HEAD)"
//
// and, for a plain `go build`, "dev" with the VCS revision Go recorded, when it recorded one. It also names the
// container images of a build (fedgate/NAME:TAG), so that hubctl, the deploy bases and hack/images agree on them.
//
// It imports nothing of fedgate, so every binary and package may use it.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set by the linker (-X); empty in a plain go build.
var (
	version  string
	revision string
)

// DevTag is the image tag of "the images built from this checkout": `make images` gives it to every image it builds,
// besides the version's own tag, and the deploy bases reference it. A release overrides it in an overlay
// (`kustomize edit set image fedgate/hub=REGISTRY/fedgate/hub:VERSION`).
const DevTag = "dev"

// Repository is the image repository prefix of fedgate's images: Repository/hub, Repository/spoke, Repository/hubctl.
const Repository = "fedgate"

// Version is the stamped version; unstamped, "dev", followed by "-" and the first 12 digits of the VCS revision
// (and "-dirty" when the tree had changes) if Go recorded them.
func Version() string {
	if version != "" {
		return version
	}
	return unstamped(vcs())
}

func unstamped(rev string, modified bool) string {
	if rev == "" {
		return "dev"
	}
	v := "dev-" + short(rev)
	if modified {
		v += "-dirty"
	}
	return v
}

// Revision is the stamped commit, else the one Go recorded, else "".
func Revision() string {
	if revision != "" {
		return revision
	}
	rev, _ := vcs()
	return rev
}

// String is what `--version` prints: "PROGRAM VERSION (revision REV, GOVERSION OS/ARCH)".
func String(program string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s (", program, Version())
	if rev := Revision(); rev != "" {
		fmt.Fprintf(&b, "revision %s, ", rev)
	}
	fmt.Fprintf(&b, "%s %s/%s)", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return b.String()
}

// ImageTag is the tag of this build's own images: the stamped version as a tag, or DevTag for an unstamped build (no
// image is tagged with an unstamped version).
func ImageTag() string {
	if version == "" {
		return DevTag
	}
	return Tag(version)
}

// Image is the reference of image name (hub, spoke, hubctl) at tag.
func Image(name, tag string) string {
	return Repository + "/" + name + ":" + tag
}

// Tag turns a version into a valid image tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}): any other character becomes "-"
// (a semver build suffix "+meta" becomes "-meta"). An empty version is DevTag.
func Tag(v string) string {
	if v == "" {
		return DevTag
	}
	b := []byte(v)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || (i > 0 && (c == '.' || c == '-'))
		if !ok {
			b[i] = '-'
			if i == 0 {
				b[i] = '_'
			}
		}
	}
	if len(b) > 128 {
		b = b[:128]
	}
	return string(b)
}

// vcs reads the revision and modified flag `go build` records in a module's main package (not with -buildvcs=false,
// nor in tests).
func vcs() (rev string, modified bool) {
	info, _ := debug.ReadBuildInfo()
	return vcsOf(info)
}

func vcsOf(info *debug.BuildInfo) (rev string, modified bool) {
	if info == nil {
		return "", false
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	return rev, modified
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}
