package version

import (
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
)

// stamp sets what -ldflags -X would for the rest of the test.
func stamp(t *testing.T, v, rev string) {
	old, oldRev := version, revision
	version, revision = v, rev
	t.Cleanup(func() { version, revision = old, oldRev })
}

func TestStamped(t *testing.T) {
	stamp(t, "v1.2.0-3-gabcdef0-dirty", "abcdef0123456789abcdef0123456789abcdef01")
	if Version() != "v1.2.0-3-gabcdef0-dirty" || Revision() != "abcdef0123456789abcdef0123456789abcdef01" {
		t.Fatalf("Version %q, Revision %q", Version(), Revision())
	}
	s := String("hub")
	if !strings.HasPrefix(s, "hub v1.2.0-3-gabcdef0-dirty (revision abcdef0123456789abcdef0123456789abcdef01, go") {
		t.Fatalf("String = %q", s)
	}
	if ImageTag() != "v1.2.0-3-gabcdef0-dirty" || Image("spoke", ImageTag()) != "fedgate/spoke:v1.2.0-3-gabcdef0-dirty" {
		t.Fatalf("ImageTag %q", ImageTag())
	}
}

func TestUnstamped(t *testing.T) {
	stamp(t, "", "")
	// A test binary carries no VCS settings: plain "dev", and images tagged DevTag.
	if Version() != "dev" || ImageTag() != DevTag || !strings.HasPrefix(String("spoke"), "spoke dev (go") {
		t.Fatalf("Version %q, ImageTag %q, String %q", Version(), ImageTag(), String("spoke"))
	}
	info := &debug.BuildInfo{Settings: []debug.BuildSetting{
		{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"}, {Key: "vcs.modified", Value: "true"},
	}}
	if got := unstamped(vcsOf(info)); got != "dev-0123456789ab-dirty" {
		t.Fatalf("go build with VCS info: %q", got)
	}
	info.Settings[2].Value = "false"
	if got := unstamped(vcsOf(info)); got != "dev-0123456789ab" {
		t.Fatalf("clean tree: %q", got)
	}
	if got := unstamped(vcsOf(nil)); got != "dev" {
		t.Fatalf("no build info: %q", got)
	}
}

func TestTag(t *testing.T) {
	valid := regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	for in, want := range map[string]string{
		"":                       DevTag,
		"v1.2.3":                 "v1.2.3",
		"662599c-dirty":          "662599c-dirty",
		"v1.0.0+build.5":         "v1.0.0-build.5",
		".hidden":                "_hidden",
		"a/b c":                  "a-b-c",
		strings.Repeat("x", 200): strings.Repeat("x", 128),
	} {
		got := Tag(in)
		if got != want || !valid.MatchString(got) {
			t.Errorf("Tag(%q) = %q, want %q (valid: %v)", in, got, want, valid.MatchString(got))
		}
	}
}
