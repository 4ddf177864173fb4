package deploy

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/fedgate/fedgate/deploy"
)

// asTyped converts a rendered object to its API type.
func asTyped(t *testing.T, o *unstructured.Unstructured, into any) {
	t.Helper()
	b, err := yaml.Marshal(o.Object)
	if err == nil {
		err = yaml.Unmarshal(b, into)
	}
	if err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
}

// etcdStatefulSet is the StatefulSet of deploy/hub-etcd.
func etcdStatefulSet(t *testing.T) *appsv1.StatefulSet {
	t.Helper()
	for _, o := range render(t, "hub-etcd") {
		if o.GetKind() == "StatefulSet" {
			var sts appsv1.StatefulSet
			asTyped(t, o, &sts)
			return &sts
		}
	}
	t.Fatal("deploy/hub-etcd renders no StatefulSet")
	return nil
}

// flagValues maps each --flag of args to its value ("" for a flag without one).
func flagValues(args []string) map[string]string {
	out := map[string]string{}
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		out[name] = value
	}
	return out
}

// secretFile reports which Secret (and key in it) serves the file at p in c, by the volume mounted at p's directory.
func secretFile(spec corev1.PodSpec, c corev1.Container, p string) (secret, key string) {
	for _, m := range c.VolumeMounts {
		if m.MountPath != path.Dir(p) {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				return v.Secret.SecretName, path.Base(p)
			}
		}
	}
	return "", ""
}

// deploy/hub-etcd serves clients and peers over TLS only and requires a client certificate of the CA in the Secret
// fedgate-etcd-tls, whose files it mounts.
func TestHubEtcdServesTLSToCertifiedClientsOnly(t *testing.T) {
	sts := etcdStatefulSet(t)
	spec := sts.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	args := append(append([]string(nil), c.Command...), c.Args...)
	flags := flagValues(args)
	for _, a := range args {
		if strings.Contains(a, "http://") {
			t.Errorf("etcd serves plaintext: %s", a)
		}
	}
	urls := 0
	for _, name := range []string{"listen-client-urls", "advertise-client-urls", "listen-peer-urls", "initial-advertise-peer-urls", "initial-cluster"} {
		for _, u := range strings.Split(flags[name], ",") {
			if name == "initial-cluster" {
				_, u, _ = strings.Cut(u, "=")
			}
			if !strings.HasPrefix(u, "https://") {
				t.Errorf("--%s: %q is not an https URL", name, u)
			}
			urls++
		}
	}
	if want := 4 + int(*sts.Spec.Replicas); urls != want { // four flags of one URL, one per member in initial-cluster
		t.Errorf("%d URLs among etcd's flags, want %d", urls, want)
	}
	for _, name := range []string{"client-cert-auth", "peer-client-cert-auth"} {
		if v, ok := flags[name]; !ok || (v != "" && v != "true") {
			t.Errorf("--%s is not on", name)
		}
	}
	for name, key := range map[string]string{
		"cert-file": "tls.crt", "key-file": "tls.key", "trusted-ca-file": "ca.crt",
		"peer-cert-file": "tls.crt", "peer-key-file": "tls.key", "peer-trusted-ca-file": "ca.crt",
	} {
		secret, k := secretFile(spec, c, flags[name])
		if secret != "fedgate-etcd-tls" || k != key {
			t.Errorf("--%s=%s: served by Secret %q key %q, want fedgate-etcd-tls key %s", name, flags[name], secret, k, key)
		}
	}
}

// hubHelp is the hub binary's -h output.
func hubHelp(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin+"/", "github.com/fedgate/fedgate/cmd/hub")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	var help bytes.Buffer
	h := exec.Command(filepath.Join(bin, "hub"), "-h")
	h.Stdout, h.Stderr = &help, &help
	_ = h.Run()
	return help.String()
}

// commentedYAML turns the commented-out YAML lines of a manifest ("# - ..." and their "#   ..." continuations) back
// into YAML, leaving prose comments alone.
var commentedYAML = regexp.MustCompile(`(?m)^(\s*)# ((?:- |  ).*)$`)

// deploy/hub's commented external-etcd lines, once uncommented, give a Deployment that reaches every member of
// deploy/hub-etcd over https with --etcd-ca/--etcd-cert/--etcd-key and --key-encryption-key-file, each file mounted
// from its Secret, with flags the hub defines.
func TestHubDeploymentShowsTheExternalEtcd(t *testing.T) {
	b, err := fs.ReadFile(deploy.FS, "hub/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := yaml.Unmarshal(commentedYAML.ReplaceAll(b, []byte("$1$2")), &d); err != nil {
		t.Fatalf("deploy/hub/deployment.yaml uncommented: %v", err)
	}
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	flags := flagValues(c.Args)

	sts := etcdStatefulSet(t)
	var want []string
	for i := range int(*sts.Spec.Replicas) {
		want = append(want, fmt.Sprintf("https://%s-%d.%s:2379", sts.Name, i, sts.Spec.ServiceName))
	}
	if got := flags["etcd-endpoints"]; got != strings.Join(want, ",") {
		t.Errorf("--etcd-endpoints=%s, want deploy/hub-etcd's members %s", got, strings.Join(want, ","))
	}
	for name, want := range map[string][2]string{
		"etcd-ca":                 {"fedgate-hub-etcd-client", "ca.crt"},
		"etcd-cert":               {"fedgate-hub-etcd-client", "tls.crt"},
		"etcd-key":                {"fedgate-hub-etcd-client", "tls.key"},
		"key-encryption-key-file": {"fedgate-hub-key-encryption-key", "key-encryption-key"},
	} {
		v, ok := flags[name]
		if !ok {
			t.Errorf("no --%s among the external-etcd lines", name)
			continue
		}
		if secret, key := secretFile(spec, c, v); secret != want[0] || key != want[1] {
			t.Errorf("--%s=%s: served by Secret %q key %q, want %s key %s", name, v, secret, key, want[0], want[1])
		}
	}
	help := hubHelp(t)
	for name := range flags {
		if !strings.Contains(help, "-"+name+" ") && !strings.Contains(help, "-"+name+"\n") {
			t.Errorf("deploy/hub passes --%s (commented or not), which the hub does not define", name)
		}
	}
}
